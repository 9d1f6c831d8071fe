//! Alarms (NOSPACE, CORRUPT) and the space quota, as etcd has them.
//!
//! An alarm is part of the replicated state: it is raised and cleared by a Raft command
//! ([`crate::raft::Command::Alarm`]) and stored in the state machine under `Malarm/`, so every
//! member agrees on it, it survives restarts and it travels in Raft snapshots. While NOSPACE is
//! active the state machine refuses writes that need space (etcd's "capped" applier); while
//! CORRUPT is active it refuses every write. The quota check ([`check_quota`]) runs on the member
//! that receives a client write, before proposing it, as etcd's quota servers do.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use crate::api::errors::ApiError;
use crate::mvcc::MvccError;
use crate::proto::etcdserverpb::alarm_request::AlarmAction;
use crate::proto::etcdserverpb::request_op::Request as Op;
use crate::proto::etcdserverpb::{AlarmMember, AlarmType, TxnRequest};
use crate::raft::{Command, CommandResult};
use crate::server::node::Node;
use crate::storage::{Backend, StorageError};

const PREFIX: &[u8] = b"Malarm/";

/// etcd's per-request overhead in its quota cost estimate (`storage/quota.go`: kvOverhead).
const KV_OVERHEAD: u64 = 256;
/// etcd's cost of a lease grant (`leaseOverhead`).
const LEASE_OVERHEAD: u64 = 64;

fn key(member_id: u64, alarm: i32) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(&member_id.to_be_bytes());
    k.extend_from_slice(&alarm.to_be_bytes());
    k
}

fn parse_key(raw: &[u8]) -> Option<(u64, i32)> {
    let body = raw.strip_prefix(PREFIX)?;
    if body.len() != 12 {
        return None;
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&body[..8]);
    let mut at = [0u8; 4];
    at.copy_from_slice(&body[8..]);
    Some((u64::from_be_bytes(id), i32::from_be_bytes(at)))
}

/// The active alarms: persisted in the state machine, cached in memory for the write path.
pub struct AlarmStore {
    backend: Arc<dyn Backend>,
    active: RwLock<BTreeSet<(u64, i32)>>,
}

impl AlarmStore {
    pub fn open(backend: Arc<dyn Backend>) -> Result<Self, StorageError> {
        let store = Self {
            backend,
            active: RwLock::new(BTreeSet::new()),
        };
        store.reload()?;
        Ok(store)
    }

    /// Re-reads the persisted alarms (after a Raft snapshot replaced the state machine).
    pub fn reload(&self) -> Result<(), StorageError> {
        let mut set = BTreeSet::new();
        for item in crate::storage::scan_prefix(self.backend.as_ref(), PREFIX) {
            let (k, _) = item?;
            let parsed = parse_key(&k).ok_or_else(|| StorageError::Corrupt {
                what: "alarm",
                detail: format!("bad alarm key {k:?}"),
            })?;
            set.insert(parsed);
        }
        *self.write() = set;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeSet<(u64, i32)>> {
        // The set is replaced or edited in single steps; a panic cannot leave it half-changed.
        self.active.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeSet<(u64, i32)>> {
        self.active.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Active alarms of type `alarm` (every type for NONE), ordered by member then type.
    pub fn list(&self, alarm: i32) -> Vec<AlarmMember> {
        self.read()
            .iter()
            .filter(|(_, t)| alarm == AlarmType::None as i32 || *t == alarm)
            .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect()
    }

    pub fn is_active(&self, alarm: i32) -> bool {
        self.read().iter().any(|(_, t)| *t == alarm)
    }

    /// Applies an ACTIVATE or DEACTIVATE (GET is answered locally); returns what etcd returns:
    /// the alarm for ACTIVATE, the removed alarm (if it was active) for DEACTIVATE.
    pub fn apply(
        &self,
        action: i32,
        member_id: u64,
        alarm: i32,
    ) -> Result<Vec<(u64, i32)>, StorageError> {
        let settable = alarm == AlarmType::Nospace as i32 || alarm == AlarmType::Corrupt as i32;
        match AlarmAction::try_from(action) {
            // etcd only implements activating NOSPACE and CORRUPT; anything else is a no-op.
            Ok(AlarmAction::Activate) if settable => {
                self.backend.insert(&key(member_id, alarm), &[])?;
                self.write().insert((member_id, alarm));
                Ok(vec![(member_id, alarm)])
            }
            Ok(AlarmAction::Deactivate) => {
                if !self.read().contains(&(member_id, alarm)) {
                    return Ok(Vec::new());
                }
                self.backend.remove(&key(member_id, alarm))?;
                self.write().remove(&(member_id, alarm));
                Ok(vec![(member_id, alarm)])
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Why the active alarms refuse `cmd`, if they do.
    pub fn refusal(&self, cmd: &Command) -> Option<MvccError> {
        refusal(
            cmd,
            self.is_active(AlarmType::Nospace as i32),
            self.is_active(AlarmType::Corrupt as i32),
        )
    }
}

/// Whether a Txn can write a value in any branch (nested Txns included).
fn txn_puts(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| match &op.request {
            Some(Op::RequestPut(_)) => true,
            Some(Op::RequestTxn(inner)) => txn_puts(inner),
            _ => false,
        })
}

/// Whether a Txn writes anything (puts or deletes) in any branch.
fn txn_writes(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| match &op.request {
            Some(Op::RequestPut(_)) | Some(Op::RequestDeleteRange(_)) => true,
            Some(Op::RequestTxn(inner)) => txn_writes(inner),
            _ => false,
        })
}

/// The bytes a command may add to the database, as etcd's quota estimates them (0: it frees
/// space or only changes metadata, so it is always allowed).
pub fn cost(cmd: &Command) -> u64 {
    use prost::Message;
    match cmd {
        Command::Authorized { command, .. } => cost(command),
        Command::Put(p) => p.encoded_len() as u64 + KV_OVERHEAD,
        Command::Txn(t) if txn_puts(t) => t.encoded_len() as u64 + KV_OVERHEAD,
        Command::LeaseGrant { .. } => LEASE_OVERHEAD,
        _ => 0,
    }
}

/// What the alarms refuse (etcd's capped and corrupt appliers): under NOSPACE, everything that
/// needs space (Put, Txn with a put, LeaseGrant), while deletes, revokes and Compact go on so
/// space can be freed; under CORRUPT, every change of the keyspace or leases.
pub fn refusal(cmd: &Command, nospace: bool, corrupt: bool) -> Option<MvccError> {
    if let Command::Authorized { command, .. } = cmd {
        return refusal(command, nospace, corrupt);
    }
    let changes_data = match cmd {
        Command::Put(_)
        | Command::DeleteRange(_)
        | Command::Compact { .. }
        | Command::LeaseGrant { .. }
        | Command::LeaseRevoke { .. } => true,
        Command::Txn(t) => txn_writes(t),
        _ => false,
    };
    if corrupt && changes_data {
        return Some(MvccError::Corrupt);
    }
    if nospace && cost(cmd) > 0 {
        return Some(MvccError::NoSpace);
    }
    None
}

/// The database size as the quota check sees it. sled measures its size by listing its files
/// (a directory scan, ~5% of a write's CPU in a put profile); every write checks the quota, so a
/// measurement is reused for [`DbSize::MAX_AGE`] (etcd reads bbolt's size from memory).
#[derive(Default)]
pub struct DbSize {
    last: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

impl DbSize {
    const MAX_AGE: std::time::Duration = std::time::Duration::from_millis(100);

    pub fn get(&self, backend: &dyn Backend) -> Result<u64, StorageError> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some((at, size)) if at.elapsed() < Self::MAX_AGE => Ok(size),
            _ => {
                let size = backend.size_on_disk()?;
                *last = Some((std::time::Instant::now(), size));
                Ok(size)
            }
        }
    }
}

/// Whether a write of `cost` bytes fits the quota (a pure decision; etcd: `Available`).
pub fn fits(db_size: u64, cost: u64, quota: i64) -> bool {
    quota <= 0 || db_size.saturating_add(cost) <= quota as u64
}

/// etcd's text for an alarm in Status `errors` and `etcdctl alarm list` (protobuf's compact text
/// form of AlarmMember, trailing space included).
pub fn describe(m: &AlarmMember) -> String {
    let name = AlarmType::try_from(m.alarm)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| m.alarm.to_string());
    format!("memberID:{} alarm:{} ", m.member_id, name)
}

/// Refuses a client write that would grow the database past the quota, raising NOSPACE for this
/// member through Raft first (as etcd's quota servers do). Commands that cost nothing pass.
pub async fn check_quota(node: &Node, cmd: &Command) -> Result<(), ApiError> {
    let cost = cost(cmd);
    if cost == 0 {
        return Ok(());
    }
    let size = node
        .db_size
        .get(node.backend.as_ref())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if fits(size, cost, node.limits.quota_bytes) {
        return Ok(());
    }
    if !node.sm.alarms().is_active(AlarmType::Nospace as i32) {
        tracing::warn!(
            db_size = size,
            quota = node.limits.quota_bytes,
            "database space exceeded; raising the NOSPACE alarm"
        );
        let raise = Command::Alarm {
            action: AlarmAction::Activate as i32,
            member_id: node.id,
            alarm: AlarmType::Nospace as i32,
        };
        // The write is refused either way; a failed raise is retried by the next write.
        if let Err(e) = Box::pin(node.propose(raise)).await {
            tracing::warn!(error = %e, "raising the NOSPACE alarm");
        }
    }
    Err(ApiError::NoSpace)
}

/// The alarms an applied Alarm command reports.
pub fn result_members(result: &CommandResult) -> Option<Vec<AlarmMember>> {
    match result {
        CommandResult::Alarms(list) => Some(
            list.iter()
                .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp};

    fn txn(ops: Vec<Op>) -> Command {
        Command::Txn(TxnRequest {
            success: ops
                .into_iter()
                .map(|r| RequestOp { request: Some(r) })
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn nospace_refuses_only_what_needs_space() {
        let put = Command::Put(PutRequest::default());
        let del = Command::DeleteRange(DeleteRangeRequest::default());
        assert_eq!(refusal(&put, true, false), Some(MvccError::NoSpace));
        assert_eq!(refusal(&put, false, false), None);
        assert_eq!(refusal(&del, true, false), None);
        assert_eq!(
            refusal(&Command::Compact { revision: 3 }, true, false),
            None
        );
        assert_eq!(
            refusal(&Command::LeaseGrant { id: 1, ttl: 5 }, true, false),
            Some(MvccError::NoSpace)
        );
        assert_eq!(refusal(&Command::LeaseRevoke { id: 1 }, true, false), None);
        let delete_only = txn(vec![Op::RequestDeleteRange(DeleteRangeRequest::default())]);
        assert_eq!(refusal(&delete_only, true, false), None);
        let nested_put = txn(vec![Op::RequestTxn(TxnRequest {
            failure: vec![RequestOp {
                request: Some(Op::RequestPut(PutRequest::default())),
            }],
            ..Default::default()
        })]);
        assert_eq!(refusal(&nested_put, true, false), Some(MvccError::NoSpace));
        assert_eq!(refusal(&del, false, true), Some(MvccError::Corrupt));
        assert_eq!(refusal(&txn(vec![]), false, true), None);
    }

    #[test]
    fn quota_decision() {
        assert!(fits(100, 10, 110));
        assert!(!fits(100, 11, 110));
        assert!(fits(u64::MAX, 1, 0), "a non-positive quota means none");
    }

    #[test]
    fn store_persists_and_reports_like_etcd() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> =
            Arc::new(crate::storage::SledBackend::open(dir.path()).unwrap());
        let store = AlarmStore::open(backend.clone()).unwrap();
        let nospace = AlarmType::Nospace as i32;
        let act = AlarmAction::Activate as i32;
        let deact = AlarmAction::Deactivate as i32;
        assert_eq!(store.apply(act, 7, nospace).unwrap(), vec![(7, nospace)]);
        assert_eq!(
            store.apply(act, 7, 0).unwrap(),
            vec![],
            "NONE cannot be raised"
        );
        assert!(store.is_active(nospace));
        let reopened = AlarmStore::open(backend).unwrap();
        assert_eq!(reopened.list(AlarmType::None as i32).len(), 1);
        assert_eq!(reopened.list(AlarmType::Corrupt as i32).len(), 0);
        assert_eq!(describe(&reopened.list(0)[0]), "memberID:7 alarm:NOSPACE ");
        assert_eq!(reopened.apply(deact, 8, nospace).unwrap(), vec![]);
        assert_eq!(
            reopened.apply(deact, 7, nospace).unwrap(),
            vec![(7, nospace)]
        );
        assert!(!reopened.is_active(nospace));
    }
}
