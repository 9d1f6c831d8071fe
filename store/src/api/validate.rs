//! Request checks that need no state, done before anything is proposed (etcd's
//! `checkRangeRequest`, `checkPutRequest`, `checkTxnRequest`, `checkIntervals`).

use super::errors::ApiError;
use crate::mvcc::KeyRange;
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest};

pub fn range(r: &RangeRequest) -> Result<(), ApiError> {
    if r.key.is_empty() {
        return Err(ApiError::EmptyKey);
    }
    Ok(())
}

pub fn put(p: &PutRequest) -> Result<(), ApiError> {
    if p.key.is_empty() {
        return Err(ApiError::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(ApiError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(ApiError::LeaseProvided);
    }
    Ok(())
}

pub fn delete(d: &DeleteRangeRequest) -> Result<(), ApiError> {
    if d.key.is_empty() {
        return Err(ApiError::EmptyKey);
    }
    Ok(())
}

/// Checks a Txn and its nested Txns: op count, each op, and no key written twice on one path.
pub fn txn(t: &TxnRequest, max_ops: usize) -> Result<(), ApiError> {
    check_txn(t, max_ops)?;
    check_intervals(t).map(|_| ())
}

fn check_txn(t: &TxnRequest, max_ops: usize) -> Result<(), ApiError> {
    let ops = t.compare.len().max(t.success.len()).max(t.failure.len());
    if ops > max_ops {
        return Err(ApiError::TooManyOps);
    }
    for c in &t.compare {
        if c.key.is_empty() {
            return Err(ApiError::EmptyKey);
        }
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => range(r)?,
            Some(Request::RequestPut(p)) => put(p)?,
            Some(Request::RequestDeleteRange(d)) => delete(d)?,
            // etcd's checkTxnRequest: a nested Txn gets what this level left of the budget.
            Some(Request::RequestTxn(inner)) => check_txn(inner, max_ops - ops)?,
            None => {}
        }
    }
    Ok(())
}

/// Keys written by one branch list (puts) and ranges deleted by it.
#[derive(Default)]
struct Writes {
    puts: Vec<Vec<u8>>,
    deletes: Vec<KeyRange>,
}

fn branch_writes(ops: &[crate::proto::etcdserverpb::RequestOp]) -> Result<Writes, ApiError> {
    let mut w = Writes::default();
    for op in ops {
        match &op.request {
            Some(Request::RequestPut(p)) => {
                if w.puts.contains(&p.key) {
                    return Err(ApiError::DuplicateKey);
                }
                w.puts.push(p.key.clone());
            }
            Some(Request::RequestDeleteRange(d)) => {
                w.deletes.push(KeyRange::new(&d.key, &d.range_end))
            }
            Some(Request::RequestTxn(inner)) => {
                let (succ, fail) = check_intervals(inner)?;
                // Either nested branch may run: each must be disjoint from this level's writes.
                let parent_puts = w.puts.clone();
                for nested in [succ, fail] {
                    if nested.puts.iter().any(|k| parent_puts.contains(k)) {
                        return Err(ApiError::DuplicateKey);
                    }
                    w.deletes.extend(nested.deletes);
                    w.puts.extend(nested.puts);
                }
            }
            Some(Request::RequestRange(_)) | None => {}
        }
    }
    // A key both put and deleted by the same branch is a duplicate (etcd rejects it too).
    for k in &w.puts {
        if w.deletes.iter().any(|d| d.contains(k)) {
            return Err(ApiError::DuplicateKey);
        }
    }
    Ok(w)
}

fn check_intervals(t: &TxnRequest) -> Result<(Writes, Writes), ApiError> {
    Ok((branch_writes(&t.success)?, branch_writes(&t.failure)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::RequestOp;

    fn put_op(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn del_op(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn duplicate_puts_are_rejected() {
        let t = TxnRequest {
            success: vec![put_op("a"), put_op("a")],
            ..Default::default()
        };
        assert_eq!(txn(&t, 128), Err(ApiError::DuplicateKey));
        let ok = TxnRequest {
            success: vec![put_op("a")],
            failure: vec![put_op("a")],
            ..Default::default()
        };
        assert_eq!(txn(&ok, 128), Ok(()));
    }

    #[test]
    fn put_inside_deleted_range_is_rejected() {
        let t = TxnRequest {
            success: vec![del_op("a", "c"), put_op("b")],
            ..Default::default()
        };
        assert_eq!(txn(&t, 128), Err(ApiError::DuplicateKey));
        let t = TxnRequest {
            success: vec![del_op("a", "c"), put_op("c")],
            ..Default::default()
        };
        assert_eq!(txn(&t, 128), Ok(()));
    }

    #[test]
    fn nested_txn_conflicts_with_parent() {
        let inner = TxnRequest {
            success: vec![put_op("x")],
            ..Default::default()
        };
        let t = TxnRequest {
            success: vec![
                put_op("x"),
                RequestOp {
                    request: Some(Request::RequestTxn(inner)),
                },
            ],
            ..Default::default()
        };
        assert_eq!(txn(&t, 128), Err(ApiError::DuplicateKey));
    }

    #[test]
    fn too_many_ops_and_empty_keys() {
        let t = TxnRequest {
            success: (0..3).map(|i| put_op(&i.to_string())).collect(),
            ..Default::default()
        };
        assert_eq!(txn(&t, 2), Err(ApiError::TooManyOps));
        assert_eq!(
            txn(
                &TxnRequest {
                    success: vec![put_op("")],
                    ..Default::default()
                },
                8
            ),
            Err(ApiError::EmptyKey)
        );
        let p = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(put(&p), Err(ApiError::ValueProvided));
    }
}
