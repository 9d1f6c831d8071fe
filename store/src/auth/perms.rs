//! Permission decisions as pure functions over key intervals (etcd's `auth/range_perm_cache.go`).
//!
//! Every permission and every request is turned into a half-open interval of keys: a single key
//! `k` is `[k, k\0)`, a range is `[key, range_end)`, and a `range_end` of `"\0"` means "every key
//! from `key` on" (no upper bound). A request is permitted when the union of the intervals its
//! caller may use covers the request's interval entirely, as etcd checks it.

use serde::{Deserialize, Serialize};

use crate::proto::etcdserverpb::request_op::Request as Op;
use crate::proto::etcdserverpb::TxnRequest;

/// etcd's `authpb.Permission_Type` (same numbers on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PermKind {
    Read = 0,
    Write = 1,
    ReadWrite = 2,
}

impl PermKind {
    pub fn from_i32(v: i32) -> Option<Self> {
        match v {
            0 => Some(Self::Read),
            1 => Some(Self::Write),
            2 => Some(Self::ReadWrite),
            _ => None,
        }
    }

    /// Whether a permission of this kind allows an access of kind `want` (Read or Write).
    pub fn allows(self, want: PermKind) -> bool {
        self == PermKind::ReadWrite || self == want
    }
}

/// One key permission of a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Perm {
    pub kind: PermKind,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

/// A half-open key interval; `end == None` means unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Interval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

fn interval(key: &[u8], range_end: &[u8]) -> Interval {
    let end = match range_end {
        [] => {
            let mut next = key.to_vec();
            next.push(0);
            Some(next)
        }
        [0] => None,
        end => Some(end.to_vec()),
    };
    Interval {
        start: key.to_vec(),
        end,
    }
}

/// Whether `perms` let a caller access `[key, range_end)` (etcd's key/range encoding) as `want`.
pub fn permits(perms: &[Perm], key: &[u8], range_end: &[u8], want: PermKind) -> bool {
    let mut target = interval(key, range_end);
    if matches!(&target.end, Some(end) if *end <= target.start) {
        // An empty range reads nothing; etcd still demands access to its start key.
        target = interval(key, &[]);
    }
    let mut granted: Vec<Interval> = perms
        .iter()
        .filter(|p| p.kind.allows(want))
        .map(|p| interval(&p.key, &p.range_end))
        .filter(|i| i.end.as_ref().is_none_or(|end| *end > i.start))
        .collect();
    granted.sort_by(|a, b| a.start.cmp(&b.start));
    // Sweep: extend the covered prefix of the target while the granted intervals touch it.
    let mut covered_to = target.start.clone();
    for g in granted {
        if g.start > covered_to {
            break;
        }
        match g.end {
            None => return true,
            Some(end) if end > covered_to => covered_to = end,
            Some(_) => {}
        }
        if matches!(&target.end, Some(end) if covered_to >= *end) {
            return true;
        }
    }
    false
}

/// The key accesses a Txn makes, as etcd's `checkTxnReqsPermission` lists them: every compare
/// reads, ranges read, puts write, deletes write (and read when they return the previous
/// values), nested Txns recursively, both branches regardless of which one will run.
pub fn txn_accesses(txn: &TxnRequest) -> Vec<(&[u8], &[u8], PermKind)> {
    let mut out = Vec::new();
    collect_txn(txn, &mut out);
    out
}

fn collect_txn<'a>(txn: &'a TxnRequest, out: &mut Vec<(&'a [u8], &'a [u8], PermKind)>) {
    for c in &txn.compare {
        out.push((&c.key, &c.range_end, PermKind::Read));
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(Op::RequestRange(r)) => out.push((&r.key, &r.range_end, PermKind::Read)),
            Some(Op::RequestPut(p)) => out.push((&p.key, &[], PermKind::Write)),
            Some(Op::RequestDeleteRange(d)) => {
                if d.prev_kv {
                    out.push((&d.key, &d.range_end, PermKind::Read));
                }
                out.push((&d.key, &d.range_end, PermKind::Write));
            }
            Some(Op::RequestTxn(inner)) => collect_txn(inner, out),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(kind: PermKind, key: &str, end: &str) -> Perm {
        Perm {
            kind,
            key: key.as_bytes().to_vec(),
            range_end: end.as_bytes().to_vec(),
        }
    }

    #[test]
    fn single_key_permission_covers_only_that_key() {
        let p = [perm(PermKind::Read, "foo", "")];
        assert!(permits(&p, b"foo", b"", PermKind::Read));
        assert!(!permits(&p, b"foo", b"", PermKind::Write));
        assert!(!permits(&p, b"foo1", b"", PermKind::Read));
        assert!(!permits(&p, b"fo", b"", PermKind::Read));
        // A prefix read starting at the key covers more than the key.
        assert!(!permits(&p, b"foo", b"fop", PermKind::Read));
        // [foo, foo\0) is exactly the key.
        assert!(permits(&p, b"foo", b"foo\0", PermKind::Read));
    }

    #[test]
    fn prefix_permission_covers_keys_and_subranges() {
        // etcdctl role grant-permission --prefix r readwrite /app/ => [/app/, /app0)
        let p = [perm(PermKind::ReadWrite, "/app/", "/app0")];
        assert!(permits(&p, b"/app/x", b"", PermKind::Write));
        assert!(permits(&p, b"/app/", b"/app0", PermKind::Read));
        assert!(permits(&p, b"/app/a", b"/app/b", PermKind::Read));
        assert!(!permits(&p, b"/app/", b"/app1", PermKind::Read));
        assert!(!permits(&p, b"/ap", b"", PermKind::Read));
        assert!(!permits(&p, b"/app/", b"\0", PermKind::Read));
    }

    #[test]
    fn range_permissions_union_and_gaps() {
        let p = [
            perm(PermKind::Read, "a", "c"),
            perm(PermKind::Read, "c", "e"),
            perm(PermKind::Write, "e", "g"),
        ];
        assert!(permits(&p, b"a", b"e", PermKind::Read));
        assert!(permits(&p, b"b", b"d", PermKind::Read));
        // [e, g) is write-only: reading up to f crosses into it.
        assert!(!permits(&p, b"a", b"f", PermKind::Read));
        assert!(permits(&p, b"e", b"g", PermKind::Write));
        assert!(!permits(&p, b"d", b"f", PermKind::Write));
        let gap = [
            perm(PermKind::Read, "a", "b"),
            perm(PermKind::Read, "c", "d"),
        ];
        assert!(!permits(&gap, b"a", b"d", PermKind::Read));
        assert!(permits(&gap, b"c", b"", PermKind::Read));
    }

    #[test]
    fn open_ended_permissions_and_requests() {
        let from = [perm(PermKind::Read, "m", "\0")];
        assert!(permits(&from, b"m", b"\0", PermKind::Read));
        assert!(permits(&from, b"zzz", b"", PermKind::Read));
        assert!(!permits(&from, b"a", b"\0", PermKind::Read));
        let bounded = [perm(PermKind::Read, "m", "z")];
        assert!(!permits(&bounded, b"m", b"\0", PermKind::Read));
        let all = [perm(PermKind::ReadWrite, "\0", "\0")];
        assert!(permits(&all, b"\0", b"\0", PermKind::Write));
        assert!(!permits(&[], b"a", b"", PermKind::Read));
    }

    #[test]
    fn txn_lists_compares_both_branches_and_nested_ops() {
        use crate::proto::etcdserverpb::{
            Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
        };
        let op = |r: Op| RequestOp { request: Some(r) };
        let nested = TxnRequest {
            success: vec![op(Op::RequestPut(PutRequest {
                key: b"n".to_vec(),
                ..Default::default()
            }))],
            ..Default::default()
        };
        let txn = TxnRequest {
            compare: vec![Compare {
                key: b"c".to_vec(),
                ..Default::default()
            }],
            success: vec![op(Op::RequestRange(RangeRequest {
                key: b"r".to_vec(),
                ..Default::default()
            }))],
            failure: vec![
                op(Op::RequestDeleteRange(DeleteRangeRequest {
                    key: b"d".to_vec(),
                    prev_kv: true,
                    ..Default::default()
                })),
                op(Op::RequestTxn(nested)),
            ],
        };
        let got: Vec<_> = txn_accesses(&txn)
            .into_iter()
            .map(|(k, _, kind)| (k.to_vec(), kind))
            .collect();
        assert_eq!(
            got,
            vec![
                (b"c".to_vec(), PermKind::Read),
                (b"r".to_vec(), PermKind::Read),
                (b"d".to_vec(), PermKind::Read),
                (b"d".to_vec(), PermKind::Write),
                (b"n".to_vec(), PermKind::Write),
            ]
        );
    }
}
