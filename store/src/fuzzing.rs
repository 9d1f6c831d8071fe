//! Entry points for fuzzing request handling, shared by the cargo-fuzz targets (`store/fuzz/`)
//! and the seeded smoke test that runs in CI (`store/tests/fuzz_smoke.rs`): raw bytes are
//! decoded as the wire request, validated as the API layer does, then executed against a real
//! MVCC store in a scratch directory, checking invariants a valid response must hold. A panic
//! (or an invariant failure, which panics) is a finding.

use std::path::PathBuf;
use std::sync::Arc;

use prost::Message;

use crate::api::validate;
use crate::mvcc::{LeaseIndex, Mvcc, Result as MvccResult};
use crate::proto::etcdserverpb::{
    watch_request::RequestUnion, DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest,
    WatchRequest,
};
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};
use crate::storage::SledBackend;
use crate::watch::{fragments, WatchSpec};

/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

/// Lease 7 exists, no other does (so lease checks run both ways).
struct Leases;

impl LeaseIndex for Leases {
    fn lease_exists(&self, id: i64) -> MvccResult<bool> {
        Ok(id == 7)
    }
}

/// A scratch MVCC store, removed on drop.
pub struct Store {
    dir: PathBuf,
    mvcc: Mvcc,
}

impl Store {
    /// A fresh store under the system's temp directory.
    pub fn open() -> std::io::Result<Store> {
        let dir = std::env::temp_dir().join(format!(
            "cairn-fuzz-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let backend = SledBackend::open(&dir).map_err(std::io::Error::other)?;
        let mvcc = Mvcc::new(Arc::new(backend), 1, 0).map_err(std::io::Error::other)?;
        Ok(Store { dir, mvcc })
    }

    /// Range: decode, validate, read at the requested revision.
    pub fn range(&self, data: &[u8]) {
        let Ok(req) = RangeRequest::decode(data) else {
            return;
        };
        self.range_request(&req);
    }

    fn range_request(&self, req: &RangeRequest) {
        if validate::range(req).is_err() {
            return;
        }
        let Ok(rev) = self.mvcc.check_read_revision(req.revision) else {
            return;
        };
        let Ok(res) = self.mvcc.range(req, rev) else {
            return;
        };
        if req.limit > 0 {
            assert!(res.kvs.len() as i64 <= req.limit, "more kvs than the limit");
        }
        if !req.count_only {
            assert!(
                res.count >= res.kvs.len() as i64,
                "count below the kvs returned"
            );
        }
        for kv in &res.kvs {
            assert!(
                kv.mod_revision <= rev,
                "a version newer than the read revision"
            );
            assert!(
                kv.create_revision <= kv.mod_revision,
                "created after modified"
            );
        }
    }

    /// Txn: decode, validate, apply; a failed txn must leave the revision alone, a successful
    /// one moves it by at most one.
    pub fn txn(&self, data: &[u8]) {
        let Ok(req) = TxnRequest::decode(data) else {
            return;
        };
        self.txn_request(&req);
    }

    fn txn_request(&self, req: &TxnRequest) {
        if validate::txn(req, MAX_TXN_OPS).is_err() {
            return;
        }
        let before = self.mvcc.current_revision();
        match self.mvcc.apply_txn(req, &Leases) {
            Ok(out) => {
                assert!(out.revision == before || out.revision == before + 1);
                assert_eq!(out.revision, self.mvcc.current_revision());
            }
            Err(_) => assert_eq!(before, self.mvcc.current_revision(), "a failed txn wrote"),
        }
    }

    /// A sequence of operations on one store: each chunk is `[kind][len][len bytes]`.
    pub fn ops(&self, mut data: &[u8]) {
        while let [kind, len, rest @ ..] = data {
            let n = (*len as usize).min(rest.len());
            let (body, tail) = rest.split_at(n);
            data = tail;
            match kind % 5 {
                0 => self.range(body),
                1 => self.txn(body),
                2 => {
                    if let Ok(p) = PutRequest::decode(body) {
                        if validate::put(&p).is_ok() {
                            let _ = self.mvcc.apply_put(&p, &Leases);
                        }
                    }
                }
                3 => {
                    if let Ok(d) = DeleteRangeRequest::decode(body) {
                        if validate::delete(&d).is_ok() {
                            let _ = self.mvcc.apply_delete(&d, &Leases);
                        }
                    }
                }
                _ => {
                    let rev = i64::from(body.first().copied().unwrap_or(0));
                    let _ = self.mvcc.compact(rev.min(self.mvcc.current_revision()));
                }
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Watch: decode a request; for a create, select from synthetic events and fragment them.
pub fn watch(data: &[u8]) {
    let Ok(req) = WatchRequest::decode(data) else {
        return;
    };
    let Some(RequestUnion::CreateRequest(create)) = req.request_union else {
        return;
    };
    let spec = WatchSpec::from_request(&create);
    let events: Vec<Event> = [b"a".as_slice(), b"foo", b"foo/bar", b"\xff", b""]
        .iter()
        .enumerate()
        .map(|(i, k)| Event {
            r#type: if i % 2 == 0 {
                EventType::Put as i32
            } else {
                EventType::Delete as i32
            },
            kv: Some(KeyValue {
                key: k.to_vec(),
                value: create.key.clone(),
                mod_revision: i as i64 + 2,
                ..Default::default()
            }),
            prev_kv: None,
        })
        .collect();
    let selected = spec.select(&events);
    assert!(selected.len() <= events.len());
    let total = selected.len();
    let limit = (create.key.len() % 64) + 1;
    let parts = fragments(selected, limit);
    assert_eq!(
        parts.iter().map(Vec::len).sum::<usize>(),
        total,
        "fragments lost events"
    );
}
