//! Fuzz target: bytes as a Watch request (create: key range, filters, fragmenting).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn_store::fuzzing::watch(data);
});
