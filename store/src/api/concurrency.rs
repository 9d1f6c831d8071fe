//! What the Lock and Election services share: etcd implements both on the server with clientv3's
//! `concurrency` recipes (a session lease, an ownership key `<name>/<lease-id-hex>` created with a
//! create-if-absent Txn, then waiting until every key under the name with a lower create revision
//! is deleted). cairn runs the same recipes directly against Raft and MVCC: writes go through
//! `Node::propose`, and waiting follows the state machine's per-revision broadcast instead of a
//! Watch stream, re-checking MVCC after each revision that deleted something under the prefix.

use std::sync::Arc;

use tokio::sync::broadcast;
use tonic::Status;

use super::errors::ApiError;
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::request_op::Request as Op;
use crate::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::KeyValue;
use crate::raft::state_machine::RevisionChanges;
use crate::raft::{Command, CommandResult};
use crate::server::node::Node;

/// clientv3's `concurrency.NewSession` default TTL: etcd's servers grant a lease this long when a
/// Lock or Campaign request carries no lease (lease 0), and never keep it alive.
pub const DEFAULT_SESSION_TTL: i64 = 60;

/// etcd serves Lock and Election through an internal clientv3 client, so whatever the KV layer
/// answers reaches the caller as a plain error: same message, code Unknown. clientv3 matches on
/// the message, which is kept.
pub fn passthrough(status: Status) -> Status {
    if status.code() == tonic::Code::Unknown {
        status
    } else {
        Status::unknown(status.message().to_string())
    }
}

/// etcd's `concurrency.ErrElectionNotLeader`, passed through as a plain (Unknown) gRPC error.
pub fn not_leader() -> Status {
    Status::unknown("election: not leader")
}

/// etcd's `concurrency.ErrElectionNoLeader`.
pub fn no_leader() -> Status {
    Status::unknown("election: no leader")
}

/// etcd's `concurrency.ErrSessionExpired`: the lock was reached but its key went with its lease.
pub fn session_expired() -> Status {
    Status::unknown("mutex: session is expired")
}

/// etcd's v3election `ErrMissingLeaderKey`.
pub fn missing_leader_key() -> Status {
    Status::unknown("\"leader\" field must be provided")
}

/// The end of the range holding every key that starts with `prefix` (clientv3's
/// `GetPrefixRangeEnd`, shared with the client).
pub use crate::client::prefix_range_end as prefix_end;

/// The ownership key of `lease` under `name`, spelled as clientv3 spells it (`%s/%x`).
pub fn owner_key(name: &[u8], lease: i64) -> Vec<u8> {
    let mut key = name.to_vec();
    key.push(b'/');
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// The name's key prefix (`NewMutex` / `NewElection` append `/`).
pub fn name_prefix(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

pub fn create_rev_is(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
    }
}

pub fn op(request: Op) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

/// The lease a session uses: the caller's, or (lease 0) a fresh one nobody keeps alive, as
/// etcd's `concurrency.NewSession(WithLease(0))` grants.
pub async fn session_lease(node: &Node, lease: i64) -> Result<i64, Status> {
    if lease != 0 {
        return Ok(lease);
    }
    let ttl = DEFAULT_SESSION_TTL.max(node.min_lease_ttl);
    let id = node.lease_ids.next();
    match node.propose(Command::LeaseGrant { id, ttl }).await? {
        CommandResult::LeaseGranted { id, .. } => Ok(id),
        CommandResult::Failed(e) => Err(ApiError::from(e).into()),
        _ => Err(Status::internal(
            "etcdserver: unexpected apply result for lease grant",
        )),
    }
}

/// Commits a Txn that writes, returning etcd's response (revision in its header).
pub async fn txn(node: &Node, req: TxnRequest) -> Result<TxnResponse, Status> {
    node.refuse_learner()?;
    match node.propose(Command::Txn(req)).await? {
        CommandResult::Txn(resp) => Ok(resp),
        CommandResult::Failed(e) => Err(ApiError::from(e).into()),
        _ => Err(Status::internal(
            "etcdserver: unexpected apply result for txn",
        )),
    }
}

pub fn txn_revision(resp: &TxnResponse) -> i64 {
    resp.header.as_ref().map_or(0, |h| h.revision)
}

/// The ownership key a campaign or lock attempt ended up with.
pub struct Owned {
    pub key: Vec<u8>,
    /// The key's create revision: its place in the queue.
    pub rev: i64,
    /// The revision of the Txn that queued it (or found it queued).
    pub txn_rev: i64,
    /// The key's value when it already existed (the Txn's Else branch).
    pub existing_value: Option<Vec<u8>>,
}

/// Queues `lease` under `name`: puts `<name>/<lease hex>` = `value` with the lease if absent;
/// otherwise reuses the existing key (same lease, same place in the queue), as clientv3 does.
pub async fn enqueue(node: &Node, name: &[u8], lease: i64, value: &[u8]) -> Result<Owned, Status> {
    let key = owner_key(name, lease);
    let resp = txn(
        node,
        TxnRequest {
            compare: vec![create_rev_is(&key, 0)],
            success: vec![op(Op::RequestPut(PutRequest {
                key: key.clone(),
                value: value.to_vec(),
                lease,
                ..Default::default()
            }))],
            failure: vec![op(Op::RequestRange(RangeRequest {
                key: key.clone(),
                ..Default::default()
            }))],
        },
    )
    .await?;
    let txn_rev = txn_revision(&resp);
    if resp.succeeded {
        return Ok(Owned {
            key,
            rev: txn_rev,
            txn_rev,
            existing_value: None,
        });
    }
    // Else branch: the key exists; its Range answer is the first response.
    let kv = resp
        .responses
        .first()
        .and_then(|r| match &r.response {
            Some(crate::proto::etcdserverpb::response_op::Response::ResponseRange(r)) => {
                r.kvs.first().cloned()
            }
            _ => None,
        })
        // Deleted between compare and read cannot happen inside one Txn; treat as a store bug.
        .ok_or_else(|| Status::internal("etcdserver: ownership key vanished inside a txn"))?;
    Ok(Owned {
        key,
        rev: kv.create_revision,
        txn_rev,
        existing_value: Some(kv.value),
    })
}

/// Deletes `key` only while it is still the incarnation created at `rev` (etcd's Resign Txn).
/// Returns the Txn's response (its `succeeded` says whether anything was deleted).
pub async fn delete_if_created(node: &Node, key: &[u8], rev: i64) -> Result<TxnResponse, Status> {
    txn(
        node,
        TxnRequest {
            compare: vec![create_rev_is(key, rev)],
            success: vec![op(Op::RequestDeleteRange(DeleteRangeRequest {
                key: key.to_vec(),
                ..Default::default()
            }))],
            failure: Vec::new(),
        },
    )
    .await
}

/// Withdraws a queued ownership key when the request that queued it goes away before it is
/// answered (the client cancelled, or waiting failed): etcd's recipes unlock/resign then, so an
/// abandoned waiter never becomes a phantom owner. Drop cannot await, so the delete runs as its
/// own task; it is bounded by `propose`'s request timeout.
pub struct Withdraw {
    node: Arc<Node>,
    key: Vec<u8>,
    rev: i64,
    armed: bool,
}

impl Withdraw {
    pub fn new(node: Arc<Node>, owned: &Owned) -> Self {
        Self {
            node,
            key: owned.key.clone(),
            rev: owned.rev,
            armed: true,
        }
    }

    /// The request succeeded: the key now belongs to the caller.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime (shutting down): the key's lease still bounds how long it stays.
            return;
        };
        let node = self.node.clone();
        let key = std::mem::take(&mut self.key);
        let rev = self.rev;
        runtime.spawn(async move {
            if let Err(e) = delete_if_created(&node, &key, rev).await {
                tracing::debug!(error = %e, "could not withdraw an abandoned lock/campaign key");
            }
        });
    }
}

/// A subscription to applied revisions, taken before reading MVCC so no revision between the
/// read and the wait is missed.
pub struct Changes {
    rx: broadcast::Receiver<Arc<RevisionChanges>>,
}

impl Changes {
    pub fn subscribe(node: &Node) -> Self {
        Self {
            rx: node.sm.subscribe(),
        }
    }

    /// Waits for the next applied revision with an event under `prefix` matching `wanted`.
    /// Returns that revision, or `None` when revisions were missed (the subscriber lagged) and
    /// the caller should re-read the latest state.
    pub async fn next_touching(
        &mut self,
        prefix: &[u8],
        wanted: impl Fn(EventType) -> bool,
    ) -> Result<Option<i64>, Status> {
        loop {
            match self.rx.recv().await {
                Ok(c) => {
                    let hit = c.changes.iter().any(|ev| {
                        ev.kv.as_ref().is_some_and(|kv| kv.key.starts_with(prefix))
                            && wanted(EventType::try_from(ev.r#type).unwrap_or(EventType::Put))
                    });
                    if hit {
                        return Ok(Some(c.revision));
                    }
                }
                // We missed revisions: re-read the latest state rather than guess.
                Err(broadcast::error::RecvError::Lagged(_)) => return Ok(None),
                Err(broadcast::error::RecvError::Closed) => return Err(ApiError::Stopped.into()),
            }
        }
    }
}

/// Whether some key under `prefix` was created at or below `max_create_rev` (a predecessor).
fn has_predecessor(node: &Node, prefix: &[u8], max_create_rev: i64) -> Result<bool, Status> {
    if max_create_rev < 1 {
        // max_create_revision 0 would mean "no filter"; nothing is created before revision 1.
        return Ok(false);
    }
    let mvcc = node.mvcc();
    let req = RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        keys_only: true,
        max_create_revision: max_create_rev,
        ..Default::default()
    };
    let res = mvcc
        .range(&req, mvcc.current_revision())
        .map_err(ApiError::from)?;
    Ok(!res.kvs.is_empty())
}

/// clientv3's `waitDeletes`: returns once no key under `prefix` has a create revision at or
/// below `max_create_rev`. `changes` must have been subscribed before the caller's Txn, so a
/// deletion can never slip between a check and the wait. Returns whether it had to wait.
///
/// The wait ends when the caller's future is dropped (the client cancelled): it holds no task.
pub async fn wait_deletes(
    node: &Node,
    changes: &mut Changes,
    prefix: &[u8],
    max_create_rev: i64,
) -> Result<bool, Status> {
    // The Txn that queued us was committed; this member must have applied it (and so every key
    // created before it), or a follower could miss a predecessor it has not applied yet.
    if node.mvcc().current_revision() <= max_create_rev {
        node.read_index().await?;
    }
    let mut waited = false;
    while has_predecessor(node, prefix, max_create_rev)? {
        waited = true;
        changes
            .next_touching(prefix, |t| t == EventType::Delete)
            .await?;
    }
    Ok(waited)
}

/// The first-created key under `prefix` at `revision` (the lock holder / election leader), as
/// clientv3's `Get(prefix, WithFirstCreate())` reads it.
pub fn first_created(
    node: &Node,
    prefix: &[u8],
    revision: i64,
) -> Result<Option<KeyValue>, Status> {
    let mvcc = node.mvcc();
    let req = RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        ..Default::default()
    };
    let res = mvcc.range(&req, revision).map_err(ApiError::from)?;
    Ok(res.kvs.into_iter().next())
}

/// The current value of `key` at the latest applied revision.
pub fn get_latest(node: &Node, key: &[u8]) -> Result<Option<KeyValue>, Status> {
    let mvcc = node.mvcc();
    Ok(mvcc
        .get(key, mvcc.current_revision())
        .map_err(ApiError::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_spelled_as_clientv3_spells_them() {
        assert_eq!(
            owner_key(b"job", 0x694d_8a3b_2f00_1c07),
            b"job/694d8a3b2f001c07"
        );
        assert_eq!(owner_key(b"a", 10), b"a/a");
        assert_eq!(name_prefix(b"a"), b"a/");
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
