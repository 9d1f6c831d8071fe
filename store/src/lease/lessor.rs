//! The leader's view of lease deadlines (not replicated).
//!
//! A lease's deadline is its last refresh on this member (grant applied, or keep-alive) plus its
//! TTL, but never earlier than the moment this member became leader plus the TTL: a new leader
//! gives every lease a full TTL, so leases never expire just because leadership moved.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::LeaseRecord;

#[derive(Default)]
struct State {
    /// When this member last became leader (None while it is not the leader).
    promoted_at: Option<Instant>,
    refreshed: HashMap<i64, Instant>,
}

#[derive(Default)]
pub struct Lessor {
    state: Mutex<State>,
}

impl Lessor {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_primary(&self) -> bool {
        self.lock().promoted_at.is_some()
    }

    /// This member became leader.
    pub fn promote(&self, now: Instant) {
        let mut s = self.lock();
        if s.promoted_at.is_none() {
            s.promoted_at = Some(now);
        }
    }

    /// This member is no longer leader.
    pub fn demote(&self) {
        self.lock().promoted_at = None;
    }

    pub fn refresh(&self, id: i64, now: Instant) {
        self.lock().refreshed.insert(id, now);
    }

    pub fn forget(&self, id: i64) {
        self.lock().refreshed.remove(&id);
    }

    /// When the lease expires, as far as this member knows.
    pub fn deadline(&self, lease: &LeaseRecord) -> Instant {
        let s = self.lock();
        deadline_of(
            s.promoted_at,
            s.refreshed.get(&lease.id).copied(),
            lease.ttl,
        )
    }

    /// Whole seconds left (at least 0), truncated as etcd reports them (`int64(Remaining().
    /// Seconds())`): just after a grant or keep-alive a 60s lease shows 59.
    pub fn remaining(&self, lease: &LeaseRecord, now: Instant) -> i64 {
        let left = self.deadline(lease).saturating_duration_since(now);
        left.as_secs() as i64
    }

    /// The leases past their deadline, if this member is the leader.
    pub fn expired(&self, leases: &[LeaseRecord], now: Instant) -> Vec<i64> {
        let s = self.lock();
        if s.promoted_at.is_none() {
            return Vec::new();
        }
        leases
            .iter()
            .filter(|l| deadline_of(s.promoted_at, s.refreshed.get(&l.id).copied(), l.ttl) <= now)
            .map(|l| l.id)
            .collect()
    }
}

/// A lease's deadline: its last refresh (or, unknown here, the promotion) plus its TTL, never
/// before the promotion plus its TTL.
pub fn deadline_of(promoted_at: Option<Instant>, refreshed: Option<Instant>, ttl: i64) -> Instant {
    let ttl = Duration::from_secs(ttl.max(0) as u64);
    let base = match (promoted_at, refreshed) {
        (Some(p), Some(r)) => p.max(r),
        (Some(p), None) => p,
        (None, Some(r)) => r,
        (None, None) => Instant::now(),
    };
    base + ttl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_leader_gives_every_lease_a_full_ttl() {
        let t0 = Instant::now();
        let lessor = Lessor::default();
        let lease = LeaseRecord { id: 1, ttl: 10 };
        lessor.refresh(1, t0);
        // Not leader: nothing expires, whatever the clock says.
        assert!(lessor
            .expired(&[lease], t0 + Duration::from_secs(60))
            .is_empty());
        // Promoted 8s after the grant: the lease lives until promotion + 10s, not grant + 10s.
        lessor.promote(t0 + Duration::from_secs(8));
        assert!(lessor
            .expired(&[lease], t0 + Duration::from_secs(12))
            .is_empty());
        assert_eq!(
            lessor.expired(&[lease], t0 + Duration::from_secs(18)),
            vec![1]
        );
    }

    #[test]
    fn keep_alive_extends_and_remaining_truncates() {
        let t0 = Instant::now();
        let lessor = Lessor::default();
        lessor.promote(t0);
        let lease = LeaseRecord { id: 2, ttl: 5 };
        lessor.refresh(2, t0 + Duration::from_secs(4));
        assert_eq!(
            lessor.remaining(&lease, t0 + Duration::from_millis(4500)),
            4
        );
        assert!(lessor
            .expired(&[lease], t0 + Duration::from_secs(8))
            .is_empty());
        assert_eq!(
            lessor.expired(&[lease], t0 + Duration::from_secs(9)),
            vec![2]
        );
        lessor.demote();
        assert!(lessor
            .expired(&[lease], t0 + Duration::from_secs(99))
            .is_empty());
    }
}
