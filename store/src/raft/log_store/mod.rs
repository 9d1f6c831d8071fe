//! The Raft log and vote, in cairn's write-ahead log (`member/wal`, the `wal` module).
//!
//! openraft's contract: a vote is durable before `save_vote` returns, and `append` reports
//! completion only once the entries are on disk. The WAL's flush thread writes whatever is
//! queued (appends, votes, truncations, purges, the commit index) in one write and one
//! `fdatasync`, so many proposals share one disk flush, as in etcd's WAL.
//!
//! The state machine in sled is made durable only by sled's own background flush, by
//! snapshots, and before the log is purged (`purge` below): after a crash, openraft re-applies
//! the committed entries the WAL still holds (applying is idempotent, see `state_machine.rs`),
//! exactly like etcd replaying its WAL onto bbolt.
//!
//! Data dirs of older cairns kept the log elsewhere; `legacy.rs` moves it into the WAL.

// Errors are openraft's StorageError, as the storage traits this module implements return.
#![allow(clippy::result_large_err)]

mod legacy;

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    CommittedLeaderId, ErrorSubject, ErrorVerb, LeaderId, OptionalSend, RaftLogReader,
    StorageError, StorageIOError, Vote,
};

use super::codec;
use super::{Entry, LogId, NodeId, TypeConfig};
use crate::storage::Backend;
use crate::wal::{self, LogPos, VoteRec, Wal};

fn to_pos(id: &LogId) -> LogPos {
    LogPos {
        term: id.leader_id.term,
        node: id.leader_id.node_id,
        index: id.index,
    }
}

fn from_pos(p: &LogPos) -> LogId {
    LogId::new(CommittedLeaderId::new(p.term, p.node), p.index)
}

fn to_vote(v: &Vote<NodeId>) -> VoteRec {
    VoteRec {
        term: v.leader_id.term,
        node: v.leader_id.node_id,
        committed: v.committed,
    }
}

fn from_vote(v: &VoteRec) -> Vote<NodeId> {
    Vote {
        leader_id: LeaderId::new(v.term, v.node),
        committed: v.committed,
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
    wal: Arc<Wal>,
    /// How many appends have started and finished (see [`LogStore::appends`]).
    appends: Arc<AppendCounts>,
    /// The state machine's engine: made durable before the log is purged.
    backend: Arc<dyn Backend>,
}

impl LogStore {
    /// Opens (or creates) the WAL in `dir`, moving a log that an older cairn kept elsewhere.
    pub fn open(dir: &Path, backend: Arc<dyn Backend>) -> io::Result<Self> {
        Self::open_with(dir, backend, wal::Config::default())
    }

    fn open_with(dir: &Path, backend: Arc<dyn Backend>, config: wal::Config) -> io::Result<Self> {
        legacy::move_raft_log(dir, config)?;
        let store = Self {
            wal: Arc::new(Wal::open(dir, config)?),
            appends: Arc::new(tokio::sync::watch::Sender::new((0, 0))),
            backend,
        };
        legacy::move_log_from_backend(&store.wal, store.backend.as_ref())?;
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

    /// The first index of the newest entries that add up to at most `max_bytes`.
    pub fn tail_start(&self, max_bytes: u64) -> u64 {
        self.wal.tail_start(max_bytes)
    }

    /// Bytes appended to the log (entries, votes, ...) since this member started.
    pub fn bytes_appended(&self) -> u64 {
        self.wal.bytes_queued()
    }
}

/// Hands the WAL a write that reports to the `Done` it is given, and waits until it is on disk.
async fn durably(write: impl FnOnce(wal::Done) -> Result<(), wal::WalError>) -> io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    write(Box::new(move |res| {
        let _ = tx.send(res);
    }))?;
    rx.await
        .map_err(|_| io::Error::other("the WAL's flush thread stopped"))?
}

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
        let read_err = |e: io::Error| io_err(ErrorSubject::Logs, ErrorVerb::Read, e);
        let raw = self.wal.read(from, to).map_err(|e| read_err(e.into()))?;
        raw.iter()
            .map(|(_, bytes)| {
                codec::decode("log entry", bytes).map_err(|e| read_err(io::Error::other(e)))
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let state = self.wal.log_state();
        Ok(LogState {
            last_purged_log_id: state.purged.as_ref().map(from_pos),
            last_log_id: state.last.as_ref().map(from_pos),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        durably(|done| self.wal.save_vote(to_vote(vote), Some(done)))
            .await
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.wal.log_state().vote.as_ref().map(from_vote))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), StorageError<NodeId>> {
        // Durable with the next flush; losing it only means re-learning the commit index. A
        // commit index past the local log (a snapshot being installed) is not recorded:
        // openraft records the next one.
        let Some(c) = committed.map(|c| to_pos(&c)) else {
            return Ok(());
        };
        let state = self.wal.log_state();
        if Some(c) > state.last || Some(c) <= state.committed {
            return Ok(());
        }
        self.wal
            .commit(c)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, io::Error::from(e)))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        Ok(self.wal.log_state().committed.as_ref().map(from_pos))
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
            records.push((to_pos(&entry.log_id), raw));
        }
        // Counted before the flush thread can finish it, so finished never passes started.
        self.appends.send_modify(|(started, _)| *started += 1);
        let appends = self.appends.clone();
        let done: wal::Done = Box::new(move |res| {
            if res.is_ok() {
                crate::crash_point!("raft::log::after_fsync");
            }
            callback.log_io_completed(res);
            appends.send_modify(|(_, finished)| *finished += 1);
        });
        let handed_over = self.wal.append(records, Some(done));
        match handed_over {
            Ok(()) => {
                crate::crash_point!("raft::log::before_fsync");
                Ok(())
            }
            Err(e) => {
                self.appends.send_modify(|(_, finished)| *finished += 1);
                Err(err(e.into()))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        durably(|done| self.wal.truncate(log_id.index, Some(done)))
            .await
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
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
        durably(|done| self.wal.purge(to_pos(&log_id), Some(done)))
            .await
            .map_err(err)
    }
}

#[cfg(test)]
mod tests;
