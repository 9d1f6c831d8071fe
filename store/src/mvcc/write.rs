//! Writing one revision: puts and deletes that all take the store's next revision.
//!
//! Versions are written straight to the backend under the new revision, but readers only see
//! revisions up to the published one, so nothing is visible until [`WriteTxn::commit`]. Looking up
//! a key's previous version always reads at the revision before this one, which makes re-applying
//! a half-applied entry after a crash produce exactly the same writes.

use super::keys;
use super::read::KeyRange;
use super::record::Version;
use super::{LeaseIndex, Mvcc, Result};
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::{Event, KeyValue};

/// One change made by a revision, as watchers see it.
pub type Change = Event;

pub struct WriteTxn<'a> {
    mvcc: &'a Mvcc,
    leases: &'a dyn LeaseIndex,
    revision: i64,
    sub: u32,
    changes: Vec<Change>,
}

impl<'a> WriteTxn<'a> {
    pub fn begin(mvcc: &'a Mvcc, leases: &'a dyn LeaseIndex) -> Self {
        Self {
            mvcc,
            leases,
            revision: mvcc.current_revision() + 1,
            sub: 0,
            changes: Vec::new(),
        }
    }

    /// The revision reads inside this txn see: the new one once something changed.
    pub fn read_revision(&self) -> i64 {
        if self.changes.is_empty() {
            self.revision - 1
        } else {
            self.revision
        }
    }

    pub fn mvcc(&self) -> &Mvcc {
        self.mvcc
    }

    fn record(&mut self, key: &[u8], version: &Version) -> Result<()> {
        let backend = self.mvcc.backend();
        backend.insert(&keys::version(key, self.revision), &version.encode())?;
        backend.insert(&keys::revision_entry(self.revision, self.sub), key)?;
        self.mvcc
            .index
            .record(key, self.revision, version.tombstone);
        self.sub += 1;
        Ok(())
    }

    /// Writes `value` to `key`; returns the previous live version.
    pub fn put(&mut self, key: &[u8], value: Vec<u8>, lease: i64) -> Result<Option<KeyValue>> {
        let prev = self.mvcc.get(key, self.revision - 1)?;
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (self.revision, 1),
        };
        let v = Version {
            create_revision,
            version,
            lease,
            value,
            tombstone: false,
        };
        self.record(key, &v)?;
        if let Some(p) = prev.as_ref().filter(|p| p.lease != 0 && p.lease != lease) {
            self.leases.detach(p.lease, key)?;
        }
        if lease != 0 {
            self.leases.attach(lease, key)?;
        }
        self.changes.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(v.into_kv(key.to_vec(), self.revision)),
            prev_kv: prev.clone(),
        });
        Ok(prev)
    }

    /// Deletes every live key in `range`; returns the deleted versions in key order.
    pub fn delete_range(&mut self, range: &KeyRange) -> Result<Vec<KeyValue>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let deleted = self.mvcc.scan(range, self.revision - 1)?;
        for prev in &deleted {
            self.record(&prev.key, &Version::tombstone())?;
            if prev.lease != 0 {
                self.leases.detach(prev.lease, &prev.key)?;
            }
            self.changes.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: prev.key.clone(),
                    mod_revision: self.revision,
                    ..Default::default()
                }),
                prev_kv: Some(prev.clone()),
            });
        }
        Ok(deleted)
    }

    /// Publishes the revision if anything changed; returns the revision the store is now at and
    /// the changes in order.
    pub fn commit(self) -> (i64, Vec<Change>) {
        if self.changes.is_empty() {
            return (self.revision - 1, self.changes);
        }
        self.mvcc.publish(self.revision);
        (self.revision, self.changes)
    }
}
