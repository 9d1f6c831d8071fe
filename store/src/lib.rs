//! cairn's store: an etcd v3 compatible, Raft-replicated key-value store.
pub mod cli;
pub mod client;
pub mod proto;
