//! cairn's store: an etcd v3 compatible, Raft-replicated key-value store.
//!
//! The write path: `api` (validate) -> `server::node` (propose; followers forward to the leader)
//! -> `raft` (log, fsync, replicate) -> `raft::state_machine` (apply) -> `mvcc`. The read path:
//! `api` -> `server::node::read_index` (unless serializable) -> `mvcc` at a revision.
pub mod alarm;
pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod cluster;
#[cfg(feature = "failpoints")]
pub mod failpoints;
pub mod fuzzing;
pub mod lease;
pub mod metrics;
pub mod mvcc;
pub mod proto;
pub mod raft;
pub mod server;
pub mod snapshot;
pub mod storage;
pub mod tls;
pub mod wal;
pub mod watch;

/// A crash point for the fault-injection suite: a no-op unless the store is built with
/// `--features failpoints` and the point is armed through the `FAILPOINTS` environment variable
/// (see `failpoints.rs`).
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoints::eval($name);
    };
}
