//! The in-memory key index (etcd's treeIndex): for every user key, the revisions of its versions
//! still stored, so reads find the version visible at a revision, and count a range, without
//! walking the engine.
//!
//! The engine stays the truth; this is derived from it. It is built by one scan of the version
//! space when the store opens or a snapshot is installed, grows with every version written, and
//! shrinks with every version the compactor removes. Before it existed, a paged list counted the
//! rest of its range through sled's iterator on every page (a 10,000-key list visited about
//! 105,000 versions), and every point read opened a sled scan.
//!
//! Readers and the one writer share an `RwLock`; revisions above the published one are present
//! while a change is being written, and every read filters by its revision, as it does in the
//! engine, so a reader never sees half a change.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use smallvec::SmallVec;

use super::keys;
use super::read::KeyRange;
use super::record::Version;
use crate::storage::{Backend, StorageError};

/// A key's stored versions, oldest first: the revision, negated for a tombstone. Two inline
/// slots cover a key's live version plus one not yet compacted without a heap allocation.
type Revisions = SmallVec<[i64; 2]>;

fn revision_of(entry: i64) -> i64 {
    entry.abs()
}

/// The entry for the newest version of `revisions` at or below `revision`, if any.
fn at(revisions: &Revisions, revision: i64) -> Option<i64> {
    let after = revisions.partition_point(|&e| revision_of(e) <= revision);
    after.checked_sub(1).map(|i| revisions[i])
}

/// The revision of the live version visible at `revision` (None if absent or deleted there).
fn live_at(revisions: &Revisions, revision: i64) -> Option<i64> {
    at(revisions, revision).filter(|&e| e > 0)
}

/// Keys with the revision of the version each has at a read revision, in key order.
pub(crate) type Visible = Vec<(Vec<u8>, i64)>;

#[derive(Default)]
pub(crate) struct KeyIndex {
    keys: RwLock<BTreeMap<Box<[u8]>, Revisions>>,
}

impl KeyIndex {
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<Box<[u8]>, Revisions>> {
        // Every mutation leaves the map consistent between statements: a panicking holder
        // cannot leave half an entry behind, so a poisoned lock is still usable.
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<Box<[u8]>, Revisions>> {
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds the index from the versions stored in `backend`. This is start-up work for every
    /// key stored, so a key's versions are compared encoded and only its first one is decoded.
    pub(crate) fn rebuild(&self, backend: &dyn Backend) -> Result<(), StorageError> {
        let corrupt = |raw: &[u8]| StorageError::Corrupt {
            what: "key version",
            detail: format!("{raw:?}"),
        };
        // Keys arrive in order, so the map is bulk-built from a sorted list.
        let mut built: Vec<(Box<[u8]>, Revisions)> = Vec::new();
        // The encoded key part (`keys::split_version`) of the last entry of `built`.
        let mut prefix = Vec::new();
        for item in crate::storage::scan_prefix(backend, &[crate::storage::space::KV]) {
            let (raw_key, raw_val) = item?;
            let (key_part, revision) =
                keys::split_version(&raw_key).ok_or_else(|| corrupt(&raw_key))?;
            let entry = if Version::is_tombstone(&raw_val) {
                -revision
            } else {
                revision
            };
            match built.last_mut() {
                Some((_, revs)) if key_part == prefix.as_slice() => revs.push(entry),
                _ => {
                    let (key, _) =
                        keys::decode_version(&raw_key).ok_or_else(|| corrupt(&raw_key))?;
                    prefix.clear();
                    prefix.extend_from_slice(key_part);
                    built.push((key.into_boxed_slice(), SmallVec::from_elem(entry, 1)));
                }
            }
        }
        // The engine yields the newest version of a key first; the index keeps them oldest first.
        for (_, revs) in &mut built {
            revs.reverse();
        }
        *self.write() = built.into_iter().collect();
        Ok(())
    }

    /// Records a version of `key` written at `revision`. Re-recording one (re-applying an entry
    /// a crash interrupted) changes nothing.
    pub(crate) fn record(&self, key: &[u8], revision: i64, tombstone: bool) {
        let entry = if tombstone { -revision } else { revision };
        let mut keys = self.write();
        match keys.get_mut(key) {
            Some(revs) => {
                let at = revs.partition_point(|&e| revision_of(e) < revision);
                if revs.get(at).map(|&e| revision_of(e)) != Some(revision) {
                    revs.insert(at, entry);
                }
            }
            None => {
                keys.insert(key.into(), SmallVec::from_elem(entry, 1));
            }
        }
    }

    /// Forgets the version of `key` at `revision` (the compactor removed it).
    pub(crate) fn forget(&self, key: &[u8], revision: i64) {
        let mut keys = self.write();
        let Some(revs) = keys.get_mut(key) else {
            return;
        };
        revs.retain(|e| revision_of(*e) != revision);
        if revs.is_empty() {
            keys.remove(key);
        }
    }

    /// The revision of `key`'s live version at `revision`, if it has one.
    pub(crate) fn get(&self, key: &[u8], revision: i64) -> Option<i64> {
        self.read()
            .get(key)
            .and_then(|revs| live_at(revs, revision))
    }

    /// The live keys of `range` at `revision`: the first `keep` with the revision of their
    /// version, and how many there are in all.
    pub(crate) fn range(&self, range: &KeyRange, revision: i64, keep: usize) -> (Visible, usize) {
        let keys = self.read();
        let mut found = Visible::new();
        let mut count = 0usize;
        let mut visit = |key: &[u8], revs: &Revisions| {
            if let Some(r) = live_at(revs, revision) {
                count += 1;
                if found.len() < keep {
                    found.push((key.to_vec(), r));
                }
            }
        };
        match range {
            KeyRange::Single(key) => {
                if let Some(revs) = keys.get(key.as_slice()) {
                    visit(key, revs);
                }
            }
            // BTreeMap::range panics on an inverted span; an empty range has no keys anyway.
            KeyRange::Span { .. } if range.is_empty() => {}
            KeyRange::Span { start, end } => {
                let upper = match end {
                    Some(e) => Bound::Excluded(e.as_slice()),
                    None => Bound::Unbounded,
                };
                let span = (Bound::Included(start.as_slice()), upper);
                for (key, revs) in keys.range::<[u8], _>(span) {
                    visit(key, revs);
                }
            }
        }
        (found, count)
    }

    /// How many keys the index holds (live or not), for metrics and tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revs(entries: &[i64]) -> Revisions {
        entries.iter().copied().collect()
    }

    #[test]
    fn visibility_follows_revisions_and_tombstones() {
        let r = revs(&[3, 5, -8, 10]);
        assert_eq!(live_at(&r, 2), None);
        assert_eq!(live_at(&r, 3), Some(3));
        assert_eq!(live_at(&r, 7), Some(5));
        assert_eq!(live_at(&r, 8), None);
        assert_eq!(live_at(&r, 9), None);
        assert_eq!(live_at(&r, 100), Some(10));
    }

    #[test]
    fn record_is_idempotent_and_ordered() {
        let index = KeyIndex::default();
        index.record(b"k", 5, false);
        index.record(b"k", 3, false);
        index.record(b"k", 5, false);
        index.record(b"k", 7, true);
        assert_eq!(index.get(b"k", 4), Some(3));
        assert_eq!(index.get(b"k", 6), Some(5));
        assert_eq!(index.get(b"k", 7), None);
        index.forget(b"k", 3);
        assert_eq!(index.get(b"k", 4), None);
        index.forget(b"k", 5);
        index.forget(b"k", 7);
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn rebuild_reads_every_version_and_tombstone_back() {
        let dir = tempfile::tempdir().unwrap();
        let backend = crate::storage::open(&dir.path().join("db")).unwrap();
        let live = |value: &[u8]| Version {
            create_revision: 2,
            version: 1,
            lease: 0,
            value: value.to_vec(),
            tombstone: false,
        };
        // "a\0" escapes its zero byte and sorts between "a" and "b".
        for (key, revision, version) in [
            (&b"a"[..], 2, live(b"1")),
            (b"a", 5, live(b"2")),
            (b"a", 7, Version::tombstone()),
            (b"a\0", 3, live(b"x")),
            (b"b", 4, live(b"y")),
        ] {
            backend
                .insert(&keys::version(key, revision), &version.encode())
                .unwrap();
        }
        let index = KeyIndex::default();
        index.record(b"stale", 9, false);
        index.rebuild(&backend).unwrap();
        assert_eq!(index.len(), 3, "what was there before is replaced");
        assert_eq!(index.get(b"a", 4), Some(2));
        assert_eq!(index.get(b"a", 6), Some(5));
        assert_eq!(index.get(b"a", 7), None);
        assert_eq!(index.get(b"a\0", 3), Some(3));
        let (found, count) = index.range(&KeyRange::new(b"a", b"\0"), 6, usize::MAX);
        assert_eq!(count, 3);
        assert_eq!(found[1], (b"a\0".to_vec(), 3));
    }

    #[test]
    fn range_limits_but_counts_everything() {
        let index = KeyIndex::default();
        for (i, key) in [&b"a"[..], b"b", b"c", b"d", b"e"].iter().enumerate() {
            index.record(key, 2 + i as i64, false);
        }
        index.record(b"c", 9, true);
        let span = KeyRange::new(b"a", b"e");
        let (found, count) = index.range(&span, 100, 2);
        assert_eq!(found, vec![(b"a".to_vec(), 2), (b"b".to_vec(), 3)]);
        assert_eq!(count, 3, "a, b and d are live below e");
        let (all, count) = index.range(&span, 4, usize::MAX);
        assert_eq!((all.len(), count), (3, 3), "c is live at revision 4");
        let (one, count) = index.range(&KeyRange::new(b"d", b""), 100, 1);
        assert_eq!((one, count), (vec![(b"d".to_vec(), 5)], 1));
        let (inverted, count) = index.range(&KeyRange::new(b"d", b"b"), 100, 10);
        assert_eq!((inverted.len(), count), (0, 0));
        let (none, count) = index.range(&span, 100, 0);
        assert_eq!((none.len(), count), (0, 3), "counting keeps nothing");
    }
}
