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
pub mod lease;
pub mod metrics;
pub mod mvcc;
pub mod proto;
pub mod raft;
pub mod server;
pub mod snapshot;
pub mod storage;
pub mod tls;
pub mod watch;
