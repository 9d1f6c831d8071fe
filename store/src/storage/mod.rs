//! The narrow storage interface cairn needs from a key-value engine, and its sled implementation.
//!
//! The replicated state machine (MVCC state, leases, auth, membership) lives in one ordered
//! keyspace, partitioned by a one-byte prefix (see [`space`]). The Raft log and vote are not
//! here but in their own write-ahead log (`raft/log_store.rs`): acknowledged writes are durable
//! there, and this keyspace is flushed in the background, before the log is purged, and when a
//! snapshot is installed; a crash re-applies what it lost from the log. Keeping the interface
//! this small is what lets sled be replaced by another engine (redb, fjall) if measurements say
//! so.

mod sled_backend;

use std::ops::Bound;
use std::path::Path;

pub use sled_backend::SledBackend;

/// Key prefixes of the one keyspace. Each module owns the layout under its prefix.
pub mod space {
    /// Raft log entries: `L` + index (u64 BE). Only in data dirs of cairn before the WAL, which
    /// moves them out at start-up.
    pub const RAFT_LOG: u8 = b'L';
    /// `R` + name: the member identity; in data dirs of cairn before the WAL also the Raft vote,
    /// last purged log id and commit index, which are moved to the WAL at start-up.
    pub const RAFT_META: u8 = b'R';
    /// MVCC key versions: `K` + escaped user key + terminator + inverted revision.
    pub const KV: u8 = b'K';
    /// MVCC revision index: `E` + revision (u64 BE) + sub-revision (u32 BE) -> user key.
    pub const REVISIONS: u8 = b'E';
    /// State-machine metadata (applied log id, revisions, membership, members): `M` + name.
    pub const SM_META: u8 = b'M';
    /// Leases: `X` + lease id -> granted TTL.
    pub const LEASES: u8 = b'X';
    /// Keys attached to leases: `Y` + lease id + user key.
    pub const LEASE_KEYS: u8 = b'Y';
    /// The keyspaces that make up the replicated state machine (what a snapshot carries).
    pub const STATE_MACHINE: [u8; 5] = [KV, REVISIONS, SM_META, LEASES, LEASE_KEYS];
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage engine error while {action}: {source}")]
    Engine {
        action: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("corrupt record under {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A set of writes applied atomically.
#[derive(Default, Debug)]
pub struct Batch {
    pub(crate) ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }
    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// A key-value pair read from the engine.
pub type Pair = (Box<[u8]>, Box<[u8]>);

/// An ordered scan; items are read lazily so a limited range never loads more than it returns.
pub type Scan = Box<dyn Iterator<Item = Result<Pair>> + Send>;

/// What cairn needs of a storage engine: ordered keys, atomic batches, and an explicit fsync.
pub trait Backend: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Box<[u8]>>>;
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<()>;
    fn remove(&self, key: &[u8]) -> Result<()>;
    /// Applies every write of the batch or none of them.
    fn write(&self, batch: Batch) -> Result<()>;
    /// Scans `[from, to)` in key order (or reverse order).
    fn scan(&self, from: Bound<&[u8]>, to: Bound<&[u8]>, reverse: bool) -> Scan;
    /// Makes every write so far durable (fsync).
    fn flush(&self) -> Result<()>;
    /// Bytes the engine occupies on disk.
    fn size_on_disk(&self) -> Result<u64>;
    /// Bytes of live data (etcd's "in use"); engines that cannot tell report the size on disk.
    fn size_in_use(&self) -> Result<u64> {
        self.size_on_disk()
    }
    /// Gives space freed by deletes and compaction back to the file system, if the engine can;
    /// the default only makes everything durable.
    fn defragment(&self) -> Result<()> {
        self.flush()
    }
}

/// Opens the default engine (sled) in `dir`.
pub fn open(dir: &Path) -> Result<SledBackend> {
    SledBackend::open(dir)
}

/// The smallest key greater than every key starting with `prefix`, if one exists.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Every pair under each of the one-byte `spaces`, space by space, in key order (for readers of
/// the whole state machine: snapshots, hashes, snapshot installs).
pub fn scan_spaces<'a>(
    backend: &'a dyn Backend,
    spaces: &'a [u8],
) -> impl Iterator<Item = Result<Pair>> + 'a {
    spaces.iter().flat_map(move |s| scan_prefix(backend, &[*s]))
}

/// Scans every key that starts with `prefix`.
pub fn scan_prefix(backend: &dyn Backend, prefix: &[u8]) -> Scan {
    let end = prefix_end(prefix);
    let to = match &end {
        Some(e) => Bound::Excluded(e.as_slice()),
        None => Bound::Unbounded,
    };
    backend.scan(Bound::Included(prefix), to, false)
}
