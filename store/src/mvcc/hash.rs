//! HashKV: a checksum of the MVCC state as of a revision, equal on every member that applied the
//! same log (etcd's `HashByRev`).
//!
//! What is hashed is the logically compacted state as of the hash revision: every version (key
//! record and value record, tombstones included) in (compact revision, hash revision], plus
//! what compaction keeps of each key at or below the compact revision (its newest version there,
//! unless that is a tombstone). Hashing what compaction *keeps* rather than what is stored makes
//! the hash independent of how far each member's background compactor got. Versions above the
//! hash revision are skipped, so members at different current revisions still agree on the hash
//! of a common past revision. The result is only comparable between members reporting the same
//! compact revision, which is why it is returned with it (as etcd does).

use std::ops::Bound;

use super::keys;
use super::record::Version;
use super::{Mvcc, MvccError, Result};
use crate::storage::space;

/// A HashKV answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    /// The revision hashed up to (the current revision when 0 was asked for).
    pub hash_revision: i64,
    /// The compact revision the hash was taken at.
    pub compact_revision: i64,
}

/// Which revision a HashKV request hashes at, or etcd's error for it (a pure decision).
pub fn hash_revision(requested: i64, current: i64, compacted: i64) -> Result<i64> {
    if requested <= 0 {
        return Ok(current);
    }
    if requested > current {
        return Err(MvccError::FutureRevision);
    }
    if requested < compacted {
        return Err(MvccError::Compacted);
    }
    Ok(requested)
}

impl Mvcc {
    /// Hashes the MVCC state as of `revision` (<= 0: the current revision).
    ///
    /// Holds the compaction lock for the scan, so no compaction to a newer revision than the one
    /// read here removes versions under it. Writes are not blocked: they only add versions above
    /// the current revision, which the scan skips.
    pub fn hash_kv(&self, revision: i64) -> Result<KvHash> {
        let _compaction = self.compaction_guard();
        let compacted = self.compact_revision();
        let hash_revision = hash_revision(revision, self.current_revision(), compacted)?;
        let mut crc = crc32fast::Hasher::new();
        let from = [space::KV];
        let to = [space::KV + 1];
        // The user key of the previous version, and whether its kept version at or below the
        // compact revision was already seen (versions come newest first within a key).
        let mut previous: Option<Vec<u8>> = None;
        let mut kept_seen = false;
        for item in self
            .backend()
            .scan(Bound::Included(&from), Bound::Excluded(&to), false)
        {
            let (raw_key, value) = item?;
            let Some((user_key, rev)) = keys::decode_version(&raw_key) else {
                return Err(MvccError::Storage(format!(
                    "undecodable version key {raw_key:?}"
                )));
            };
            if rev > hash_revision {
                continue;
            }
            if previous.as_deref() != Some(user_key.as_slice()) {
                previous = Some(user_key);
                kept_seen = false;
            }
            if rev <= compacted {
                if kept_seen || Version::is_tombstone(&value) {
                    kept_seen = true;
                    continue;
                }
                kept_seen = true;
            }
            crc.update(&raw_key);
            crc.update(&value);
        }
        Ok(KvHash {
            hash: crc.finalize(),
            hash_revision,
            compact_revision: compacted,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::mvcc::NoLeases;
    use crate::proto::etcdserverpb::{DeleteRangeRequest, PutRequest};
    use crate::storage::SledBackend;

    fn store() -> (tempfile::TempDir, Mvcc) {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(SledBackend::open(dir.path()).unwrap());
        (dir, Mvcc::new(backend, 1, 0).unwrap())
    }

    fn put(m: &Mvcc, k: &str, v: &str) {
        let req = PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        };
        m.apply_put(&req, &NoLeases).unwrap();
    }

    fn del(m: &Mvcc, k: &str) {
        let req = DeleteRangeRequest {
            key: k.into(),
            ..Default::default()
        };
        m.apply_delete(&req, &NoLeases).unwrap();
    }

    /// The same writes on two stores give the same hash at every revision; a different value,
    /// a different key, or a delete gives a different one.
    #[test]
    fn deterministic_and_sensitive() {
        let (_a_dir, a) = store();
        let (_b_dir, b) = store();
        for m in [&a, &b] {
            put(m, "k1", "v1");
            put(m, "k2", "v2");
            del(m, "k1");
        }
        for rev in 1..=4 {
            assert_eq!(
                a.hash_kv(rev).unwrap(),
                b.hash_kv(rev).unwrap(),
                "rev {rev}"
            );
        }
        let at2 = a.hash_kv(2).unwrap();
        assert_ne!(at2.hash, a.hash_kv(3).unwrap().hash);
        assert_ne!(a.hash_kv(3).unwrap().hash, a.hash_kv(4).unwrap().hash);
        assert_eq!(a.hash_kv(0).unwrap().hash_revision, 4);

        // Writes after a revision do not change its hash.
        put(&a, "k3", "v3");
        assert_eq!(a.hash_kv(4).unwrap(), b.hash_kv(4).unwrap());
        put(&b, "k3", "other");
        assert_ne!(a.hash_kv(5).unwrap().hash, b.hash_kv(5).unwrap().hash);
    }

    #[test]
    fn compaction_keeps_hashes_comparable_and_refuses_old_revisions() {
        let (_a_dir, a) = store();
        let (_b_dir, b) = store();
        for m in [&a, &b] {
            put(m, "k", "1");
            put(m, "k", "2");
            put(m, "j", "3");
            m.compact(3).unwrap();
            put(m, "k", "4");
        }
        let ha = a.hash_kv(0).unwrap();
        assert_eq!(ha, b.hash_kv(0).unwrap());
        assert_eq!(ha.compact_revision, 3);
        assert_eq!(ha.hash_revision, 5);
        assert_eq!(a.hash_kv(2), Err(MvccError::Compacted));
        assert_eq!(a.hash_kv(6), Err(MvccError::FutureRevision));
        assert!(a.hash_kv(3).is_ok());
    }

    /// A member whose compactor has not removed anything yet hashes like one that finished.
    #[test]
    fn hash_is_independent_of_compaction_progress() {
        let (_a_dir, a) = store();
        let (_b_dir, b) = store();
        for m in [&a, &b] {
            put(m, "k", "1");
            put(m, "k", "2");
            put(m, "gone", "3");
            del(m, "gone");
            put(m, "at-c", "5");
            del(m, "at-c"); // a tombstone exactly at the compact revision
            put(m, "k", "7");
        }
        a.compact(6).unwrap();
        b.schedule_compaction(6).unwrap();
        assert_eq!(a.hash_kv(0).unwrap(), b.hash_kv(0).unwrap());
        assert_eq!(a.hash_kv(6).unwrap(), b.hash_kv(6).unwrap());
        while b.compact_step().unwrap() {}
        assert_eq!(a.hash_kv(0).unwrap(), b.hash_kv(0).unwrap());
        // Compaction still changes what is hashed: the versions it dropped are gone from it.
        let (_c_dir, c) = store();
        for (k, v) in [("k", "1"), ("k", "2"), ("gone", "3")] {
            put(&c, k, v);
        }
        del(&c, "gone");
        put(&c, "at-c", "5");
        del(&c, "at-c");
        put(&c, "k", "7");
        assert_ne!(c.hash_kv(0).unwrap().hash, a.hash_kv(0).unwrap().hash);
    }

    #[test]
    fn revision_choice() {
        assert_eq!(hash_revision(0, 9, 3), Ok(9));
        assert_eq!(hash_revision(3, 9, 3), Ok(3));
        assert_eq!(hash_revision(2, 9, 3), Err(MvccError::Compacted));
        assert_eq!(hash_revision(10, 9, 3), Err(MvccError::FutureRevision));
    }
}
