//! Compaction: dropping versions no reader at or after the compact revision can see.
//!
//! For every change recorded below the compact revision C, the key's newest version at or below C
//! stays (unless it is a tombstone) and everything older goes.
//!
//! Compacting is two steps, as in etcd. Applying a Compact entry only *publishes* C: from that
//! moment reads below C are refused with `ErrCompacted`, and what C made unreachable is garbage.
//! The garbage is then removed in the background, a step of [`STEP`] revision-index entries at a
//! time, by the compactor thread ([`Mvcc::start_compactor`]). Removing it inside apply stalled
//! every write behind it: compacting 400,000 revisions took longer than a request's timeout.
//!
//! The revision index is its own progress record: a step deletes the index entries it handled,
//! so whatever is left below C is still to do, after a crash or a snapshot install as much as
//! while running. Every step is idempotent. Nothing a reader at or after C can see is ever
//! removed, so reads need no coordination with the compactor; HashKV hashes the logically
//! compacted state (see `hash.rs`), so it does not depend on how far the compactor got either.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

use super::keys;
use super::record::Version;
use super::{Mvcc, MvccError, Result};
use crate::storage::{space, Batch};

/// Revision-index entries handled per step: large enough to amortise a batch write, small enough
/// that a step holds the compaction lock (and delays a HashKV) for milliseconds, not seconds.
const STEP: usize = 1000;

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

    /// Publishes `revision` as the compact revision and wakes the compactor, which removes what
    /// it made unreachable (what applying a Compact entry does).
    pub fn schedule_compaction(&self, revision: i64) -> Result<()> {
        {
            let _hashers = self.compaction_guard();
            self.check_compact(revision)?;
            self.compacted
                .store(revision, std::sync::atomic::Ordering::Release);
        }
        self.wake_compactor();
        Ok(())
    }

    /// Publishes `revision` as the compact revision and removes what it made unreachable before
    /// returning (for tools and tests that want the work done inline).
    pub fn compact(&self, revision: i64) -> Result<()> {
        self.schedule_compaction(revision)?;
        while self.compact_step()? {}
        Ok(())
    }

    /// Waits until the garbage of compacting to `revision` is removed (etcd's `physical`).
    pub async fn wait_compacted(&self, revision: i64) {
        let mut removed = self.removed_below.subscribe();
        // Only fails if the sender is gone, i.e. this store is being dropped: nothing to wait for.
        let _ = removed.wait_for(|&r| r >= revision).await;
    }

    pub(super) fn wake_compactor(&self) {
        if let Some(wake) = self.compactor.lock().ok().and_then(|w| w.clone()) {
            // The compactor only stops when this store is dropped.
            let _ = wake.send(());
        }
    }

    /// Starts the thread that removes compaction garbage whenever a compaction is published,
    /// and once right away, to finish one that a crash or a snapshot install interrupted.
    pub fn start_compactor(self: &Arc<Self>) -> std::io::Result<()> {
        let (wake, woken) = std::sync::mpsc::channel::<()>();
        if let Ok(mut slot) = self.compactor.lock() {
            *slot = Some(wake);
        }
        // A weak handle, so the thread ends when the store is dropped (which drops `wake`).
        let store = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("cairn-compactor".into())
            .spawn(move || loop {
                if let Some(mvcc) = store.upgrade() {
                    mvcc.remove_garbage();
                }
                if woken.recv().is_err() {
                    return;
                }
                while woken.try_recv().is_ok() {}
            })?;
        Ok(())
    }

    /// Runs compaction steps until nothing below the compact revision is left.
    fn remove_garbage(&self) {
        let started = std::time::Instant::now();
        let mut steps = 0u64;
        loop {
            match self.compact_step() {
                Ok(true) => steps += 1,
                Ok(false) => break,
                Err(e) => {
                    // Retried on the next compaction or restart; reads are unaffected.
                    tracing::error!(error = %e, "compaction step failed");
                    return;
                }
            }
        }
        if steps > 0 {
            tracing::info!(
                compact_revision = self.compact_revision(),
                revisions = steps * STEP as u64,
                took = ?started.elapsed(),
                "finished compaction"
            );
        }
    }

    /// Removes the garbage of up to [`STEP`] revision-index entries below the compact revision.
    /// Returns whether entries may remain.
    pub fn compact_step(&self) -> Result<bool> {
        let _hashers = self.compaction_guard();
        let target = self.compact_revision();
        let backend = self.backend();
        let from = [space::REVISIONS];
        let to = keys::revision_entry(target, 0);
        let mut entries = Vec::new();
        let mut changed = BTreeSet::new();
        for entry in backend
            .scan(Bound::Included(&from), Bound::Excluded(&to), false)
            .take(STEP)
        {
            let (raw_key, user_key) = entry?;
            entries.push(raw_key);
            changed.insert(user_key);
        }
        let more = entries.len() == STEP;
        // Older versions go in a first write and tombstones in a second, so a concurrent reader
        // never sees a deleted key come back. The index entries go last: until they are gone,
        // a restart redoes this step.
        let mut older = Batch::default();
        let mut last = Batch::default();
        let mut removed = Vec::new();
        for key in &changed {
            self.collect_garbage(key, target, &mut older, &mut last, &mut removed)?;
        }
        backend.write(older)?;
        crate::crash_point!("mvcc::compact::during");
        for raw_key in entries {
            last.delete(raw_key.into_vec());
        }
        backend.write(last)?;
        for (key, revision) in removed {
            self.index.forget(&key, revision);
        }
        if !more {
            self.removed_below.send_replace(target);
        }
        Ok(more)
    }

    /// Adds the versions of `key` that no read at or after `revision` can see: the older ones to
    /// `older`, a tombstone that is the newest at or below `revision` to `tombstones`, and the
    /// revisions of both to `removed` (for the key index).
    fn collect_garbage(
        &self,
        key: &[u8],
        revision: i64,
        older: &mut Batch,
        tombstones: &mut Batch,
        removed: &mut Vec<(Vec<u8>, i64)>,
    ) -> Result<()> {
        let start = keys::version(key, revision);
        let end = keys::after(key);
        let mut versions =
            self.backend()
                .scan(Bound::Included(&start), Bound::Excluded(&end), false);
        let Some(first) = versions.next() else {
            return Ok(());
        };
        let (kept_key, kept_val) = first?;
        let mut forget = |raw: &[u8]| -> Result<()> {
            let (_, at) = keys::split_version(raw)
                .ok_or_else(|| MvccError::Storage(format!("corrupt version key {raw:?}")))?;
            removed.push((key.to_vec(), at));
            Ok(())
        };
        for v in versions {
            let raw = v?.0;
            forget(&raw)?;
            older.delete(raw.into_vec());
        }
        if Version::is_tombstone(&kept_val) {
            forget(&kept_key)?;
            tombstones.delete(kept_key.into_vec());
        }
        Ok(())
    }
}
