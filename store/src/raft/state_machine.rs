//! The replicated state machine: committed commands applied to MVCC, in log order.
//!
//! After each entry one record (`M state`) stores the applied log id together with the MVCC
//! revisions, so after a crash the entry is either fully counted or re-applied from scratch (and
//! re-applying writes exactly the same versions; see `mvcc::write`). Snapshots are a dump of the
//! state-machine keyspaces as of one applied state (`scan`), so they match their log id exactly.

// Errors are openraft's StorageError, as the storage traits this module implements return.
#![allow(clippy::result_large_err)]

mod scan;

pub use scan::StateScan;

use std::io::Cursor;
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
const SNAPSHOT_MAGIC: &[u8] = b"CAIRNSNAP1\n";

/// A saved Raft snapshot: its metadata and its data (a dump).
type SavedSnapshot = (SnapshotMeta<NodeId, Member>, Vec<u8>);
/// A key and its value in a dump.
type DumpPair<'a> = (&'a [u8], &'a [u8]);

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
        let Some((meta, data)) = self.read_snapshot()? else {
            return Ok(());
        };
        if meta.last_log_id <= self.lock().last_applied {
            return Ok(());
        }
        tracing::warn!(snapshot = %meta.snapshot_id, "redoing an interrupted raft snapshot install");
        self.install_data(&meta, &data)
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

    /// Dumps the state-machine keyspaces as of one applied state, which it returns.
    fn dump(&self) -> Result<(Vec<u8>, AppliedState), StorageError<NodeId>> {
        let scan = self.scan_state().map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let state = scan.state.clone();
        let mut out = SNAPSHOT_MAGIC.to_vec();
        for item in scan {
            let (k, v) = item.map_err(|e| sm_err(ErrorVerb::Read, e))?;
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(&k);
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(&v);
        }
        Ok((out, state))
    }

    /// The latest Raft snapshot: one file, its metadata first (u32 BE length, then the
    /// metadata), so a crash can never pair one snapshot's data with another's metadata (a
    /// follower sent such a pair would re-apply entries the data already holds).
    fn snapshot_path(&self) -> PathBuf {
        self.inner.snapshot_dir.join("current.snapshot")
    }

    /// Where data dirs written before the single file kept their snapshot: data and metadata
    /// in two files, each replaced atomically but not together.
    fn legacy_snapshot_paths(&self) -> (PathBuf, PathBuf) {
        (
            self.inner.snapshot_dir.join("current.snap"),
            self.inner.snapshot_dir.join("current.meta"),
        )
    }

    fn save_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, Member>,
        data: &[u8],
    ) -> Result<(), StorageError<NodeId>> {
        let raw_meta =
            codec::encode("snapshot meta", meta).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let len = u32::try_from(raw_meta.len()).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        // Written piece by piece: a copy of the whole snapshot just to prepend the header would
        // double the memory a snapshot build needs.
        write_atomically(
            &self.snapshot_path(),
            &[&len.to_be_bytes(), &raw_meta, data],
        )
        .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        for legacy in <[PathBuf; 2]>::from(self.legacy_snapshot_paths()) {
            match std::fs::remove_file(legacy) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(sm_err(ErrorVerb::Write, e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The saved snapshot's metadata and data, if there is one.
    fn read_snapshot(&self) -> Result<Option<SavedSnapshot>, StorageError<NodeId>> {
        let corrupt = |what: &str| {
            sm_err(
                ErrorVerb::Read,
                std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string()),
            )
        };
        let (raw_meta, data) = match std::fs::read(self.snapshot_path()) {
            Ok(mut file) => {
                let len = file
                    .get(..4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(|b| u32::from_be_bytes(b) as usize)
                    .ok_or_else(|| corrupt("snapshot file shorter than its header"))?;
                if file.len() < 4 + len {
                    return Err(corrupt("snapshot file shorter than its metadata"));
                }
                // The metadata is small; the data stays in the buffer it was read into.
                let raw_meta = file[4..4 + len].to_vec();
                file.drain(..4 + len);
                (raw_meta, file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (snap, meta_path) = self.legacy_snapshot_paths();
                match (std::fs::read(&snap), std::fs::read(&meta_path)) {
                    (Ok(data), Ok(raw_meta)) => (raw_meta, data),
                    _ => return Ok(None),
                }
            }
            Err(e) => return Err(sm_err(ErrorVerb::Read, e)),
        };
        let meta =
            codec::decode("snapshot meta", &raw_meta).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        Ok(Some((meta, data)))
    }
}

/// Writes `parts` one after another to `path`, all or nothing, durably.
fn write_atomically(path: &std::path::Path, parts: &[&[u8]]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    for part in parts {
        f.write_all(part)?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
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

/// Parses a snapshot dump into its key-value pairs.
fn parse_dump(data: &[u8]) -> Result<Vec<DumpPair<'_>>, String> {
    let mut rest = data
        .strip_prefix(SNAPSHOT_MAGIC)
        .ok_or("not a cairn snapshot")?;
    let mut pairs = Vec::new();
    let take = |rest: &mut &[u8]| -> Result<usize, String> {
        if rest.len() < 4 {
            return Err("truncated snapshot".into());
        }
        let (len, tail) = rest.split_at(4);
        *rest = tail;
        Ok(u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize)
    };
    while !rest.is_empty() {
        let klen = take(&mut rest)?;
        if rest.len() < klen {
            return Err("truncated snapshot key".into());
        }
        let (k, tail) = rest.split_at(klen);
        rest = tail;
        let vlen = take(&mut rest)?;
        if rest.len() < vlen {
            return Err("truncated snapshot value".into());
        }
        let (v, tail) = rest.split_at(vlen);
        rest = tail;
        pairs.push((k, v));
    }
    Ok(pairs)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let this = self.clone();
        let (data, state) = tokio::task::spawn_blocking(move || this.dump())
            .await
            .map_err(|e| sm_err(ErrorVerb::Read, e))??;
        let snapshot_id = match &state.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, state.revision),
            None => format!("0-0-{}", state.revision),
        };
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id,
        };
        self.save_snapshot(&meta, &data)?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "built raft snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
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
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        // Saved first: a crash while the state machine is being rewritten is then finished at
        // the next start (`recover_interrupted_install`).
        self.save_snapshot(meta, &data)?;
        self.install_data(meta, &data)?;
        tracing::info!(snapshot = %meta.snapshot_id, "installed raft snapshot");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let Some((meta, data)) = self.read_snapshot()? else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

impl StateMachine {
    /// Replaces the state machine with a snapshot's contents.
    fn install_data(
        &self,
        meta: &SnapshotMeta<NodeId, Member>,
        data: &[u8],
    ) -> Result<(), StorageError<NodeId>> {
        let pairs =
            parse_dump(data).map_err(|e| sm_err(ErrorVerb::Read, std::io::Error::other(e)))?;
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
        for (k, v) in pairs {
            batch.put(k.to_vec(), v.to_vec());
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

    fn meta(id: &str) -> SnapshotMeta<NodeId, Member> {
        SnapshotMeta {
            snapshot_id: id.into(),
            ..Default::default()
        }
    }

    /// Metadata and data are one file: what is read back is always a matching pair, and the
    /// two files of older data dirs are read, then replaced by the next save.
    #[test]
    fn snapshot_file_pairs_metadata_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let sm = open(dir.path());
        assert!(sm.read_snapshot().unwrap().is_none());

        let (legacy_data, legacy_meta) = sm.legacy_snapshot_paths();
        std::fs::write(&legacy_data, b"old data").unwrap();
        std::fs::write(&legacy_meta, codec::encode("m", &meta("old")).unwrap()).unwrap();
        let (m, data) = sm.read_snapshot().unwrap().unwrap();
        assert_eq!(
            (m.snapshot_id.as_str(), data.as_slice()),
            ("old", &b"old data"[..])
        );

        sm.save_snapshot(&meta("new"), b"new data").unwrap();
        assert!(!legacy_data.exists() && !legacy_meta.exists());
        let (m, data) = sm.read_snapshot().unwrap().unwrap();
        assert_eq!(
            (m.snapshot_id.as_str(), data.as_slice()),
            ("new", &b"new data"[..])
        );

        // A torn file is an error, not a snapshot.
        std::fs::write(sm.snapshot_path(), [0u8, 0, 1]).unwrap();
        assert!(sm.read_snapshot().is_err());
    }
}
