//! Compaction: dropping versions no reader at or after the compact revision can see.
//!
//! For every change recorded below the compact revision C, the key's newest version at or below C
//! stays (unless it is a tombstone) and everything older goes. Older versions are deleted before a
//! tombstone, so a concurrent reader never sees a deleted key come back. Readers at revisions below
//! C are refused with `ErrCompacted` from the moment C is published.

use std::ops::Bound;

use super::keys;
use super::record::Version;
use super::{Mvcc, MvccError, Result};
use crate::storage::{space, Batch};

impl Mvcc {
    /// Checks that `revision` can become the compact revision.
    pub fn check_compact(&self, revision: i64) -> Result<()> {
        if revision <= self.compact_revision() {
            return Err(MvccError::Compacted);
        }
        if revision > self.current_revision() {
            return Err(MvccError::FutureRevision);
        }
        Ok(())
    }

    /// Publishes `revision` as the compact revision and removes what it made unreachable.
    pub fn compact(&self, revision: i64) -> Result<()> {
        let _hashers = self.compaction_guard();
        self.check_compact(revision)?;
        let previous = self.compact_revision();
        self.compacted
            .store(revision, std::sync::atomic::Ordering::Release);
        let backend = self.backend();
        let from = keys::revision_entry(previous.max(0), 0);
        let to = keys::revision_entry(revision, 0);
        let entries = backend.scan(Bound::Included(&from), Bound::Excluded(&to), false);
        for entry in entries {
            let (raw_key, user_key) = entry?;
            if raw_key.first() != Some(&space::REVISIONS) {
                break;
            }
            self.compact_key(&user_key, revision)?;
            backend.remove(&raw_key)?;
            crate::crash_point!("mvcc::compact::during");
        }
        Ok(())
    }

    /// Removes the versions of `key` that no read at or after `revision` can see.
    fn compact_key(&self, key: &[u8], revision: i64) -> Result<()> {
        let backend = self.backend();
        let start = keys::version(key, revision);
        let end = keys::after(key);
        let mut versions = backend.scan(Bound::Included(&start), Bound::Excluded(&end), false);
        let Some(first) = versions.next() else {
            return Ok(());
        };
        let (kept_key, kept_val) = first?;
        let mut older = Batch::default();
        for v in versions {
            older.delete(v?.0.into_vec());
        }
        backend.write(older)?;
        if Version::is_tombstone(&kept_val) {
            backend.remove(&kept_key)?;
        }
        Ok(())
    }
}
