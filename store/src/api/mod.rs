//! The etcd v3 gRPC services, one module per service, as etcd's `v3rpc` has them.
//! Each handler validates (etcd's exact errors), then reads MVCC or proposes through Raft.

pub mod auth;
pub mod cluster;
pub mod concurrency;
pub mod election;
pub mod errors;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod validate;
pub mod watch;
