//! Moving a Raft log that an older cairn kept somewhere else into the WAL, once, at start-up.
//!
//! - Before the WAL, cairn kept the log and vote in sled with the state machine (`R`, `L`).
//! - Then in `member/wal` as chunk files of the `raft-log` crate (`r-<offset>.wal`).
//!
//! Both moves are crash-safe: what is moved is durable in the WAL before its old copy goes, and
//! an interrupted move starts over from the old copy.

use std::io;
use std::path::{Path, PathBuf};

use openraft::Vote;
use raft_log::RaftLog;

use super::{to_pos, to_vote, LogId, NodeId};
use crate::raft::{codec, Entry};
use crate::storage::{space, Backend, Batch};
use crate::wal::{self, LogPos, VoteRec, Wal};

/// How raft-log stored cairn's log: ids as ((term, leader), index), entries bincode-encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftLogTypes;

type RlLogId = ((u64, u64), u64);
type RlVote = ((u64, u64), bool);

/// Reading an old log never flushes; the callback type is required by raft-log's API.
pub struct NoCallback;

impl raft_log::Callback for NoCallback {
    fn send(self, _res: io::Result<()>) {}
}

impl raft_log::Types for RaftLogTypes {
    type LogId = RlLogId;
    type LogPayload = Vec<u8>;
    type Vote = RlVote;
    type Callback = NoCallback;
    type UserData = ();

    fn log_index(log_id: &RlLogId) -> u64 {
        log_id.1
    }

    fn payload_size(payload: &Vec<u8>) -> u64 {
        payload.len() as u64
    }
}

fn rl_pos(&((term, node), index): &RlLogId) -> LogPos {
    LogPos { term, node, index }
}

/// Whether `dir` holds raft-log chunk files.
fn holds_raft_log(dir: &Path) -> io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(items) => {
            for item in items {
                let name = item?.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("r-") && name.ends_with(".wal") {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Replaces a raft-log directory at `dir` with a WAL holding the same log: the WAL is built
/// next to it (`wal.new`), made durable, then swapped in; the old one is removed last.
pub fn move_raft_log(dir: &Path, config: wal::Config) -> io::Result<()> {
    let staging = sibling(dir, ".new");
    let old = sibling(dir, ".raft-log");
    if holds_raft_log(&old)? && !holds_raft_log(dir)? && dir.exists() {
        // Interrupted after the swap: only the old copy is left to remove.
        std::fs::remove_dir_all(&old)?;
    }
    if !holds_raft_log(dir)? {
        return Ok(());
    }
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    let path = dir
        .to_str()
        .ok_or_else(|| io::Error::other(format!("WAL path {dir:?} is not UTF-8")))?;
    let mut rl_config = raft_log::Config::new(path);
    rl_config.wal.read_buffer_size = Some(1024 * 1024);
    let old_log = RaftLog::<RaftLogTypes>::open(std::sync::Arc::new(rl_config))?;
    let state = old_log.log_state().clone();
    tracing::info!(
        dir = %dir.display(),
        last = ?state.last().map(|l| l.1),
        "moving the Raft log from raft-log's chunk files into cairn's WAL"
    );
    {
        let wal = Wal::open(&staging, config)?;
        if let Some(&((term, node), committed)) = state.vote() {
            wal.save_vote(
                VoteRec {
                    term,
                    node,
                    committed,
                },
                None,
            )?;
        }
        if let Some(p) = state.purged() {
            wal.purge(rl_pos(p), None)?;
        }
        let from = state.purged().map_or(0, |p| p.1 + 1);
        let to = state.last().map_or(0, |l| l.1 + 1);
        let mut batch = Vec::new();
        for item in old_log.read(from, to) {
            let (id, payload) = item?;
            batch.push((rl_pos(&id), payload));
            if batch.len() >= 1000 {
                wal.append(std::mem::take(&mut batch), None)?;
            }
        }
        if !batch.is_empty() {
            wal.append(batch, None)?;
        }
        if let Some(c) = state.committed() {
            wal.commit(rl_pos(c))?;
        }
        wal.flush_blocking()?;
    }
    drop(old_log);
    std::fs::rename(dir, &old)?;
    std::fs::rename(&staging, dir)?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    std::fs::remove_dir_all(&old)
}

/// Where cairn before the WAL kept the vote and log bookkeeping in the backend.
pub const LEGACY_VOTE: &[u8] = b"Rvote";
pub const LEGACY_PURGED: &[u8] = b"Rpurged";
pub const LEGACY_COMMITTED: &[u8] = b"Rcommitted";

fn legacy_decode<T: serde::de::DeserializeOwned>(what: &'static str, raw: &[u8]) -> io::Result<T> {
    codec::decode(what, raw).map_err(io::Error::other)
}

/// Data dirs of cairn before the WAL kept the vote and log in the backend (`R` and `L`
/// spaces). Moves them into the (empty) WAL, durably, then removes them from the backend.
pub fn move_log_from_backend(wal: &Wal, backend: &dyn Backend) -> io::Result<()> {
    let state = wal.log_state();
    if state.vote.is_some() || state.last.is_some() {
        return Ok(());
    }
    let meta = |key: &[u8]| -> io::Result<Option<Box<[u8]>>> {
        backend.get(key).map_err(io::Error::other)
    };
    let mut moved = Batch::default();
    if let Some(raw) = meta(LEGACY_VOTE)? {
        let vote: Vote<NodeId> = legacy_decode("vote", &raw)?;
        wal.save_vote(to_vote(&vote), None)?;
        moved.delete(LEGACY_VOTE.to_vec());
    }
    if let Some(raw) = meta(LEGACY_PURGED)? {
        let purged: LogId = legacy_decode("purged log id", &raw)?;
        wal.purge(to_pos(&purged), None)?;
        moved.delete(LEGACY_PURGED.to_vec());
    }
    let mut entries = Vec::new();
    for item in crate::storage::scan_prefix(backend, &[space::RAFT_LOG]) {
        let (key, raw) = item.map_err(io::Error::other)?;
        let entry: Entry = legacy_decode("log entry", &raw)?;
        entries.push((to_pos(&entry.log_id), raw.into_vec()));
        moved.delete(key.into_vec());
    }
    if !entries.is_empty() {
        wal.append(entries, None)?;
    }
    if let Some(raw) = meta(LEGACY_COMMITTED)? {
        let committed: Option<LogId> = legacy_decode("committed log id", &raw)?;
        let last = wal.log_state().last;
        if let Some(c) = committed.map(|c| to_pos(&c)).filter(|c| Some(*c) <= last) {
            wal.commit(c)?;
        }
        moved.delete(LEGACY_COMMITTED.to_vec());
    }
    if moved.is_empty() {
        return Ok(());
    }
    tracing::info!(
        records = moved.len(),
        "moving the Raft log from the state machine's database into the WAL"
    );
    wal.flush_blocking()?;
    backend.write(moved).map_err(io::Error::other)?;
    backend.flush().map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_log::api::raft_log_writer::RaftLogWriter;

    /// A raft-log directory written as cairn before this WAL did, with a vote, a purge point,
    /// entries after it and a commit index.
    fn write_raft_log(dir: &Path, entries: std::ops::RangeInclusive<u64>) {
        std::fs::create_dir_all(dir).unwrap();
        let mut config = raft_log::Config::new(dir.to_str().unwrap());
        config.wal.chunk_max_size = Some(4096); // several chunks
        let mut log = RaftLog::<RaftLogTypes>::open(std::sync::Arc::new(config)).unwrap();
        log.save_vote(((3, 2), true)).unwrap();
        log.purge(((1, 1), *entries.start() - 1)).unwrap();
        for i in entries.clone() {
            let payload = format!("entry {i}").repeat(20).into_bytes();
            log.append([(((2, 1), i), payload)]).unwrap();
        }
        log.commit(((2, 1), *entries.end() - 1)).unwrap();
        log.flush(true, None).unwrap();
        log.wait_worker_idle().unwrap();
    }

    #[test]
    fn a_raft_log_directory_becomes_a_wal_with_the_same_log() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("wal");
        write_raft_log(&dir, 5..=60);
        let config = wal::Config {
            segment_size: 1 << 16,
            cache_bytes: 1024,
        };
        move_raft_log(&dir, config).unwrap();
        assert!(!holds_raft_log(&dir).unwrap());
        assert!(!sibling(&dir, ".raft-log").exists() && !sibling(&dir, ".new").exists());

        let wal = Wal::open(&dir, config).unwrap();
        let state = wal.log_state();
        let pos = |term, index| LogPos {
            term,
            node: 1,
            index,
        };
        assert_eq!(
            state.vote,
            Some(VoteRec {
                term: 3,
                node: 2,
                committed: true
            })
        );
        assert_eq!(state.purged, Some(pos(1, 4)));
        assert_eq!(state.last, Some(pos(2, 60)));
        assert_eq!(state.committed, Some(pos(2, 59)));
        let read = wal.read(0, 100).unwrap();
        assert_eq!(read.len(), 56);
        assert_eq!(&read[10].1[..], "entry 15".repeat(20).as_bytes());

        // Moving again finds nothing to move.
        drop(wal);
        move_raft_log(&dir, config).unwrap();
        assert_eq!(Wal::open(&dir, config).unwrap().log_state(), state);
    }

    #[test]
    fn a_move_interrupted_before_the_swap_starts_over() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("wal");
        write_raft_log(&dir, 1..=10);
        // A half-built staging directory from an earlier attempt.
        let staging = sibling(&dir, ".new");
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join("0000000000000000.wal"), b"garbage").unwrap();
        let config = wal::Config::default();
        move_raft_log(&dir, config).unwrap();
        let wal = Wal::open(&dir, config).unwrap();
        assert_eq!(wal.log_state().last.map(|l| l.index), Some(10));
    }
}
