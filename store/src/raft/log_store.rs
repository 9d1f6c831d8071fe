//! The Raft log and vote in the storage backend.
//!
//! openraft's contract: a vote is durable before `save_vote` returns, and `append` reports
//! completion only once the entries are on disk. Both call the backend's `flush` (an fsync); one
//! `append` carries every entry openraft batched, so many proposals share one fsync.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};

use super::codec;
use super::{Entry, LogId, NodeId, TypeConfig};
use crate::storage::{space, Backend, Batch};

const VOTE: &[u8] = b"Rvote";
const PURGED: &[u8] = b"Rpurged";
const COMMITTED: &[u8] = b"Rcommitted";

fn log_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = space::RAFT_LOG;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

#[derive(Clone)]
pub struct LogStore {
    backend: Arc<dyn Backend>,
    /// Appends waiting for their fsync (see [`group_commit`]).
    flusher: std::sync::mpsc::Sender<LogFlushed<TypeConfig>>,
}

/// Group commit: one thread fsyncs for every append that arrived since its last fsync and then
/// reports them durable, in order. `append` itself returns as soon as the entries are written
/// (not yet durable), so openraft keeps accepting proposals while an fsync runs and the next
/// fsync covers all of them; nothing is reported durable before the fsync that covers it.
fn group_commit(
    backend: Arc<dyn Backend>,
    pending: std::sync::mpsc::Receiver<LogFlushed<TypeConfig>>,
) {
    while let Ok(first) = pending.recv() {
        let mut batch = vec![first];
        batch.extend(pending.try_iter());
        let started = std::time::Instant::now();
        crate::crash_point!("raft::log::before_fsync");
        let result = backend.flush();
        crate::crash_point!("raft::log::after_fsync");
        crate::metrics::observe_wal_fsync(started.elapsed());
        for callback in batch {
            callback.log_io_completed(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            });
        }
    }
}

impl LogStore {
    pub fn new(backend: Arc<dyn Backend>) -> std::io::Result<Self> {
        let (flusher, pending) = std::sync::mpsc::channel();
        let b = backend.clone();
        std::thread::Builder::new()
            .name("cairn-wal-fsync".into())
            .spawn(move || group_commit(b, pending))?;
        Ok(Self { backend, flusher })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError<NodeId>> {
        let raw = self
            .backend
            .get(key)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
        raw.map(|b| codec::decode("raft metadata", &b))
            .transpose()
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))
    }

    async fn flush(&self) -> Result<(), std::io::Error> {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || backend.flush())
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)
    }

    fn last_entry(&self) -> Result<Option<LogId>, StorageError<NodeId>> {
        let from = [space::RAFT_LOG];
        let to = [space::RAFT_LOG + 1];
        let mut scan = self
            .backend
            .scan(Bound::Included(&from), Bound::Excluded(&to), true);
        match scan.next() {
            None => Ok(None),
            Some(item) => {
                let (_, raw) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                let entry: Entry = codec::decode("log entry", &raw)
                    .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Ok(Some(entry.log_id))
            }
        }
    }

    fn delete_range(&self, from: u64, to_inclusive: u64) -> Result<(), StorageError<NodeId>> {
        let (a, b) = (log_key(from), log_key(to_inclusive));
        let mut batch = Batch::default();
        for item in self
            .backend
            .scan(Bound::Included(&a), Bound::Included(&b), false)
        {
            let (k, _) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
            batch.delete(k.into_vec());
        }
        self.backend
            .write(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let from = match range.start_bound() {
            Bound::Included(i) => log_key(*i),
            Bound::Excluded(i) => log_key(i.saturating_add(1)),
            Bound::Unbounded => log_key(0),
        };
        let to = match range.end_bound() {
            Bound::Included(i) => Bound::Included(log_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(log_key(*i)),
            Bound::Unbounded => Bound::Excluded(log_key(u64::MAX)),
        };
        let to_ref = match &to {
            Bound::Included(k) => Bound::Included(&k[..]),
            Bound::Excluded(k) => Bound::Excluded(&k[..]),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in self.backend.scan(Bound::Included(&from), to_ref, false) {
            let (_, raw) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let entry: Entry = codec::decode("log entry", &raw)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged: Option<LogId> = self.read_meta(PURGED)?;
        let last = self.last_entry()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let raw = codec::encode("vote", vote)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.backend
            .insert(VOTE, &raw)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.flush()
            .await
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta(VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), StorageError<NodeId>> {
        // Durable with the next fsync; losing it only means re-learning the commit index.
        let raw = codec::encode("committed", &committed)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.backend
            .insert(COMMITTED, &raw)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
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
        let mut batch = Batch::default();
        for entry in entries {
            let raw = codec::encode("log entry", &entry)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            batch.put(log_key(entry.log_id.index).to_vec(), raw);
        }
        self.backend
            .write(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        if let Err(std::sync::mpsc::SendError(callback)) = self.flusher.send(callback) {
            // The fsync thread is gone (only at shutdown): flush here instead.
            callback.log_io_completed(self.flush().await);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        self.delete_range(log_id.index, u64::MAX)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let raw = codec::encode("purged", &log_id)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        self.backend
            .insert(PURGED, &raw)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        self.delete_range(0, log_id.index)
    }
}
