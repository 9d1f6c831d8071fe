//! The Raft log and vote, in a write-ahead log of their own (`member/wal`, the `raft-log` crate).
//!
//! openraft's contract: a vote is durable before `save_vote` returns, and `append` reports
//! completion only once the entries are on disk. raft-log writes every record (appends, votes,
//! truncations, purges, the commit index) to an append-only chunk file from one flush thread,
//! which batches whatever is queued into one write and one `fdatasync`, so many proposals share
//! one disk flush, as in etcd's WAL.
//!
//! The log used to live in sled with the state machine. Every append then cost sled's flush (a
//! `pwrite` and a waiting `sync_file_range` per IO buffer, three per put) plus the fsync, and
//! purged entries left garbage in the state machine's file. Now the state machine in sled is
//! made durable only by sled's own background flush, by snapshots, and before the log is purged
//! (`purge` below): after a crash, openraft re-applies the committed entries the WAL still holds
//! (applying is idempotent, see `state_machine.rs`), exactly like etcd replaying its WAL onto
//! bbolt.

// Errors are openraft's StorageError, as the storage traits this module implements return.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    CommittedLeaderId, ErrorSubject, ErrorVerb, LeaderId, OptionalSend, RaftLogReader,
    StorageError, StorageIOError, Vote,
};
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::RaftLog;

use super::codec;
use super::{Entry, LogId, NodeId, TypeConfig};
use crate::storage::{space, Backend, Batch};

/// How raft-log stores cairn's log: ids as ((term, leader), index), entries bincode-encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalTypes;

type WalLogId = ((u64, u64), u64);
type WalVote = ((u64, u64), bool);

impl raft_log::Types for WalTypes {
    type LogId = WalLogId;
    type LogPayload = Vec<u8>;
    type Vote = WalVote;
    type Callback = Flushed;
    type UserData = ();

    fn log_index(log_id: &WalLogId) -> u64 {
        log_id.1
    }

    fn payload_size(payload: &Vec<u8>) -> u64 {
        payload.len() as u64
    }
}

/// Who hears that a flush reached the disk.
pub enum Flushed {
    /// openraft, for an append handed to the WAL at the instant given; the append is counted
    /// as finished after openraft is told.
    Append(
        LogFlushed<TypeConfig>,
        std::time::Instant,
        Arc<AppendCounts>,
    ),
    /// A caller awaiting the flush (votes, truncations, purges).
    Waiter(tokio::sync::oneshot::Sender<io::Result<()>>),
    /// A caller blocking on it (opening, outside the runtime's tasks).
    Blocking(std::sync::mpsc::Sender<io::Result<()>>),
}

impl raft_log::Callback for Flushed {
    fn send(self, res: io::Result<()>) {
        match self {
            Flushed::Append(cb, queued, appends) => {
                let ok = res.is_ok();
                if ok {
                    crate::crash_point!("raft::log::after_fsync");
                    // From handing the records over to their fdatasync returning: the WAL
                    // thread writes and syncs in one step, so this is etcd's WAL fsync figure
                    // plus the wait for the write batched before.
                    crate::metrics::observe_wal_fsync(queued.elapsed());
                }
                cb.log_io_completed(res);
                appends.send_modify(|(_, finished)| *finished += 1);
            }
            // A waiter that went away no longer cares.
            Flushed::Waiter(tx) => {
                let _ = tx.send(res);
            }
            Flushed::Blocking(tx) => {
                let _ = tx.send(res);
            }
        }
    }
}

fn to_wal_id(id: &LogId) -> WalLogId {
    ((id.leader_id.term, id.leader_id.node_id), id.index)
}

fn from_wal_id(&((term, node), index): &WalLogId) -> LogId {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn to_wal_vote(v: &Vote<NodeId>) -> WalVote {
    ((v.leader_id.term, v.leader_id.node_id), v.committed)
}

fn from_wal_vote(&((term, node), committed): &WalVote) -> Vote<NodeId> {
    Vote {
        leader_id: LeaderId::new(term, node),
        committed,
    }
}

/// Appends started and finished, in that order.
type AppendCounts = tokio::sync::watch::Sender<(u64, u64)>;

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

/// Where the WAL lives in a member's directory (etcd's layout has `member/wal` too).
pub fn wal_dir(member_dir: &Path) -> std::path::PathBuf {
    member_dir.join("wal")
}

#[derive(Clone)]
pub struct LogStore {
    wal: Arc<RwLock<RaftLog<WalTypes>>>,
    /// How many appends have started and finished (see [`LogStore::appends`]).
    appends: Arc<AppendCounts>,
    /// The state machine's engine: made durable before the log is purged.
    backend: Arc<dyn Backend>,
}

impl LogStore {
    /// Opens (or creates) the WAL in `dir`, moving a log that an older cairn kept in `backend`.
    pub fn open(dir: &Path, backend: Arc<dyn Backend>) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir
            .to_str()
            .ok_or_else(|| io::Error::other(format!("WAL path {dir:?} is not UTF-8")))?;
        let mut config = raft_log::Config::new(path);
        // raft-log's payload cache never evicts an entry of the open chunk (only entries up to
        // the last closed chunk are evictable), so the chunk size, not `log_cache_capacity`,
        // bounds the entries kept in memory: 64 MiB chunks held 58 MiB of entries after the
        // bench suite. Purged chunks are deleted whole, so this also bounds the garbage.
        config.wal.chunk_max_size = Some(8 * 1024 * 1024);
        // Read while replaying at start-up; the default (64 MiB) is allocated per chunk read.
        config.wal.read_buffer_size = Some(1024 * 1024);
        // No waiting for more writes to share a flush: openraft 0.9 has one append in flight at
        // a time (its core awaits each append's flush), so none would come, and every put
        // would pay the wait (the default is 1 ms). Batching happens above (`server/batch.rs`).
        config.wal.flush_batch_wait = Some(Duration::ZERO);
        // Entries are read back to apply them and to send them to followers soon after they
        // are written; older ones are read from the file. (The default keeps up to 1 GiB.)
        config.log_cache_capacity = Some(4 * 1024 * 1024);
        let wal = RaftLog::open(Arc::new(config))?;
        let store = Self {
            wal: Arc::new(RwLock::new(wal)),
            appends: Arc::new(tokio::sync::watch::Sender::new((0, 0))),
            backend,
        };
        store.move_log_from_backend()?;
        Ok(store)
    }

    /// How many appends have started and how many have finished (durable, or failed).
    /// openraft 0.9's core waits for each append's flush before it takes its next message, so
    /// the log being idle is the moment the core can append again: the write batcher
    /// (`server/batch.rs`) proposes its next batch then, with everything that arrived during
    /// the flush.
    pub fn appends(&self) -> tokio::sync::watch::Receiver<(u64, u64)> {
        self.appends.subscribe()
    }

    fn read(&self) -> RwLockReadGuard<'_, RaftLog<WalTypes>> {
        // raft-log applies a record to its in-memory state only after writing it whole.
        self.wal.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, RaftLog<WalTypes>> {
        self.wal.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until everything written so far is on disk.
    async fn sync(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.write().flush(true, Some(Flushed::Waiter(tx)))?;
        rx.await
            .map_err(|_| io::Error::other("the WAL's flush thread stopped"))?
    }

    fn sync_blocking(&self) -> io::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.write().flush(true, Some(Flushed::Blocking(tx)))?;
        rx.recv()
            .map_err(|_| io::Error::other("the WAL's flush thread stopped"))?
    }

    /// Data dirs of cairn before the WAL kept the vote and log in the backend (`R` and `L`
    /// spaces). Moves them into the (empty) WAL, durably, then removes them from the backend.
    fn move_log_from_backend(&self) -> io::Result<()> {
        let state = self.read().log_state().clone();
        if state.vote().is_some() || state.last().is_some() || state.purged().is_some() {
            return Ok(());
        }
        let meta = |key: &[u8]| -> io::Result<Option<Box<[u8]>>> {
            self.backend.get(key).map_err(io::Error::other)
        };
        let mut moved = Batch::default();
        let mut wal = self.write();
        if let Some(raw) = meta(LEGACY_VOTE)? {
            let vote: Vote<NodeId> = legacy_decode("vote", &raw)?;
            wal.save_vote(to_wal_vote(&vote))?;
            moved.delete(LEGACY_VOTE.to_vec());
        }
        if let Some(raw) = meta(LEGACY_PURGED)? {
            let purged: LogId = legacy_decode("purged log id", &raw)?;
            wal.purge(to_wal_id(&purged))?;
            moved.delete(LEGACY_PURGED.to_vec());
        }
        for item in crate::storage::scan_prefix(self.backend.as_ref(), &[space::RAFT_LOG]) {
            let (key, raw) = item.map_err(io::Error::other)?;
            let entry: Entry = legacy_decode("log entry", &raw)?;
            wal.append([(to_wal_id(&entry.log_id), raw.into_vec())])?;
            moved.delete(key.into_vec());
        }
        if let Some(raw) = meta(LEGACY_COMMITTED)? {
            let committed: Option<LogId> = legacy_decode("committed log id", &raw)?;
            if let Some(c) = committed.filter(|c| Some(&to_wal_id(c)) <= wal.log_state().last()) {
                wal.commit(to_wal_id(&c))?;
            }
            moved.delete(LEGACY_COMMITTED.to_vec());
        }
        drop(wal);
        if moved.is_empty() {
            return Ok(());
        }
        tracing::info!(
            records = moved.len(),
            "moving the Raft log from the state machine's database into the WAL"
        );
        self.sync_blocking()?;
        self.backend.write(moved).map_err(io::Error::other)?;
        self.backend.flush().map_err(io::Error::other)
    }
}

fn legacy_decode<T: serde::de::DeserializeOwned>(what: &'static str, raw: &[u8]) -> io::Result<T> {
    codec::decode(what, raw).map_err(io::Error::other)
}

/// Where cairn before the WAL kept the vote and log bookkeeping in the backend.
const LEGACY_VOTE: &[u8] = b"Rvote";
const LEGACY_PURGED: &[u8] = b"Rpurged";
const LEGACY_COMMITTED: &[u8] = b"Rcommitted";

/// `[from, to)` log indexes of a range.
fn index_span<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(i) => i.saturating_add(1),
        Bound::Excluded(i) => *i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let (from, to) = index_span(&range);
        let wal = self.read();
        let read_err = |e: io::Error| io_err(ErrorSubject::Logs, ErrorVerb::Read, e);
        wal.read(from, to)
            .map(|item| {
                let (_, raw) = item.map_err(read_err)?;
                codec::decode("log entry", &raw).map_err(|e| read_err(io::Error::other(e)))
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let wal = self.read();
        let state = wal.log_state();
        let last_purged = state.purged().map(from_wal_id);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: state.last().map(from_wal_id).or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let err = |e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e);
        self.write().save_vote(to_wal_vote(vote)).map_err(err)?;
        self.sync().await.map_err(err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.read().log_state().vote().map(from_wal_vote))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), StorageError<NodeId>> {
        // Durable with the next flush; losing it only means re-learning the commit index. A
        // commit index past the local log (a snapshot being installed) is not recorded: raft-log
        // refuses it, and openraft records the next one.
        let Some(c) = committed.map(|c| to_wal_id(&c)) else {
            return Ok(());
        };
        let mut wal = self.write();
        let state = wal.log_state();
        if Some(&c) > state.last() || Some(&c) <= state.committed() {
            return Ok(());
        }
        wal.commit(c)
            .map(|_| ())
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        Ok(self.read().log_state().committed().map(from_wal_id))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let err = |e: io::Error| io_err(ErrorSubject::Logs, ErrorVerb::Write, e);
        let mut records = Vec::new();
        for entry in entries {
            let raw = codec::encode("log entry", &entry).map_err(|e| err(io::Error::other(e)))?;
            records.push((to_wal_id(&entry.log_id), raw));
        }
        let mut wal = self.write();
        let queued = std::time::Instant::now();
        // Counted before the flush thread can finish it, so finished never passes started.
        self.appends.send_modify(|(started, _)| *started += 1);
        let handed_over = wal.append(records).and_then(|_| {
            crate::crash_point!("raft::log::before_fsync");
            // The flush thread reports to openraft once these records are on disk.
            let appends = self.appends.clone();
            wal.flush(true, Some(Flushed::Append(callback, queued, appends)))
        });
        if handed_over.is_err() {
            self.appends.send_modify(|(_, finished)| *finished += 1);
        }
        handed_over.map_err(err)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let err = |e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e);
        self.write().truncate(log_id.index).map_err(err)?;
        self.sync().await.map_err(err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let err = |e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e);
        // Entries are purged once a snapshot covers them, but sled may not have flushed what
        // applying them wrote. Once they are gone a crash could not re-apply them: make the
        // state machine durable first.
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || backend.flush())
            .await
            .map_err(|e| err(io::Error::other(e)))?
            .map_err(|e| err(io::Error::other(e)))?;
        self.write().purge(to_wal_id(&log_id)).map_err(err)?;
        self.sync().await.map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::EntryPayload;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn dirs() -> (tempfile::TempDir, Arc<dyn Backend>) {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> =
            Arc::new(crate::storage::open(&dir.path().join("db")).unwrap());
        (dir, backend)
    }

    #[test]
    fn ids_and_votes_round_trip() {
        let id = LogId::new(CommittedLeaderId::new(7, 3), 42);
        assert_eq!(from_wal_id(&to_wal_id(&id)), id);
        let vote = Vote {
            leader_id: LeaderId::new(5, 2),
            committed: true,
        };
        assert_eq!(from_wal_vote(&to_wal_vote(&vote)), vote);
    }

    #[test]
    fn a_log_kept_in_the_backend_moves_into_the_wal() {
        let (dir, backend) = dirs();
        let vote = Vote::new(4, 1);
        backend
            .insert(LEGACY_VOTE, &codec::encode("vote", &vote).unwrap())
            .unwrap();
        let purged = entry(1, 2).log_id;
        backend
            .insert(LEGACY_PURGED, &codec::encode("purged", &purged).unwrap())
            .unwrap();
        for i in 3..=5 {
            let e = entry(2, i);
            let mut key = vec![space::RAFT_LOG];
            key.extend_from_slice(&i.to_be_bytes());
            backend
                .insert(&key, &codec::encode("entry", &e).unwrap())
                .unwrap();
        }
        let committed = Some(entry(2, 4).log_id);
        backend
            .insert(LEGACY_COMMITTED, &codec::encode("c", &committed).unwrap())
            .unwrap();

        let wal_dir = wal_dir(dir.path());
        let store = LogStore::open(&wal_dir, backend.clone()).unwrap();
        let state = store.read().log_state().clone();
        assert_eq!(state.vote().map(from_wal_vote), Some(vote));
        assert_eq!(state.purged().map(from_wal_id), Some(purged));
        assert_eq!(state.last().map(from_wal_id), Some(entry(2, 5).log_id));
        assert_eq!(state.committed().map(from_wal_id), committed);
        for space in [space::RAFT_LOG, space::RAFT_META] {
            assert_eq!(
                crate::storage::scan_prefix(backend.as_ref(), &[space]).count(),
                0,
                "the backend keeps nothing of the log"
            );
        }
        drop(store);
        // Reopening finds the WAL as it was, and moves nothing again.
        let mut store = LogStore::open(&wal_dir, backend).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let entries = rt.block_on(store.try_get_log_entries(3..=5)).unwrap();
        let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, vec![3, 4, 5]);
        assert_eq!(rt.block_on(store.read_vote()).unwrap(), Some(vote));
    }
}
