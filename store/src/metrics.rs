//! Process-wide counters the store updates on its hot paths. Exposition in Prometheus format
//! (with etcd's metric names) comes with the metrics endpoint; the counters exist now so the
//! paths that feed them are instrumented from the start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static WAL_FSYNCS: AtomicU64 = AtomicU64::new(0);
static WAL_FSYNC_MICROS: AtomicU64 = AtomicU64::new(0);
static PROPOSALS_APPLIED: AtomicU64 = AtomicU64::new(0);
static PROPOSALS_FAILED: AtomicU64 = AtomicU64::new(0);

pub fn observe_wal_fsync(took: Duration) {
    WAL_FSYNCS.fetch_add(1, Ordering::Relaxed);
    WAL_FSYNC_MICROS.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
}

pub fn proposal_applied() {
    PROPOSALS_APPLIED.fetch_add(1, Ordering::Relaxed);
}

pub fn proposal_failed() {
    PROPOSALS_FAILED.fetch_add(1, Ordering::Relaxed);
}

/// (fsync count, total fsync time, proposals applied, proposals failed).
pub fn snapshot() -> (u64, Duration, u64, u64) {
    (
        WAL_FSYNCS.load(Ordering::Relaxed),
        Duration::from_micros(WAL_FSYNC_MICROS.load(Ordering::Relaxed)),
        PROPOSALS_APPLIED.load(Ordering::Relaxed),
        PROPOSALS_FAILED.load(Ordering::Relaxed),
    )
}
