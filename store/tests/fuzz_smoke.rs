//! The fuzz entry points (`cairn_store::fuzzing`, also driven by cargo-fuzz in `store/fuzz/`)
//! on seeded random input for a few seconds: raw bytes, and well-formed requests built from a
//! small alphabet so decoding succeeds and validation and MVCC are reached. Runs in every CI
//! build; `./scripts/fuzz` runs the coverage-guided fuzzer where cargo-fuzz works.

use std::time::{Duration, Instant};

use cairn_store::fuzzing::{self, Store};
use cairn_store::proto::etcdserverpb::compare::TargetUnion;
use cairn_store::proto::etcdserverpb::request_op::Request;
use cairn_store::proto::etcdserverpb::watch_request::RequestUnion;
use cairn_store::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest,
};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn key(rng: &mut StdRng) -> Vec<u8> {
    const KEYS: [&[u8]; 7] = [b"", b"\0", b"a", b"b", b"foo", b"foo/", b"\xff\xff"];
    KEYS[rng.gen_range(0..KEYS.len())].to_vec()
}

fn small(rng: &mut StdRng) -> i64 {
    rng.gen_range(-3..12)
}

fn range(rng: &mut StdRng) -> RangeRequest {
    RangeRequest {
        key: key(rng),
        range_end: key(rng),
        limit: small(rng),
        revision: small(rng),
        sort_order: rng.gen_range(-1..4),
        sort_target: rng.gen_range(-1..6),
        serializable: rng.gen(),
        keys_only: rng.gen(),
        count_only: rng.gen(),
        min_mod_revision: small(rng),
        max_mod_revision: small(rng),
        min_create_revision: small(rng),
        max_create_revision: small(rng),
    }
}

fn put(rng: &mut StdRng) -> PutRequest {
    PutRequest {
        key: key(rng),
        value: key(rng),
        lease: [0, 7, 8][rng.gen_range(0..3)],
        prev_kv: rng.gen(),
        ignore_value: rng.gen_bool(0.1),
        ignore_lease: rng.gen_bool(0.1),
    }
}

fn op(rng: &mut StdRng, depth: u32) -> RequestOp {
    let request = match rng.gen_range(0..4) {
        0 => Request::RequestRange(range(rng)),
        1 => Request::RequestPut(put(rng)),
        2 => Request::RequestDeleteRange(DeleteRangeRequest {
            key: key(rng),
            range_end: key(rng),
            prev_kv: rng.gen(),
        }),
        _ if depth < 2 => Request::RequestTxn(txn(rng, depth + 1)),
        _ => Request::RequestPut(put(rng)),
    };
    RequestOp {
        request: Some(request),
    }
}

fn txn(rng: &mut StdRng, depth: u32) -> TxnRequest {
    let compare = (0..rng.gen_range(0..3))
        .map(|_| Compare {
            result: rng.gen_range(-1..5),
            target: rng.gen_range(-1..6),
            key: key(rng),
            range_end: key(rng),
            target_union: Some(match rng.gen_range(0..5) {
                0 => TargetUnion::Version(small(rng)),
                1 => TargetUnion::CreateRevision(small(rng)),
                2 => TargetUnion::ModRevision(small(rng)),
                3 => TargetUnion::Value(key(rng)),
                _ => TargetUnion::Lease(small(rng)),
            }),
        })
        .collect();
    TxnRequest {
        compare,
        success: (0..rng.gen_range(0..4)).map(|_| op(rng, depth)).collect(),
        failure: (0..rng.gen_range(0..4)).map(|_| op(rng, depth)).collect(),
    }
}

fn watch(rng: &mut StdRng) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key(rng),
            range_end: key(rng),
            start_revision: small(rng),
            progress_notify: rng.gen(),
            filters: (0..rng.gen_range(0..3))
                .map(|_| rng.gen_range(-1..3))
                .collect(),
            prev_kv: rng.gen(),
            watch_id: small(rng),
            fragment: rng.gen(),
        })),
    }
}

fn bytes(rng: &mut StdRng) -> Vec<u8> {
    (0..rng.gen_range(0..96)).map(|_| rng.gen()).collect()
}

#[test]
fn fuzz_entry_points_on_seeded_input() {
    let seed: u64 = std::env::var("CAIRN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("fuzz smoke: seed {seed} (CAIRN_FUZZ_SEED repeats it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let store = Store::open().expect("scratch store");
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut cases = 0u64;
    while Instant::now() < deadline {
        for _ in 0..50 {
            match rng.gen_range(0..6) {
                0 => store.range(&range(&mut rng).encode_to_vec()),
                1 => store.txn(&txn(&mut rng, 0).encode_to_vec()),
                2 => fuzzing::watch(&watch(&mut rng).encode_to_vec()),
                3 => {
                    let mut seq = Vec::new();
                    for _ in 0..4 {
                        let (kind, body) = match rng.gen_range(0..3) {
                            0 => (1u8, txn(&mut rng, 0).encode_to_vec()),
                            1 => (2, put(&mut rng).encode_to_vec()),
                            _ => (4, vec![rng.gen()]),
                        };
                        if body.len() < 256 {
                            seq.push(kind);
                            seq.push(body.len() as u8);
                            seq.extend(body);
                        }
                    }
                    store.ops(&seq);
                }
                4 => store.ops(&bytes(&mut rng)),
                _ => {
                    let b = bytes(&mut rng);
                    store.range(&b);
                    store.txn(&b);
                    fuzzing::watch(&b);
                }
            }
            cases += 1;
        }
    }
    eprintln!("fuzz smoke: {cases} cases");
    assert!(cases > 100);
}
