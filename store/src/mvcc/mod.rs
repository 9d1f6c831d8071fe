//! Multi-version key-value state with etcd's revision semantics.
//!
//! Every change gets the store's next revision (a fresh store is at revision 1, so the first write
//! is revision 2); all changes of one Txn share a revision. Versions stay readable at past
//! revisions until compaction. The state machine (`raft::state_machine`) is the only writer; reads
//! run concurrently against the published revision, which only moves once a whole change is
//! written, so a reader never sees half a Txn.

mod compact;
mod hash;
mod index;
mod keys;
pub use keys::revision_of;
mod read;
mod record;
mod txn;
mod write;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::storage::{Backend, StorageError};

pub use hash::{hash_revision, KvHash};
pub use keys::{decode_revision_entry as decode_revision_key, revision_entry as revision_key};
pub use read::{KeyRange, RangeResult};
pub use record::Version;
pub use txn::TxnOutcome;
pub use write::{Change, WriteTxn};

/// Errors that etcd reports from its MVCC layer and request checks applied against state.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MvccError {
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("key not found")]
    KeyNotFound,
    #[error("requested lease not found")]
    LeaseNotFound,
    #[error("lease already exists")]
    LeaseExists,
    /// A write refused while the NOSPACE alarm is active.
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// A write refused while the CORRUPT alarm is active.
    #[error("corrupt cluster")]
    Corrupt,
    #[error("storage: {0}")]
    Storage(String),
}

impl From<StorageError> for MvccError {
    fn from(e: StorageError) -> Self {
        MvccError::Storage(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, MvccError>;

/// The lease bookkeeping MVCC needs: whether a lease exists, and which keys are attached to
/// which lease. The lease module implements it (a trait so MVCC does not depend on leases).
pub trait LeaseIndex {
    fn lease_exists(&self, id: i64) -> Result<bool>;
    fn attach(&self, _id: i64, _key: &[u8]) -> Result<()> {
        Ok(())
    }
    fn detach(&self, _id: i64, _key: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// For writes that never touch leases (read-only Txns).
pub struct NoLeases;

impl LeaseIndex for NoLeases {
    fn lease_exists(&self, _id: i64) -> Result<bool> {
        Ok(false)
    }
}

/// The MVCC store: revisioned versions in the backend plus the published revision counters.
pub struct Mvcc {
    backend: Arc<dyn Backend>,
    /// Which versions each key has, for reads and counts without walking the engine.
    index: index::KeyIndex,
    current: AtomicI64,
    compacted: AtomicI64,
    /// Held by a compaction step and by HashKV, so a hash never sees half a step.
    compaction: std::sync::Mutex<()>,
    /// Wakes the compactor thread, once started (`compact.rs`).
    compactor: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
    /// The compact revision whose garbage is all removed (for physical compaction requests).
    removed_below: tokio::sync::watch::Sender<i64>,
}

impl Mvcc {
    /// Wraps the backend, starting from revisions recorded by the state machine, and builds the
    /// key index from the versions stored there.
    pub fn new(backend: Arc<dyn Backend>, current: i64, compacted: i64) -> Result<Self> {
        let index = index::KeyIndex::default();
        index.rebuild(backend.as_ref())?;
        Ok(Self {
            backend,
            index,
            current: AtomicI64::new(current.max(1)),
            compacted: AtomicI64::new(compacted),
            compaction: std::sync::Mutex::new(()),
            compactor: std::sync::Mutex::new(None),
            removed_below: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The latest revision whose changes are complete and readable.
    pub fn current_revision(&self) -> i64 {
        self.current.load(Ordering::Acquire)
    }

    pub fn compact_revision(&self) -> i64 {
        self.compacted.load(Ordering::Acquire)
    }

    /// Holds compaction off: while held no stored version or revision-index entry is removed,
    /// and no Compact entry can be applied. HashKV and state-machine scans read under it.
    pub(crate) fn compaction_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is (), so a panic elsewhere leaves nothing inconsistent behind.
        self.compaction.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `compaction_guard` if nothing holds it now (a compaction step, HashKV, another scan).
    pub(crate) fn try_compaction_guard(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        match self.compaction.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    pub(crate) fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Scans the raw keyspace (for readers of the revision index, such as watch history).
    pub fn backend_scan(
        &self,
        from: std::ops::Bound<&[u8]>,
        to: std::ops::Bound<&[u8]>,
    ) -> crate::storage::Scan {
        self.backend.scan(from, to, false)
    }

    /// The stored record of `key` exactly at `revision`, if it still exists.
    pub fn raw_version(&self, key: &[u8], revision: i64) -> Result<Option<Box<[u8]>>> {
        Ok(self.backend.get(&keys::version(key, revision))?)
    }

    /// Restores the counters and the key index after a snapshot install replaced the data
    /// underneath.
    pub fn reset(&self, current: i64, compacted: i64) -> Result<()> {
        self.index.rebuild(self.backend.as_ref())?;
        self.current.store(current.max(1), Ordering::Release);
        self.compacted.store(compacted, Ordering::Release);
        // The installed data may carry garbage of a compaction its sender had not finished.
        self.wake_compactor();
        Ok(())
    }

    fn publish(&self, revision: i64) {
        self.current.store(revision, Ordering::Release);
    }

    /// Checks that `revision` (<= 0 means current) can be read, returning the revision to read at.
    pub fn check_read_revision(&self, revision: i64) -> Result<i64> {
        let current = self.current_revision();
        if revision <= 0 {
            return Ok(current);
        }
        if revision > current {
            return Err(MvccError::FutureRevision);
        }
        if revision < self.compact_revision() {
            return Err(MvccError::Compacted);
        }
        Ok(revision)
    }
}
