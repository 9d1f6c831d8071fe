//! Executing Put, DeleteRange and Txn requests as one revision, with etcd's semantics.
//!
//! As in etcd, a Txn first decides its whole path (every compare, nested ones included) and checks
//! the requests on that path against the state before the Txn; only then does it write. A Txn that
//! fails a check therefore writes nothing.

use super::read::KeyRange;
use super::write::{Change, WriteTxn};
use super::{LeaseIndex, Mvcc, MvccError, Result};
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::response_op::Response;
use crate::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::KeyValue;

/// What applying a write request produced.
#[derive(Debug)]
pub struct TxnOutcome<R> {
    pub response: R,
    /// The store's revision after the request.
    pub revision: i64,
    pub changes: Vec<Change>,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// Whether `kv` (None = absent key) satisfies one compare.
fn compare_one(cmp: &Compare, kv: Option<&KeyValue>) -> bool {
    let target = CompareTarget::try_from(cmp.target).unwrap_or(CompareTarget::Version);
    let result = CompareResult::try_from(cmp.result).unwrap_or(CompareResult::Equal);
    let ord = match (target, &cmp.target_union) {
        (CompareTarget::Value, Some(TargetUnion::Value(want))) => match kv {
            // A value compare against a missing key is always false.
            None => return false,
            Some(kv) => kv.value.as_slice().cmp(want.as_slice()),
        },
        (CompareTarget::Value, _) => return false,
        (t, union) => {
            let have = kv.map_or(0, |kv| match t {
                CompareTarget::Version => kv.version,
                CompareTarget::Create => kv.create_revision,
                CompareTarget::Mod => kv.mod_revision,
                CompareTarget::Lease => kv.lease,
                CompareTarget::Value => 0,
            });
            let want = match union {
                Some(TargetUnion::Version(v))
                | Some(TargetUnion::CreateRevision(v))
                | Some(TargetUnion::ModRevision(v))
                | Some(TargetUnion::Lease(v)) => *v,
                _ => 0,
            };
            have.cmp(&want)
        }
    };
    use std::cmp::Ordering::*;
    match result {
        CompareResult::Equal => ord == Equal,
        CompareResult::Greater => ord == Greater,
        CompareResult::Less => ord == Less,
        CompareResult::NotEqual => ord != Equal,
    }
}

impl Mvcc {
    /// Evaluates a compare at `revision`; a compare with `range_end` must hold for every key in
    /// the range. A range with no keys is treated like a missing key, as etcd's `applyCompare`
    /// does: VALUE is false, the other targets compare against 0.
    fn compare(&self, cmp: &Compare, revision: i64) -> Result<bool> {
        if cmp.range_end.is_empty() {
            let kv = self.get(&cmp.key, revision)?;
            return Ok(compare_one(cmp, kv.as_ref()));
        }
        let kvs = self.scan(&KeyRange::new(&cmp.key, &cmp.range_end), revision)?;
        if kvs.is_empty() {
            return Ok(compare_one(cmp, None));
        }
        Ok(kvs.iter().all(|kv| compare_one(cmp, Some(kv))))
    }

    /// The branch each Txn on the path takes, outermost first, in execution order.
    fn txn_path(&self, txn: &TxnRequest, revision: i64, path: &mut Vec<bool>) -> Result<()> {
        let mut ok = true;
        for cmp in &txn.compare {
            if !self.compare(cmp, revision)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        let ops = if ok { &txn.success } else { &txn.failure };
        for op in ops {
            if let Some(Request::RequestTxn(inner)) = &op.request {
                self.txn_path(inner, revision, path)?;
            }
        }
        Ok(())
    }

    /// Checks the requests on the chosen path against the pre-Txn state (etcd's `checkRequests`).
    fn check_path(
        &self,
        txn: &TxnRequest,
        path: &[bool],
        at: &mut usize,
        revision: i64,
        leases: &dyn LeaseIndex,
    ) -> Result<()> {
        let ok = path[*at];
        *at += 1;
        for op in if ok { &txn.success } else { &txn.failure } {
            match &op.request {
                Some(Request::RequestPut(put)) => self.check_put(put, revision, leases)?,
                Some(Request::RequestRange(r)) => {
                    self.check_read_revision(r.revision)?;
                }
                Some(Request::RequestTxn(inner)) => {
                    self.check_path(inner, path, at, revision, leases)?
                }
                Some(Request::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    fn check_put(&self, put: &PutRequest, revision: i64, leases: &dyn LeaseIndex) -> Result<()> {
        if (put.ignore_value || put.ignore_lease) && self.get(&put.key, revision)?.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        if !put.ignore_lease && put.lease != 0 && !leases.lease_exists(put.lease)? {
            return Err(MvccError::LeaseNotFound);
        }
        Ok(())
    }

    /// Applies a Put as its own revision.
    pub fn apply_put(
        &self,
        put: &PutRequest,
        leases: &dyn LeaseIndex,
    ) -> Result<TxnOutcome<PutResponse>> {
        self.check_put(put, self.current_revision(), leases)?;
        let mut w = WriteTxn::begin(self, leases);
        let response = exec_put(&mut w, put)?;
        let (revision, changes) = w.commit();
        Ok(TxnOutcome {
            response: PutResponse {
                header: header(revision),
                ..response
            },
            revision,
            changes,
        })
    }

    /// Applies a DeleteRange; it takes a revision only if it deleted something.
    pub fn apply_delete(
        &self,
        del: &DeleteRangeRequest,
        leases: &dyn LeaseIndex,
    ) -> Result<TxnOutcome<DeleteRangeResponse>> {
        let mut w = WriteTxn::begin(self, leases);
        let response = exec_delete(&mut w, del)?;
        let (revision, changes) = w.commit();
        Ok(TxnOutcome {
            response: DeleteRangeResponse {
                header: header(revision),
                ..response
            },
            revision,
            changes,
        })
    }

    /// Deletes the keys attached to a revoked lease, all in one revision.
    pub fn apply_revoke(
        &self,
        keys: &[Vec<u8>],
        leases: &dyn LeaseIndex,
    ) -> Result<TxnOutcome<i64>> {
        let mut w = WriteTxn::begin(self, leases);
        for key in keys {
            w.delete_range(&KeyRange::Single(key.clone()))?;
        }
        let (revision, changes) = w.commit();
        Ok(TxnOutcome {
            response: revision,
            revision,
            changes,
        })
    }

    /// Applies a Txn: decide the path, check it, then execute it as one revision.
    pub fn apply_txn(
        &self,
        txn: &TxnRequest,
        leases: &dyn LeaseIndex,
    ) -> Result<TxnOutcome<TxnResponse>> {
        let before = self.current_revision();
        let mut path = Vec::new();
        self.txn_path(txn, before, &mut path)?;
        self.check_path(txn, &path, &mut 0, before, leases)?;
        let mut w = WriteTxn::begin(self, leases);
        let mut response = exec_txn(&mut w, txn, &path, &mut 0)?;
        let (revision, changes) = w.commit();
        response.header = header(revision);
        Ok(TxnOutcome {
            response,
            revision,
            changes,
        })
    }
}

fn exec_put(w: &mut WriteTxn<'_>, put: &PutRequest) -> Result<PutResponse> {
    let current = w.mvcc().get(&put.key, w.read_revision())?;
    let (value, lease) = match &current {
        Some(cur) => (
            if put.ignore_value {
                cur.value.clone()
            } else {
                put.value.clone()
            },
            if put.ignore_lease {
                cur.lease
            } else {
                put.lease
            },
        ),
        None => (put.value.clone(), put.lease),
    };
    let prev = w.put(&put.key, value, lease)?;
    Ok(PutResponse {
        header: None,
        prev_kv: if put.prev_kv { prev } else { None },
    })
}

fn exec_delete(w: &mut WriteTxn<'_>, del: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
    let deleted = w.delete_range(&KeyRange::new(&del.key, &del.range_end))?;
    Ok(DeleteRangeResponse {
        header: None,
        deleted: deleted.len() as i64,
        prev_kvs: if del.prev_kv { deleted } else { Vec::new() },
    })
}

fn exec_range(w: &WriteTxn<'_>, r: &RangeRequest) -> Result<RangeResponse> {
    let mvcc = w.mvcc();
    let revision = if r.revision > 0 {
        r.revision
    } else {
        w.read_revision()
    };
    let res = mvcc.range(r, revision)?;
    Ok(RangeResponse {
        // As in etcd, the header carries the store's revision, not the one read at.
        header: header(w.read_revision()),
        kvs: res.kvs,
        more: res.more,
        count: res.count,
    })
}

fn exec_txn(
    w: &mut WriteTxn<'_>,
    txn: &TxnRequest,
    path: &[bool],
    at: &mut usize,
) -> Result<TxnResponse> {
    let ok = path[*at];
    *at += 1;
    let mut responses = Vec::new();
    for op in if ok { &txn.success } else { &txn.failure } {
        let response = match &op.request {
            Some(Request::RequestRange(r)) => Response::ResponseRange(exec_range(w, r)?),
            Some(Request::RequestPut(p)) => {
                let mut resp = exec_put(w, p)?;
                resp.header = header(w.read_revision());
                Response::ResponsePut(resp)
            }
            Some(Request::RequestDeleteRange(d)) => {
                let mut resp = exec_delete(w, d)?;
                resp.header = header(w.read_revision());
                Response::ResponseDeleteRange(resp)
            }
            Some(Request::RequestTxn(inner)) => {
                let mut resp = exec_txn(w, inner, path, at)?;
                resp.header = header(w.read_revision());
                Response::ResponseTxn(resp)
            }
            None => continue,
        };
        responses.push(ResponseOp {
            response: Some(response),
        });
    }
    Ok(TxnResponse {
        header: None,
        succeeded: ok,
        responses,
    })
}
