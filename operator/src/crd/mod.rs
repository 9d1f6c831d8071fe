//! Custom resource types (the CRD source of truth), their YAML rendering and the operator-side
//! validation of what the schema cannot express or an old API server might not enforce.

pub mod backup;
pub mod cluster;
pub mod validate;
pub mod yaml;

pub use backup::{CairnBackup, CairnBackupSpec, CairnBackupStatus};
pub use cluster::{
    CairnCluster, CairnClusterSpec, CairnClusterStatus, MemberStatus, Phase, StoreOptions,
    VolumePolicy,
};

/// Smallest and largest member counts; Raft majorities beyond 9 voters only cost latency.
pub const MIN_REPLICAS: i32 = 1;
pub const MAX_REPLICAS: i32 = 9;
pub const DEFAULT_REPLICAS: i32 = 3;
/// The store version (and image tag) used when `spec.version` is left out.
pub const DEFAULT_VERSION: &str = "0.1.0";
