//! MVCC unit tests on a real sled backend: history, tombstones, compaction, the reseek path,
//! awkward key bytes, limits and sorting. Most checks compare against a tiny in-memory model that
//! keeps every revision's full state.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::{KeyRange, LeaseIndex, Mvcc, MvccError, Result};
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::proto::mvccpb::KeyValue;
use crate::storage::{space, Backend, SledBackend};

/// Lease 7 exists; no other does.
struct Leases;
impl LeaseIndex for Leases {
    fn lease_exists(&self, id: i64) -> Result<bool> {
        Ok(id == 7)
    }
}

struct Store {
    _dir: tempfile::TempDir,
    backend: Arc<SledBackend>,
    mvcc: Mvcc,
}

fn open() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(SledBackend::open(dir.path()).unwrap());
    let mvcc = Mvcc::new(backend.clone(), 1, 0).unwrap();
    Store {
        _dir: dir,
        backend,
        mvcc,
    }
}

impl Store {
    fn put(&self, key: &[u8], value: &[u8]) -> i64 {
        self.put_req(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        })
        .unwrap()
    }

    fn put_req(&self, req: PutRequest) -> Result<i64> {
        Ok(self.mvcc.apply_put(&req, &Leases)?.revision)
    }

    /// Returns (revision after, deleted count).
    fn del(&self, key: &[u8], end: &[u8]) -> (i64, i64) {
        let out = self
            .mvcc
            .apply_delete(
                &DeleteRangeRequest {
                    key: key.to_vec(),
                    range_end: end.to_vec(),
                    ..Default::default()
                },
                &Leases,
            )
            .unwrap();
        (out.revision, out.response.deleted)
    }

    fn range(&self, req: RangeRequest) -> super::RangeResult {
        let rev = self.mvcc.check_read_revision(req.revision).unwrap();
        self.mvcc.range(&req, rev).unwrap()
    }

    /// Number of stored versions (tombstones included) of `key`.
    fn stored_versions(&self, key: &[u8]) -> usize {
        let from = super::keys::seek(key);
        let to = super::keys::after(key);
        self.backend
            .scan(Bound::Included(&from), Bound::Excluded(&to), false)
            .filter(|r| {
                let (k, _) = r.as_ref().unwrap();
                super::keys::decode_version(k).is_some_and(|(uk, _)| uk == key)
            })
            .count()
    }

    fn revision_index_len(&self) -> usize {
        crate::storage::scan_prefix(self.backend.as_ref(), &[space::REVISIONS]).count()
    }
}

fn req(key: &[u8], end: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        range_end: end.to_vec(),
        ..Default::default()
    }
}

fn keys_of(kvs: &[KeyValue]) -> Vec<Vec<u8>> {
    kvs.iter().map(|kv| kv.key.clone()).collect()
}

fn put_op(key: &[u8], value: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        })),
    }
}

fn del_op(key: &[u8], end: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            ..Default::default()
        })),
    }
}

fn range_op(key: &[u8], end: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(req(key, end))),
    }
}

/// Every revision's complete state, as etcd defines it.
#[derive(Default)]
struct Model {
    /// states[r] is the state at revision r (index 0 unused, 1 is the empty store).
    states: Vec<BTreeMap<Vec<u8>, KeyValue>>,
}

impl Model {
    fn new() -> Self {
        Self {
            states: vec![BTreeMap::new(), BTreeMap::new()],
        }
    }
    fn current(&self) -> i64 {
        self.states.len() as i64 - 1
    }
    fn put(&mut self, key: &[u8], value: &[u8]) {
        let rev = self.current() + 1;
        let mut s = self.states.last().unwrap().clone();
        let kv = match s.get(key) {
            Some(p) => KeyValue {
                key: key.to_vec(),
                create_revision: p.create_revision,
                mod_revision: rev,
                version: p.version + 1,
                value: value.to_vec(),
                lease: 0,
            },
            None => KeyValue {
                key: key.to_vec(),
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                value: value.to_vec(),
                lease: 0,
            },
        };
        s.insert(key.to_vec(), kv);
        self.states.push(s);
    }
    /// Deletes `[key, end)` (or the one key); takes a revision only if something was deleted.
    fn del(&mut self, range: &KeyRange) -> i64 {
        let mut s = self.states.last().unwrap().clone();
        let before = s.len();
        s.retain(|k, _| !range.contains(k));
        let n = (before - s.len()) as i64;
        if n > 0 {
            self.states.push(s);
        }
        n
    }
    fn at(&self, rev: i64) -> &BTreeMap<Vec<u8>, KeyValue> {
        &self.states[rev as usize]
    }
}

/// A small deterministic PRNG (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Keys that stress the encoding: 0x00 and 0xff bytes, prefixes of each other.
fn awkward_keys() -> Vec<Vec<u8>> {
    [
        &b"\x00"[..],
        b"\x00\x00",
        b"\x00\xff",
        b"a",
        b"a\x00",
        b"a\x00\x00",
        b"a\x00b",
        b"a\x01",
        b"a\xff",
        b"a\xff\xff",
        b"ab",
        b"b",
        b"\xff",
        b"\xff\x00",
        b"\xff\xff",
    ]
    .iter()
    .map(|k| k.to_vec())
    .collect()
}

fn check_against_model(s: &Store, m: &Model, from_rev: i64, ranges: &[KeyRange]) {
    assert_eq!(s.mvcc.current_revision(), m.current());
    for rev in from_rev..=m.current() {
        let state = m.at(rev);
        let all = s.mvcc.scan(&KeyRange::new(b"\0", b"\0"), rev).unwrap();
        let want: Vec<KeyValue> = state.values().cloned().collect();
        assert_eq!(all, want, "full scan at revision {rev}");
        for key in awkward_keys() {
            assert_eq!(
                s.mvcc.get(&key, rev).unwrap().as_ref(),
                state.get(&key),
                "get {key:?} at revision {rev}"
            );
        }
        for r in ranges {
            let got = s.mvcc.scan(r, rev).unwrap();
            let want: Vec<KeyValue> = state
                .values()
                .filter(|kv| r.contains(&kv.key))
                .cloned()
                .collect();
            assert_eq!(got, want, "range {r:?} at revision {rev}");
        }
    }
}

fn test_ranges() -> Vec<KeyRange> {
    vec![
        KeyRange::new(b"a", b"a\x01"),
        KeyRange::new(b"a\x00", b"a\x00\x01"),
        KeyRange::new(b"a", b"b"),
        KeyRange::new(b"a\xff", b"\0"),
        KeyRange::new(b"\xff", b"\0"),
        KeyRange::new(b"\x00", b"\x01"),
        KeyRange::new(b"b", b"a"),
        KeyRange::new(b"a\x00", b""),
    ]
}

#[test]
fn history_reads_at_past_revisions() {
    let s = open();
    assert_eq!(
        s.mvcc.current_revision(),
        1,
        "a fresh store is at revision 1"
    );
    assert_eq!(s.put(b"a", b"v1"), 2);
    assert_eq!(s.put(b"a", b"v2"), 3);
    assert_eq!(s.put(b"b", b"x"), 4);
    assert_eq!(s.del(b"a", b""), (5, 1));
    assert_eq!(s.put(b"a", b"v3"), 6);

    let get = |rev| s.mvcc.get(b"a", rev).unwrap();
    assert_eq!(get(1), None);
    let v = get(2).unwrap();
    assert_eq!(
        (
            v.value.as_slice(),
            v.create_revision,
            v.mod_revision,
            v.version
        ),
        (&b"v1"[..], 2, 2, 1)
    );
    let v = get(4).unwrap();
    assert_eq!(
        (
            v.value.as_slice(),
            v.create_revision,
            v.mod_revision,
            v.version
        ),
        (&b"v2"[..], 2, 3, 2)
    );
    assert_eq!(get(5), None, "the tombstone hides the key at 5");
    let v = get(6).unwrap();
    assert_eq!(
        (
            v.value.as_slice(),
            v.create_revision,
            v.mod_revision,
            v.version
        ),
        (&b"v3"[..], 6, 6, 1),
        "a re-created key starts a new life"
    );

    // Ranges at past revisions count only live keys.
    let at = |rev: i64| {
        let mut r = req(b"\0", b"\0");
        r.revision = rev;
        s.range(r)
    };
    assert_eq!(
        (at(4).count, keys_of(&at(4).kvs)),
        (2, vec![b"a".to_vec(), b"b".to_vec()])
    );
    assert_eq!((at(5).count, keys_of(&at(5).kvs)), (1, vec![b"b".to_vec()]));
    assert_eq!(at(0).count, 2);

    assert_eq!(
        s.mvcc.check_read_revision(7),
        Err(MvccError::FutureRevision)
    );
    assert_eq!(s.mvcc.check_read_revision(0), Ok(6));
    assert_eq!(s.mvcc.check_read_revision(-3), Ok(6));
}

#[test]
fn revisions_only_move_on_change() {
    let s = open();
    assert_eq!(s.put(b"a", b"1"), 2);
    assert_eq!(s.del(b"missing", b""), (2, 0));
    assert_eq!(s.del(b"x", b"\0"), (2, 0));
    assert_eq!(
        s.del(b"b", b"a"),
        (2, 0),
        "an inverted range deletes nothing"
    );

    // A read-only Txn and a Txn whose branch changes nothing keep the revision.
    let t = TxnRequest {
        success: vec![range_op(b"a", b"")],
        ..Default::default()
    };
    assert_eq!(s.mvcc.apply_txn(&t, &Leases).unwrap().revision, 2);
    let t = TxnRequest {
        success: vec![del_op(b"zzz", b"")],
        ..Default::default()
    };
    let out = s.mvcc.apply_txn(&t, &Leases).unwrap();
    assert_eq!((out.revision, out.changes.len()), (2, 0));

    // All writes of one Txn share one revision, in op order, with consecutive changes.
    let t = TxnRequest {
        success: vec![
            put_op(b"x", b"1"),
            put_op(b"y", b"1"),
            del_op(b"a", b""),
            range_op(b"\0", b"\0"),
        ],
        ..Default::default()
    };
    let out = s.mvcc.apply_txn(&t, &Leases).unwrap();
    assert_eq!(out.revision, 3);
    assert_eq!(out.changes.len(), 3);
    assert!(out
        .changes
        .iter()
        .all(|e| e.kv.as_ref().unwrap().mod_revision == 3));
    // The Range inside the Txn saw the Txn's own writes.
    match &out.response.responses[3].response {
        Some(crate::proto::etcdserverpb::response_op::Response::ResponseRange(r)) => {
            assert_eq!(keys_of(&r.kvs), vec![b"x".to_vec(), b"y".to_vec()]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.mvcc.get(b"a", 2).unwrap().unwrap().value, b"1");
    assert_eq!(s.mvcc.get(b"a", 3).unwrap(), None);
}

#[test]
fn put_checks_fail_without_writing() {
    let s = open();
    let ignore_value = PutRequest {
        key: b"k".to_vec(),
        ignore_value: true,
        lease: 7,
        ..Default::default()
    };
    assert_eq!(s.put_req(ignore_value.clone()), Err(MvccError::KeyNotFound));
    let bad_lease = PutRequest {
        key: b"k".to_vec(),
        lease: 8,
        ..Default::default()
    };
    assert_eq!(s.put_req(bad_lease), Err(MvccError::LeaseNotFound));
    assert_eq!(s.mvcc.current_revision(), 1);
    s.put_req(PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lease: 7,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.put_req(ignore_value).unwrap(), 3);
    let kv = s.mvcc.get(b"k", 3).unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.lease, kv.version),
        (&b"v"[..], 7, 2)
    );
    s.put_req(PutRequest {
        key: b"k".to_vec(),
        value: b"w".to_vec(),
        ignore_lease: true,
        ..Default::default()
    })
    .unwrap();
    let kv = s.mvcc.get(b"k", 4).unwrap().unwrap();
    assert_eq!((kv.value.as_slice(), kv.lease), (&b"w"[..], 7));

    // A Txn that fails a check on its chosen path writes nothing at all.
    let t = TxnRequest {
        success: vec![
            put_op(b"first", b"1"),
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: b"nope".to_vec(),
                    ignore_value: true,
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    assert_eq!(
        s.mvcc.apply_txn(&t, &Leases).err(),
        Some(MvccError::KeyNotFound)
    );
    assert_eq!(s.mvcc.current_revision(), 4);
    assert_eq!(s.mvcc.get(b"first", 5).unwrap(), None);
}

fn cmp(
    key: &[u8],
    end: &[u8],
    target: CompareTarget,
    result: CompareResult,
    u: TargetUnion,
) -> Compare {
    Compare {
        key: key.to_vec(),
        range_end: end.to_vec(),
        target: target as i32,
        result: result as i32,
        target_union: Some(u),
    }
}

fn compare_holds(s: &Store, c: Compare) -> bool {
    let t = TxnRequest {
        compare: vec![c],
        ..Default::default()
    };
    s.mvcc.apply_txn(&t, &Leases).unwrap().response.succeeded
}

#[test]
fn compares_on_missing_keys_and_empty_ranges() {
    use CompareResult::*;
    use CompareTarget::*;
    let s = open();
    s.put(b"r/a", b"1");
    // Missing key: VALUE is false whatever the result; the others compare against 0.
    assert!(!compare_holds(
        &s,
        cmp(b"m", b"", Value, Equal, TargetUnion::Value(vec![]))
    ));
    assert!(!compare_holds(
        &s,
        cmp(
            b"m",
            b"",
            Value,
            NotEqual,
            TargetUnion::Value(b"x".to_vec())
        )
    ));
    assert!(compare_holds(
        &s,
        cmp(b"m", b"", Version, Equal, TargetUnion::Version(0))
    ));
    assert!(compare_holds(
        &s,
        cmp(b"m", b"", Mod, Less, TargetUnion::ModRevision(1))
    ));
    assert!(!compare_holds(
        &s,
        cmp(b"m", b"", Create, Greater, TargetUnion::CreateRevision(0))
    ));
    // A range holding no key behaves the same way (etcd's applyCompare compares an empty
    // KeyValue when the range is empty; it is not vacuously true).
    assert!(compare_holds(
        &s,
        cmp(b"none/", b"none0", Version, Equal, TargetUnion::Version(0))
    ));
    assert!(!compare_holds(
        &s,
        cmp(
            b"none/",
            b"none0",
            Version,
            Greater,
            TargetUnion::Version(0)
        )
    ));
    assert!(!compare_holds(
        &s,
        cmp(
            b"none/",
            b"none0",
            Value,
            Equal,
            TargetUnion::Value(b"x".to_vec())
        )
    ));
    // A range with keys: every key must satisfy it.
    assert!(compare_holds(
        &s,
        cmp(b"r/", b"r0", Version, Greater, TargetUnion::Version(0))
    ));
    assert!(!compare_holds(
        &s,
        cmp(
            b"r/",
            b"r0",
            Value,
            NotEqual,
            TargetUnion::Value(b"1".to_vec())
        )
    ));
}

#[test]
fn compaction_keeps_the_newest_version_at_or_below_it() {
    let s = open();
    assert_eq!(s.put(b"a", b"a1"), 2);
    assert_eq!(s.put(b"a", b"a2"), 3);
    assert_eq!(s.put(b"b", b"b1"), 4);
    assert_eq!(s.put(b"a", b"a3"), 5);
    assert_eq!(s.del(b"b", b""), (6, 1)); // b's tombstone exactly at the compact revision
    assert_eq!(s.put(b"d", b"d1"), 7);
    assert_eq!(s.del(b"d", b""), (8, 1)); // d deleted before the compact revision
    assert_eq!(s.put(b"e", b"e1"), 9);
    assert_eq!(s.put(b"e", b"e2"), 10);
    // Compact at 10 below; then these come after it.
    let c = 10;
    assert_eq!(s.put(b"a", b"a4"), 11);
    assert_eq!(s.put(b"d", b"d2"), 12); // d's new life
    assert_eq!(s.del(b"e", b""), (13, 1));

    let before_state: Vec<_> = (c..=13)
        .map(|r| s.mvcc.scan(&KeyRange::new(b"\0", b"\0"), r).unwrap())
        .collect();

    s.mvcc.compact(c).unwrap();
    assert_eq!(s.mvcc.compact_revision(), c);
    assert_eq!(s.mvcc.check_read_revision(c - 1), Err(MvccError::Compacted));
    assert_eq!(s.mvcc.check_read_revision(1), Err(MvccError::Compacted));
    assert_eq!(s.mvcc.check_read_revision(c), Ok(c));

    // Reads at and after C are exactly what they were.
    for (i, r) in (c..=13).enumerate() {
        assert_eq!(
            s.mvcc.scan(&KeyRange::new(b"\0", b"\0"), r).unwrap(),
            before_state[i],
            "state at revision {r} changed by compaction"
        );
    }
    let a = s.mvcc.get(b"a", c).unwrap().unwrap();
    assert_eq!(
        (
            a.value.as_slice(),
            a.mod_revision,
            a.version,
            a.create_revision
        ),
        (&b"a3"[..], 5, 3, 2)
    );
    assert_eq!(s.mvcc.get(b"b", c).unwrap(), None);
    assert_eq!(
        s.mvcc.get(b"d", c).unwrap(),
        None,
        "a key deleted before C does not come back"
    );
    assert_eq!(s.mvcc.get(b"d", 12).unwrap().unwrap().version, 1);

    // What is stored: a keeps a3 (newest <= C) and a4; b and d's old life are gone entirely;
    // e keeps e2 plus its later tombstone.
    assert_eq!(s.stored_versions(b"a"), 2);
    assert_eq!(s.stored_versions(b"b"), 0);
    assert_eq!(s.stored_versions(b"d"), 1);
    assert_eq!(s.stored_versions(b"e"), 2);

    assert_eq!(s.mvcc.compact(c), Err(MvccError::Compacted));
    assert_eq!(s.mvcc.compact(c - 3), Err(MvccError::Compacted));
    assert_eq!(s.mvcc.compact(14), Err(MvccError::FutureRevision));

    // A second compaction continues from the first.
    s.mvcc.compact(13).unwrap();
    assert_eq!(s.stored_versions(b"a"), 1);
    assert_eq!(s.stored_versions(b"e"), 0, "e's tombstone at 13 = C goes");
    assert_eq!(s.mvcc.get(b"e", 13).unwrap(), None);
    let all = s.mvcc.scan(&KeyRange::new(b"\0", b"\0"), 13).unwrap();
    assert_eq!(keys_of(&all), vec![b"a".to_vec(), b"d".to_vec()]);
    // Writes after compaction keep counting versions from the surviving one.
    assert_eq!(s.put(b"a", b"a5"), 14);
    let a = s.mvcc.get(b"a", 14).unwrap().unwrap();
    assert_eq!((a.version, a.create_revision), (5, 2));
    assert_eq!(
        s.revision_index_len(),
        2,
        "only the entries at 13 and 14 remain in the index"
    );
}

/// Compaction garbage goes in steps whose progress is the revision index itself: a store
/// reopened half way (after a crash, or a snapshot taken mid-way) finishes the job in the
/// background, and neither reads at or after the compact revision nor HashKV ever notice.
#[test]
fn compaction_in_steps_resumes_after_reopen() {
    let s = open();
    // 2,400 revisions over 30 keys, so removing the garbage takes three steps; k7 is deleted
    // below the compact revision, k8 above it.
    for i in 0..2400 {
        s.put(
            format!("k{}", i % 30).as_bytes(),
            format!("v{i}").as_bytes(),
        );
    }
    s.del(b"k7", b"");
    let c = s.mvcc.current_revision();
    s.put(b"k1", b"after");
    s.del(b"k8", b"");
    let current = s.mvcc.current_revision();
    let all = KeyRange::new(b"\0", b"\0");
    let before: Vec<_> = (c..=current)
        .map(|r| s.mvcc.scan(&all, r).unwrap())
        .collect();
    let reads_unchanged = |m: &Mvcc| {
        for (i, r) in (c..=current).enumerate() {
            assert_eq!(m.scan(&all, r).unwrap(), before[i], "revision {r}");
        }
    };

    s.mvcc.schedule_compaction(c).unwrap();
    assert_eq!(s.mvcc.check_read_revision(c - 1), Err(MvccError::Compacted));
    let hash = s.mvcc.hash_kv(0).unwrap();
    assert_eq!(s.stored_versions(b"k0"), 80, "scheduling removes nothing");
    assert!(
        s.mvcc.compact_step().unwrap(),
        "garbage is left after one step"
    );
    reads_unchanged(&s.mvcc);
    assert_eq!(s.mvcc.hash_kv(0).unwrap(), hash, "hash after one step");

    // Reopened over the same data, as after a crash: the compactor finishes on its own.
    let reopened = Arc::new(Mvcc::new(s.backend.clone(), current, c).unwrap());
    reopened.start_compactor().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            reopened.wait_compacted(c),
        )
        .await
    })
    .expect("the compactor finished the interrupted compaction");
    reads_unchanged(&reopened);
    assert_eq!(reopened.hash_kv(0).unwrap(), hash, "hash after all steps");
    assert_eq!(s.stored_versions(b"k0"), 1);
    assert_eq!(
        s.stored_versions(b"k1"),
        2,
        "kept at C, and the put after it"
    );
    assert_eq!(s.stored_versions(b"k7"), 0, "deleted below C: all gone");
    assert_eq!(
        s.stored_versions(b"k8"),
        2,
        "kept at C, and its tombstone after it"
    );
    assert_eq!(s.revision_index_len(), 3, "entries at C and after remain");
}

/// A randomized history over awkward keys checked revision by revision against the model,
/// before and after compactions. One hot key gets many versions, so reads at old revisions step
/// over (and then reseek past) many newer versions, and reads at new revisions skip many older.
#[test]
fn random_history_matches_model_across_compactions() {
    let s = open();
    let mut m = Model::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let keys = awkward_keys();
    let ranges = test_ranges();
    let mut compacted = 0;
    for step in 0..400 {
        let hot = rng.below(3) == 0;
        let key = if hot {
            b"a\x00".to_vec()
        } else {
            keys[rng.below(keys.len())].clone()
        };
        match rng.below(10) {
            0 => {
                let r = &ranges[rng.below(ranges.len())];
                let (k, e) = match r {
                    KeyRange::Single(k) => (k.clone(), vec![]),
                    KeyRange::Span { start, end } => {
                        (start.clone(), end.clone().unwrap_or(vec![0]))
                    }
                };
                let n = m.del(r);
                assert_eq!(s.del(&k, &e), (m.current(), n), "step {step}");
            }
            1 => {
                let n = m.del(&KeyRange::Single(key.clone()));
                assert_eq!(s.del(&key, b""), (m.current(), n), "step {step}");
            }
            _ => {
                let value = format!("v{step}").into_bytes();
                m.put(&key, &value);
                assert_eq!(s.put(&key, &value), m.current(), "step {step}");
            }
        }
        if step % 100 == 99 {
            check_against_model(&s, &m, compacted.max(1), &ranges);
            let c = m.current() - 20;
            s.mvcc.compact(c).unwrap();
            compacted = c;
            check_against_model(&s, &m, compacted, &ranges);
        }
    }
    assert!(
        s.stored_versions(b"a\x00") < 60,
        "compaction dropped the hot key's old versions"
    );
}

#[test]
fn reseek_past_many_versions_of_one_key() {
    let s = open();
    let mut m = Model::new();
    // Neighbours on both sides of the hot key, written first, then 60 versions of it.
    for k in [&b"h"[..], b"ho", b"hot\x00", b"hou"] {
        m.put(k, b"n");
        s.put(k, b"n");
    }
    for i in 0..60 {
        let v = format!("{i}").into_bytes();
        m.put(b"hot", &v);
        s.put(b"hot", &v);
        if i % 20 == 0 {
            m.put(b"hotter", &v);
            s.put(b"hotter", &v);
        }
    }
    for rev in 1..=m.current() {
        let all = s.mvcc.scan(&KeyRange::new(b"h", b"i"), rev).unwrap();
        let want: Vec<_> = m.at(rev).values().cloned().collect();
        assert_eq!(all, want, "revision {rev}");
        // A limited range stops early but still counts everything.
        let mut r = req(b"h", b"i");
        r.revision = rev;
        r.limit = 2;
        let res = s.range(r);
        assert_eq!(res.count as usize, want.len());
        assert_eq!(res.kvs, want[..want.len().min(2)].to_vec());
        assert_eq!(res.more, want.len() > 2);
    }
}

#[test]
fn long_lists_read_right_through_history_between_keys() {
    // Enough keys for one engine scan per read; one key's long history puts more unwanted
    // versions in the scan's way than wanted ones, so later reads switch to point reads.
    let s = open();
    let mut m = Model::new();
    let keys: Vec<Vec<u8>> = (0..30)
        .map(|i| format!("list/{i:02}").into_bytes())
        .collect();
    for k in &keys {
        m.put(k, b"first");
        s.put(k, b"first");
    }
    for i in 0..80 {
        let k = &keys[if i % 4 == 0 { 3 } else { 17 }];
        let v = format!("v{i}").into_bytes();
        m.put(k, &v);
        s.put(k, &v);
    }
    m.del(&KeyRange::Single(keys[20].clone()));
    s.del(&keys[20], b"");
    let range = KeyRange::new(b"list/", b"list0");
    for rev in 1..=m.current() {
        let want: Vec<KeyValue> = m.at(rev).values().cloned().collect();
        assert_eq!(s.mvcc.scan(&range, rev).unwrap(), want, "revision {rev}");
        let mut r = req(b"list/", b"list0");
        r.revision = rev;
        r.limit = 12;
        let page = s.range(r);
        assert_eq!(
            page.kvs,
            want[..want.len().min(12)].to_vec(),
            "page at {rev}"
        );
    }
}

#[test]
fn keys_with_zero_and_ff_bytes() {
    let s = open();
    let mut keys = awkward_keys();
    for (i, k) in keys.iter().enumerate() {
        s.put(k, format!("{i}").as_bytes());
        s.put(k, format!("{i}'").as_bytes());
    }
    keys.sort();
    let all = s.range(req(b"\0", b"\0"));
    assert_eq!(keys_of(&all.kvs), keys, "keys come back in byte order");
    assert_eq!(all.count, keys.len() as i64);
    for k in &keys {
        let got = s.range(req(k, b""));
        assert_eq!(keys_of(&got.kvs), vec![k.clone()], "exact get of {k:?}");
        assert_eq!(got.kvs[0].version, 2);
    }
    let range = |k: &[u8], e: &[u8]| keys_of(&s.range(req(k, e)).kvs);
    let v = |ks: &[&[u8]]| ks.iter().map(|k| k.to_vec()).collect::<Vec<_>>();
    // The prefix "a\0" (range_end "a\x01") holds a\0, a\0\0, a\0b but not a, a\x01.
    assert_eq!(
        range(b"a\x00", b"a\x01"),
        v(&[b"a\x00", b"a\x00\x00", b"a\x00b"])
    );
    assert_eq!(
        range(b"a", b"a\x01"),
        v(&[b"a", b"a\x00", b"a\x00\x00", b"a\x00b"])
    );
    assert_eq!(range(b"a\xff", b"b"), v(&[b"a\xff", b"a\xff\xff"]));
    assert_eq!(
        range(b"\xff", b"\0"),
        v(&[b"\xff", b"\xff\x00", b"\xff\xff"])
    );
    assert_eq!(
        range(b"\x00", b"\x01"),
        v(&[b"\x00", b"\x00\x00", b"\x00\xff"])
    );
    assert_eq!(range(b"\x00\x00", b""), v(&[b"\x00\x00"]));

    // Deleting a\0 leaves its neighbours, including the keys it is a prefix of.
    assert_eq!(s.del(b"a\x00", b"").1, 1);
    assert_eq!(range(b"a", b"a\x01"), v(&[b"a", b"a\x00\x00", b"a\x00b"]));
    // Deleting the prefix \xff.
    assert_eq!(s.del(b"\xff", b"\0").1, 3);
    assert_eq!(range(b"\xff", b"\0"), Vec::<Vec<u8>>::new());
    let now = s.mvcc.current_revision();
    assert_eq!(s.mvcc.get(b"a\xff\xff", now).unwrap().unwrap().value, b"9'");
}

/// s/00..s/19 with distinct versions, create and mod revisions, and values that tie in pairs.
fn sort_fixture() -> Store {
    let s = open();
    for i in 0..20u32 {
        let k = format!("s/{i:02}");
        // versions 1..=3 depending on i; values tie in pairs.
        for _ in 0..(i % 3 + 1) {
            s.put(k.as_bytes(), format!("v{:02}", (19 - i) / 2).as_bytes());
        }
    }
    s.put(b"t", b"outside");
    s
}

#[test]
fn limit_more_and_count_with_filters() {
    let s = sort_fixture();
    let base = || req(b"s/", b"s0");
    let full = s.range(base()).kvs;
    assert_eq!(full.len(), 20);
    let r = s.range(RangeRequest { limit: 5, ..base() });
    assert_eq!((r.kvs.len(), r.more, r.count), (5, true, 20));
    let r = s.range(RangeRequest {
        limit: 20,
        ..base()
    });
    assert_eq!((r.kvs.len(), r.more, r.count), (20, false, 20));
    let r = s.range(RangeRequest {
        count_only: true,
        limit: 3,
        ..base()
    });
    assert_eq!((r.kvs.len(), r.more, r.count), (0, false, 20));
    let r = s.range(RangeRequest {
        keys_only: true,
        limit: 3,
        ..base()
    });
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty() && kv.version > 0));

    // Filters: count ignores them; more reflects the filtered result.
    let min_mod = full[10].mod_revision;
    let want: Vec<_> = full
        .iter()
        .filter(|kv| kv.mod_revision >= min_mod)
        .cloned()
        .collect();
    let r = s.range(RangeRequest {
        min_mod_revision: min_mod,
        ..base()
    });
    assert_eq!((r.kvs.clone(), r.count, r.more), (want.clone(), 20, false));
    let r = s.range(RangeRequest {
        min_mod_revision: min_mod,
        limit: 4,
        ..base()
    });
    assert_eq!((r.kvs, r.count, r.more), (want[..4].to_vec(), 20, true));
    let r = s.range(RangeRequest {
        min_mod_revision: min_mod,
        limit: want.len() as i64,
        ..base()
    });
    assert_eq!((r.kvs.len(), r.more), (want.len(), false));

    let (lo, hi) = (full[3].create_revision, full[8].create_revision);
    let want: Vec<_> = full
        .iter()
        .filter(|kv| {
            kv.create_revision >= lo
                && kv.create_revision <= hi
                && kv.mod_revision <= full[6].mod_revision
        })
        .cloned()
        .collect();
    let r = s.range(RangeRequest {
        min_create_revision: lo,
        max_create_revision: hi,
        max_mod_revision: full[6].mod_revision,
        ..base()
    });
    assert_eq!((keys_of(&r.kvs), r.count), (keys_of(&want), 20));
    assert_eq!(
        keys_of(&r.kvs),
        (3..=6)
            .map(|i| format!("s/{i:02}").into_bytes())
            .collect::<Vec<_>>()
    );
}

#[test]
fn sort_with_limit_keeps_the_best_entries() {
    let s = sort_fixture();
    let targets = [
        SortTarget::Key,
        SortTarget::Version,
        SortTarget::Create,
        SortTarget::Mod,
        SortTarget::Value,
    ];
    let orders = [SortOrder::None, SortOrder::Ascend, SortOrder::Descend];
    let full = s.range(req(b"s/", b"s0")).kvs;
    for target in targets {
        for order in orders {
            let base = RangeRequest {
                sort_target: target as i32,
                sort_order: order as i32,
                ..req(b"s/", b"s0")
            };
            let unlimited = s.range(base.clone());
            assert_eq!(unlimited.kvs.len(), 20);
            // The order is the target's (NONE means ascending for non-KEY targets), ties by key.
            let mut want = full.clone();
            let field = |kv: &KeyValue| -> Vec<u8> {
                match target {
                    SortTarget::Key => kv.key.clone(),
                    SortTarget::Version => kv.version.to_be_bytes().to_vec(),
                    SortTarget::Create => kv.create_revision.to_be_bytes().to_vec(),
                    SortTarget::Mod => kv.mod_revision.to_be_bytes().to_vec(),
                    SortTarget::Value => kv.value.clone(),
                }
            };
            want.sort_by(|a, b| {
                let o = field(a).cmp(&field(b));
                if order == SortOrder::Descend {
                    o.reverse()
                } else {
                    o
                }
            });
            assert_eq!(
                unlimited.kvs.iter().map(field).collect::<Vec<_>>(),
                want.iter().map(field).collect::<Vec<_>>(),
                "{target:?} {order:?}"
            );
            // With a limit: exactly the first entries of the unlimited order -- except that,
            // as in etcd, order NONE with a non-KEY target sorts only the first limit+1 keys.
            for limit in [1usize, 2, 5, 19, 20, 25] {
                let r = s.range(RangeRequest {
                    limit: limit as i64,
                    ..base.clone()
                });
                let n = limit.min(20);
                let want = if order == SortOrder::None && target != SortTarget::Key {
                    let mut first = full[..(limit + 1).min(20)].to_vec();
                    first.sort_by_key(|kv| field(kv));
                    first.truncate(n);
                    first
                } else {
                    unlimited.kvs[..n].to_vec()
                };
                assert_eq!(r.kvs, want, "{target:?} {order:?} limit {limit}");
                assert_eq!(
                    (r.count, r.more),
                    (20, limit < 20),
                    "{target:?} {order:?} limit {limit}"
                );
            }
            // Sort + filter + limit.
            let min_mod = full[5].mod_revision;
            let r = s.range(RangeRequest {
                limit: 3,
                min_mod_revision: min_mod,
                ..base.clone()
            });
            let want: Vec<_> = unlimited
                .kvs
                .iter()
                .filter(|kv| kv.mod_revision >= min_mod)
                .take(3)
                .cloned()
                .collect();
            assert_eq!(
                (r.kvs, r.more, r.count),
                (want, true, 20),
                "{target:?} {order:?} filtered"
            );
        }
    }
}
