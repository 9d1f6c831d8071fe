//! Leases: the replicated lease table (`X` + id -> granted TTL) and key attachments
//! (`Y` + id + key), plus the leader-side [`lessor::Lessor`] that tracks expiry.
//!
//! Only grants and revocations go through Raft. Keep-alives refresh the leader's in-memory
//! deadline; a leader that takes over starts every lease's clock afresh (etcd's promote), so a
//! failover never expires leases early.

pub mod lessor;

use std::ops::Bound;
use std::sync::Arc;

use crate::mvcc::{LeaseIndex, MvccError};
use crate::storage::{space, Backend};

/// etcd's largest lease TTL, in seconds.
pub const MAX_TTL: i64 = 9_000_000_000;

fn lease_key(id: i64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = space::LEASES;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn attach_prefix(id: i64) -> [u8; 9] {
    let mut k = lease_key(id);
    k[0] = space::LEASE_KEYS;
    k
}

fn attach_key(id: i64, key: &[u8]) -> Vec<u8> {
    let mut k = attach_prefix(id).to_vec();
    k.extend_from_slice(key);
    k
}

/// A lease as the state machine stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRecord {
    pub id: i64,
    /// The TTL granted, in seconds.
    pub ttl: i64,
}

#[derive(Clone)]
pub struct Leases {
    backend: Arc<dyn Backend>,
}

impl Leases {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    pub fn get(&self, id: i64) -> Result<Option<LeaseRecord>, MvccError> {
        let raw = self.backend.get(&lease_key(id))?;
        Ok(raw.and_then(|r| {
            let bytes: [u8; 8] = r.as_ref().try_into().ok()?;
            Some(LeaseRecord {
                id,
                ttl: i64::from_be_bytes(bytes),
            })
        }))
    }

    pub fn grant(&self, id: i64, ttl: i64) -> Result<(), MvccError> {
        if self.get(id)?.is_some() {
            return Err(MvccError::LeaseExists);
        }
        self.backend.insert(&lease_key(id), &ttl.to_be_bytes())?;
        Ok(())
    }

    /// Drops the lease record (its keys are deleted through MVCC first, which detaches them).
    pub fn remove(&self, id: i64) -> Result<(), MvccError> {
        for key in self.keys(id)? {
            self.backend.remove(&attach_key(id, &key))?;
        }
        self.backend.remove(&lease_key(id))?;
        Ok(())
    }

    /// Keys attached to the lease, in key order.
    pub fn keys(&self, id: i64) -> Result<Vec<Vec<u8>>, MvccError> {
        let prefix = attach_prefix(id);
        let mut out = Vec::new();
        for item in crate::storage::scan_prefix(self.backend.as_ref(), &prefix) {
            let (k, _) = item?;
            out.push(k[prefix.len()..].to_vec());
        }
        Ok(out)
    }

    /// Every lease, by id.
    pub fn list(&self) -> Result<Vec<LeaseRecord>, MvccError> {
        let from = [space::LEASES];
        let to = [space::LEASES + 1];
        let mut out = Vec::new();
        for item in self
            .backend
            .scan(Bound::Included(&from), Bound::Excluded(&to), false)
        {
            let (k, v) = item?;
            let (Ok(id), Ok(ttl)) = (
                <[u8; 8]>::try_from(&k[1..]),
                <[u8; 8]>::try_from(v.as_ref()),
            ) else {
                return Err(MvccError::Storage(format!("corrupt lease record {k:?}")));
            };
            out.push(LeaseRecord {
                id: i64::from_be_bytes(id),
                ttl: i64::from_be_bytes(ttl),
            });
        }
        Ok(out)
    }
}

impl LeaseIndex for Leases {
    fn lease_exists(&self, id: i64) -> Result<bool, MvccError> {
        Ok(self.backend.get(&lease_key(id))?.is_some())
    }

    fn attach(&self, id: i64, key: &[u8]) -> Result<(), MvccError> {
        Ok(self.backend.insert(&attach_key(id, key), &[])?)
    }

    fn detach(&self, id: i64, key: &[u8]) -> Result<(), MvccError> {
        Ok(self.backend.remove(&attach_key(id, key))?)
    }
}

/// Answers a lease query as the leader.
pub fn answer(
    query: crate::raft::network::LeaseQuery,
    leases: &Leases,
    lessor: &lessor::Lessor,
    now: std::time::Instant,
) -> Result<i64, MvccError> {
    use crate::raft::network::LeaseQuery;
    // Leadership may be only moments old; the deadline clock starts no later than now.
    lessor.promote(now);
    match query {
        LeaseQuery::KeepAlive(id) => match leases.get(id)? {
            Some(l) => {
                lessor.refresh(id, now);
                Ok(l.ttl)
            }
            None => Ok(0),
        },
        LeaseQuery::TimeToLive(id) => match leases.get(id)? {
            Some(l) => Ok(lessor.remaining(&l, now)),
            None => Ok(-1),
        },
    }
}

/// The smallest TTL etcd grants: 1.5 election timeouts, rounded up to whole seconds.
pub fn min_ttl(election_timeout_ms: u64) -> i64 {
    ((3 * election_timeout_ms).div_ceil(2)).div_ceil(1000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_ttl_matches_etcd_defaults() {
        assert_eq!(min_ttl(1000), 2);
        assert_eq!(min_ttl(500), 1);
        assert_eq!(min_ttl(3000), 5);
    }

    #[test]
    fn grant_attach_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let leases = Leases::new(Arc::new(
            crate::storage::SledBackend::open(dir.path()).unwrap(),
        ));
        leases.grant(7, 10).unwrap();
        assert_eq!(leases.grant(7, 10), Err(MvccError::LeaseExists));
        leases.attach(7, b"b").unwrap();
        leases.attach(7, b"a").unwrap();
        assert_eq!(leases.keys(7).unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
        leases.detach(7, b"a").unwrap();
        assert_eq!(leases.list().unwrap(), vec![LeaseRecord { id: 7, ttl: 10 }]);
        leases.remove(7).unwrap();
        assert!(leases.list().unwrap().is_empty());
        assert!(leases.keys(7).unwrap().is_empty());
    }
}
