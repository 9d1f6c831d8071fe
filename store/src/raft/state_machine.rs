//! The replicated state machine: committed commands applied to MVCC, in log order.
//!
//! After each entry one record (`M state`) stores the applied log id together with the MVCC
//! revisions, so after a crash the entry is either fully counted or re-applied from scratch (and
//! re-applying writes exactly the same versions; see `mvcc::write`). Snapshots are a dump of the
//! state-machine keyspaces as of one applied state (`scan`), so they match their log id exactly.

// Errors are openraft's StorageError, as the storage traits this module implements return.
#![allow(clippy::result_large_err)]

mod scan;
mod snapshot_file;

pub use scan::StateScan;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, StorageError,
    StorageIOError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::codec;
use super::{
    Command, CommandResult, Entry, LogId, Member, MemberAttributes, NodeId, StoredMembership,
    TypeConfig,
};
use crate::lease::lessor::Lessor;
use crate::lease::Leases;
use crate::mvcc::{Change, Mvcc, MvccError};
use crate::storage::{space, Backend, Batch};

const STATE: &[u8] = b"Mstate";
const MEMBER_PREFIX: &[u8] = b"Mmember/";

/// Everything the state machine records about how far it got.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub revision: i64,
    pub compacted: i64,
}

/// The changes of one revision, as the watch fan-out receives them.
#[derive(Debug)]
pub struct RevisionChanges {
    pub revision: i64,
    pub changes: Vec<Change>,
}

pub struct Inner {
    backend: Arc<dyn Backend>,
    pub mvcc: Arc<Mvcc>,
    pub leases: Leases,
    pub lessor: Arc<Lessor>,
    state: Mutex<AppliedState>,
    /// Held while an entry is applied and while a state-machine scan starts (`scan`), so a
    /// reader never sees half an entry.
    apply_lock: Mutex<()>,
    alarms: crate::alarm::AlarmStore,
    auth: crate::auth::AuthStore,
    snapshot_dir: PathBuf,
    changes: broadcast::Sender<Arc<RevisionChanges>>,
}

/// Shared handle to the state machine (openraft holds one; the API layer reads through another).
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        openraft::AnyError::new(&e),
    )
    .into()
}

fn member_key(id: NodeId) -> Vec<u8> {
    let mut k = MEMBER_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

impl StateMachine {
    pub fn open(
        backend: Arc<dyn Backend>,
        snapshot_dir: PathBuf,
    ) -> Result<Self, StorageError<NodeId>> {
        std::fs::create_dir_all(&snapshot_dir).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        snapshot_file::convert_legacy(&snapshot_dir).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let state = load_state(backend.as_ref())?;
        let mvcc = Mvcc::new(backend.clone(), state.revision, state.compacted)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let mvcc = Arc::new(mvcc);
        mvcc.start_compactor()
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let (changes, _) = broadcast::channel(1024);
        let alarms = crate::alarm::AlarmStore::open(backend.clone())
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let auth = crate::auth::AuthStore::open(backend.clone())
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let sm = Self {
            inner: Arc::new(Inner {
                apply_lock: Mutex::new(()),
                alarms,
                auth,
                leases: Leases::new(backend.clone()),
                lessor: Arc::new(Lessor::default()),
                backend,
                mvcc,
                state: Mutex::new(state),
                snapshot_dir,
                changes,
            }),
        };
        sm.recover_interrupted_install()?;
        Ok(sm)
    }

    /// Finishes a snapshot install a crash interrupted. `install_snapshot` saves the received
    /// snapshot before it rewrites the state machine, and openraft may already have purged the
    /// log up to it; so a saved snapshot ahead of what the state machine applied means the
    /// rewrite did not complete, and the only way forward is to redo it (without this, the
    /// member restarted with its log purged past its snapshot and openraft refused to start).
    fn recover_interrupted_install(&self) -> Result<(), StorageError<NodeId>> {
        let saved = snapshot_file::open(&self.inner.snapshot_dir)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let Some((meta, file)) = saved else {
            return Ok(());
        };
        if meta.last_log_id <= self.lock().last_applied {
            return Ok(());
        }
        tracing::warn!(snapshot = %meta.snapshot_id, "redoing an interrupted raft snapshot install");
        self.install_data(&meta, file)
    }

    pub fn mvcc(&self) -> &Arc<Mvcc> {
        &self.inner.mvcc
    }

    pub fn leases(&self) -> &Leases {
        &self.inner.leases
    }

    pub fn lessor(&self) -> &Arc<Lessor> {
        &self.inner.lessor
    }

    /// The size of the saved Raft snapshot, 0 if there is none.
    pub fn snapshot_bytes(&self) -> u64 {
        let path = snapshot_file::path(&self.inner.snapshot_dir);
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    /// Where Raft snapshots live (also scratch space for streaming backups).
    pub fn snapshot_dir(&self) -> &std::path::Path {
        &self.inner.snapshot_dir
    }

    pub fn alarms(&self) -> &crate::alarm::AlarmStore {
        &self.inner.alarms
    }

    pub fn auth(&self) -> &crate::auth::AuthStore {
        &self.inner.auth
    }

    fn apply_guard(&self) -> MutexGuard<'_, ()> {
        // Guards no data of its own; a panic while applying is handled by `lock`'s reasoning.
        self.inner
            .apply_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to the changes of every revision applied from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RevisionChanges>> {
        self.inner.changes.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, AppliedState> {
        // A panic while applying leaves the state as it was before the entry; keep serving it.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn applied_state(&self) -> AppliedState {
        self.lock().clone()
    }

    /// Name and client URLs each member published.
    pub fn member_attributes(&self, id: NodeId) -> Option<MemberAttributes> {
        let raw = self.inner.backend.get(&member_key(id)).ok()??;
        codec::decode("member attributes", &raw).ok()
    }

    fn persist(&self, state: &AppliedState) -> Result<(), StorageError<NodeId>> {
        let raw = codec::encode("applied state", state).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.inner
            .backend
            .insert(STATE, &raw)
            .map_err(|e| sm_err(ErrorVerb::Write, e))
    }

    fn apply_command(&self, cmd: &Command) -> Result<CommandResult, StorageError<NodeId>> {
        if let Command::Batch(cmds) = cmd {
            let results = cmds.iter().map(|c| self.apply_command(c));
            return Ok(CommandResult::Batch(results.collect::<Result<_, _>>()?));
        }
        if let Command::Authorized {
            auth_revision,
            command,
        } = cmd
        {
            if self.inner.auth.is_stale(*auth_revision) {
                crate::metrics::proposal_failed();
                return Ok(CommandResult::AuthFailed(
                    crate::api::errors::AuthError::AuthOldRevision,
                ));
            }
            return self.apply_command(command);
        }
        let mvcc = &self.inner.mvcc;
        let leases = &self.inner.leases;
        if let Some(refused) = self.inner.alarms.refusal(cmd) {
            crate::metrics::proposal_failed();
            return Ok(CommandResult::Failed(refused));
        }
        let outcome = match cmd {
            Command::Put(req) => mvcc
                .apply_put(req, leases)
                .map(|o| (CommandResult::Put(o.response), o.revision, o.changes)),
            Command::DeleteRange(req) => mvcc.apply_delete(req, leases).map(|o| {
                (
                    CommandResult::DeleteRange(o.response),
                    o.revision,
                    o.changes,
                )
            }),
            Command::LeaseGrant { id, ttl } => leases.grant(*id, *ttl).map(|()| {
                self.inner.lessor.refresh(*id, std::time::Instant::now());
                let revision = mvcc.current_revision();
                (
                    CommandResult::LeaseGranted {
                        id: *id,
                        ttl: *ttl,
                        revision,
                    },
                    0,
                    Vec::new(),
                )
            }),
            Command::LeaseRevoke { id } => self.revoke(*id),
            Command::Txn(req) => mvcc
                .apply_txn(req, leases)
                .map(|o| (CommandResult::Txn(o.response), o.revision, o.changes)),
            Command::Compact { revision } => mvcc.schedule_compaction(*revision).map(|()| {
                (
                    CommandResult::Revision(mvcc.current_revision()),
                    0,
                    Vec::new(),
                )
            }),
            Command::Alarm {
                action,
                member_id,
                alarm,
            } => {
                let changed = self
                    .inner
                    .alarms
                    .apply(*action, *member_id, *alarm)
                    .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                Ok((CommandResult::Alarms(changed), 0, Vec::new()))
            }
            // Taken apart before this match.
            Command::Batch(_) => Ok((CommandResult::Batch(Vec::new()), 0, Vec::new())),
            // Unwrapped above.
            Command::Authorized { command, .. } => return self.apply_command(command),
            Command::Auth(auth) => {
                let answer = self
                    .inner
                    .auth
                    .apply(auth)
                    .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                let result = match answer {
                    Ok(()) => CommandResult::Revision(mvcc.current_revision()),
                    Err(e) => CommandResult::AuthFailed(e),
                };
                Ok((result, 0, Vec::new()))
            }
            Command::PublishMember {
                id,
                name,
                client_urls,
            } => {
                let attrs = MemberAttributes {
                    name: name.clone(),
                    client_urls: client_urls.clone(),
                };
                let raw = codec::encode("member attributes", &attrs)
                    .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                self.inner
                    .backend
                    .insert(&member_key(*id), &raw)
                    .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                Ok((
                    CommandResult::Revision(mvcc.current_revision()),
                    0,
                    Vec::new(),
                ))
            }
        };
        match outcome {
            Ok((result, revision, changes)) => {
                crate::metrics::proposal_applied();
                if !changes.is_empty() {
                    // Nobody listening is fine: watchers catch up from history.
                    let _ = self
                        .inner
                        .changes
                        .send(Arc::new(RevisionChanges { revision, changes }));
                }
                Ok(result)
            }
            Err(MvccError::Storage(detail)) => {
                Err(sm_err(ErrorVerb::Write, std::io::Error::other(detail)))
            }
            Err(e) => {
                crate::metrics::proposal_failed();
                Ok(CommandResult::Failed(e))
            }
        }
    }

    /// Deletes a lease's keys in one revision, then the lease.
    fn revoke(&self, id: i64) -> Result<(CommandResult, i64, Vec<Change>), MvccError> {
        let leases = &self.inner.leases;
        if leases.get(id)?.is_none() {
            return Err(MvccError::LeaseNotFound);
        }
        let keys = leases.keys(id)?;
        let outcome = self.inner.mvcc.apply_revoke(&keys, leases)?;
        leases.remove(id)?;
        self.inner.lessor.forget(id);
        Ok((
            CommandResult::Revision(self.inner.mvcc.current_revision()),
            outcome.revision,
            outcome.changes,
        ))
    }
}

/// The state-machine record of a data dir restored from a backup (`cairn snapshot restore`):
/// the backup's revisions, nothing applied from a log yet, no membership (the new cluster's
/// first log entry brings it). Returns the key and value to store.
pub fn restored_state_record(
    revision: i64,
    compacted: i64,
) -> Result<(Vec<u8>, Vec<u8>), codec::CodecError> {
    let state = AppliedState {
        revision,
        compacted,
        ..Default::default()
    };
    Ok((STATE.to_vec(), codec::encode("applied state", &state)?))
}

fn load_state(backend: &dyn Backend) -> Result<AppliedState, StorageError<NodeId>> {
    match backend.get(STATE).map_err(|e| sm_err(ErrorVerb::Read, e))? {
        None => Ok(AppliedState {
            revision: 1,
            ..Default::default()
        }),
        Some(raw) => codec::decode("applied state", &raw).map_err(|e| sm_err(ErrorVerb::Read, e)),
    }
}

impl StateMachine {
    /// Writes a Raft snapshot of the state machine as of its current applied state into the
    /// snapshot file, streaming it from a scan (writes go on meanwhile); returns its metadata.
    fn write_snapshot(&self) -> Result<(snapshot_file::Meta, u64), StorageError<NodeId>> {
        let scan = self.scan_state().map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let state = scan.state.clone();
        let snapshot_id = match &state.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, state.revision),
            None => format!("0-0-{}", state.revision),
        };
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id,
        };
        let pairs = scan.map(|p| p.map_err(std::io::Error::other));
        let path = snapshot_file::path(&self.inner.snapshot_dir);
        let size =
            snapshot_file::write(&path, &meta, pairs).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        Ok((meta, size))
    }

    fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let saved = snapshot_file::open(&self.inner.snapshot_dir)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        Ok(saved.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let this = self.clone();
        let (meta, size) = tokio::task::spawn_blocking(move || this.write_snapshot())
            .await
            .map_err(|e| sm_err(ErrorVerb::Read, e))??;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = size, "built raft snapshot");
        self.current_snapshot()?
            .filter(|s| s.meta == meta)
            .ok_or_else(|| {
                let e = std::io::Error::other("the snapshot just built was replaced");
                sm_err(ErrorVerb::Read, e)
            })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), StorageError<NodeId>> {
        let s = self.lock();
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        for entry in entries {
            crate::crash_point!("raft::apply::before");
            let _apply = self.apply_guard();
            let mut state = self.lock().clone();
            let result = match &entry.payload {
                EntryPayload::Blank => CommandResult::Revision(self.inner.mvcc.current_revision()),
                EntryPayload::Normal(cmd) => self.apply_command(cmd)?,
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    CommandResult::Revision(self.inner.mvcc.current_revision())
                }
            };
            state.last_applied = Some(entry.log_id);
            state.revision = self.inner.mvcc.current_revision();
            state.compacted = self.inner.mvcc.compact_revision();
            self.persist(&state)?;
            crate::crash_point!("raft::apply::after");
            *self.lock() = state;
            results.push(result);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        let path = snapshot_file::incoming_path(&self.inner.snapshot_dir);
        // Read back at install, to check what arrived.
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        use tokio::io::AsyncWriteExt;
        let mut received = *snapshot;
        received
            .flush()
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let mut received = received.into_std().await;
        let dir = self.inner.snapshot_dir.clone();
        let verify = |file: &mut std::fs::File| -> std::io::Result<()> {
            file.sync_all()?;
            // The file is the leader's snapshot file, its metadata included.
            let (sent, _) = snapshot_file::read_meta(file)?;
            if sent.snapshot_id != meta.snapshot_id || sent.last_log_id != meta.last_log_id {
                return Err(std::io::Error::other(format!(
                    "received snapshot {} holds snapshot {}",
                    meta.snapshot_id, sent.snapshot_id
                )));
            }
            // Saved first: a crash while the state machine is being rewritten is then
            // finished at the next start (`recover_interrupted_install`).
            let path = snapshot_file::path(&dir);
            std::fs::rename(snapshot_file::incoming_path(&dir), &path)?;
            snapshot_file::sync_parent(&path)
        };
        verify(&mut received).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.install_data(meta, received)?;
        tracing::info!(snapshot = %meta.snapshot_id, "installed raft snapshot");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        self.current_snapshot()
    }
}

impl StateMachine {
    /// Replaces the state machine with a snapshot's contents.
    fn install_data(
        &self,
        meta: &SnapshotMeta<NodeId, Member>,
        file: std::fs::File,
    ) -> Result<(), StorageError<NodeId>> {
        let pairs = snapshot_file::pairs(file).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let _apply = self.apply_guard();
        // A state-machine scan (a snapshot being built) reads without the apply lock.
        let _compaction = self.inner.mvcc.compaction_guard();
        let mut guard = self.lock();
        let backend = self.inner.backend.as_ref();
        let mut clear = Batch::default();
        for item in crate::storage::scan_spaces(backend, &space::STATE_MACHINE) {
            clear.delete(item.map_err(|e| sm_err(ErrorVerb::Write, e))?.0.into_vec());
        }
        backend
            .write(clear)
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        crate::crash_point!("raft::snapshot::install");
        let mut batch = Batch::default();
        for pair in pairs {
            let (k, v) = pair.map_err(|e| sm_err(ErrorVerb::Read, e))?;
            batch.put(k, v);
            if batch.len() >= 10_000 {
                backend
                    .write(std::mem::take(&mut batch))
                    .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            }
        }
        backend
            .write(batch)
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let mut state = load_state(backend)?;
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        let raw =
            codec::encode("applied state", &state).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        backend
            .insert(STATE, &raw)
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        backend.flush().map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.inner
            .mvcc
            .reset(state.revision, state.compacted)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        self.inner
            .alarms
            .reload()
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        self.inner
            .auth
            .reload()
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        *guard = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SledBackend;

    /// A state machine in `dir` (also used by `scan`'s tests).
    pub(super) fn open(dir: &std::path::Path) -> StateMachine {
        let backend = Arc::new(SledBackend::open(&dir.join("db")).unwrap());
        StateMachine::open(backend, dir.join("snap")).unwrap()
    }

    fn put(key: &str, value: &str) -> crate::raft::Command {
        crate::raft::Command::Put(crate::proto::etcdserverpb::PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
    }

    async fn apply(sm: &mut StateMachine, index: u64, cmd: crate::raft::Command) {
        let entry = Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(cmd),
        };
        sm.apply([entry]).await.unwrap();
    }

    fn dump(sm: &StateMachine) -> Vec<crate::storage::Pair> {
        sm.scan_state().unwrap().map(Result::unwrap).collect()
    }

    /// What openraft does to catch a follower up: the leader's snapshot file is sent byte by
    /// byte into the follower's `begin_receiving_snapshot` file, then installed; the follower
    /// ends with exactly the leader's state machine and keeps the file as its own snapshot.
    #[tokio::test]
    async fn a_snapshot_streams_from_one_member_to_another() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut leader = open(a_dir.path());
        for i in 0..500u64 {
            let value = "v".repeat(i as usize % 90);
            apply(&mut leader, i + 1, put(&format!("k{}", i % 200), &value)).await;
        }
        let built = leader.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(500));

        let mut follower = open(b_dir.path());
        apply(&mut follower, 1, put("only-here", "gone after the install")).await;
        let mut sent = leader.get_current_snapshot().await.unwrap().unwrap();
        let mut bytes = Vec::new();
        sent.snapshot.read_to_end(&mut bytes).await.unwrap();
        let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
        for chunk in bytes.chunks(4096) {
            receiving.write_all(chunk).await.unwrap();
        }
        follower
            .install_snapshot(&sent.meta, receiving)
            .await
            .unwrap();

        assert_eq!(dump(&follower), dump(&leader));
        assert_eq!(
            follower.applied_state().revision,
            leader.applied_state().revision
        );
        let kept = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(kept.meta, sent.meta);
        assert!(!snapshot_file::incoming_path(&b_dir.path().join("snap")).exists());

        // A received file that is not the snapshot the leader announced is refused.
        let mut other = sent.meta.clone();
        other.snapshot_id = "someone-else".into();
        let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
        receiving.write_all(&bytes).await.unwrap();
        assert!(follower.install_snapshot(&other, receiving).await.is_err());
    }

    /// A snapshot saved but not (fully) installed when the member stopped is installed at the
    /// next start.
    #[tokio::test]
    async fn an_interrupted_install_is_finished_at_start() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut leader = open(a_dir.path());
        for i in 0..50u64 {
            apply(&mut leader, i + 1, put(&format!("k{i}"), "v")).await;
        }
        leader.build_snapshot().await.unwrap();
        // The follower had saved the leader's snapshot file, then stopped before rewriting
        // its state machine.
        let b_snap = b_dir.path().join("snap");
        std::fs::create_dir_all(&b_snap).unwrap();
        std::fs::copy(
            snapshot_file::path(&a_dir.path().join("snap")),
            snapshot_file::path(&b_snap),
        )
        .unwrap();
        let follower = open(b_dir.path());
        assert_eq!(dump(&follower), dump(&leader));
        assert_eq!(
            follower.applied_state().last_applied.map(|l| l.index),
            Some(50)
        );
    }
}
