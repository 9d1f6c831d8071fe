//! Fuzz target: bytes as a range request against a scratch MVCC store.
#![no_main]

use std::sync::OnceLock;

use cairn_store::fuzzing::Store;
use libfuzzer_sys::fuzz_target;

static STORE: OnceLock<Store> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let store = STORE.get_or_init(|| Store::open().expect("a scratch store"));
    store.range(data);
});
