//! `CairnCluster`: the declared shape of one cairn cluster and the status the operator reports.
//!
//! These types are the source of truth for the CRD (`cairn-operator crd` prints it). Field docs
//! become the schema's descriptions, so they are written for `kubectl explain` readers.

// kube's printcolumn(...) attributes repeat `type_`/`json_path`, which clippy misreads as duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backup::BackupSchedule;
use super::{DEFAULT_REPLICAS, DEFAULT_VERSION};

/// A cairn cluster: a fixed set of Raft members run as a StatefulSet.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cairn.dev",
    version = "v1alpha1",
    kind = "CairnCluster",
    namespaced,
    status = "CairnClusterStatus",
    shortname = "cairn",
    category = "cairn",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.leader"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CairnClusterSpec {
    /// Number of voting members. Raft needs a majority, so only odd sizes make sense: 1, 3, 5, 7 or 9.
    #[serde(default = "default_replicas")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 9 && self % 2 == 1").message("replicas must be odd and between 1 and 9"))]
    pub replicas: i32,

    /// cairn version to run; also the image tag unless `image` is set.
    #[serde(default = "default_version")]
    pub version: String,

    /// Full image reference; overrides the image derived from `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Persistent storage for each member's data directory.
    #[serde(default)]
    pub storage: StorageSpec,

    /// Compute resources of the store container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Pod affinity. When unset, members prefer to run on different nodes (anti-affinity by hostname).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Tolerations for the member pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Node selector for the member pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Extra labels on the member pods (the operator's own labels take precedence).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,

    /// Extra annotations on the member pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// Store tuning passed to every member as command-line flags.
    #[serde(default)]
    pub store: StoreOptions,

    /// Stop touching the cluster's Kubernetes objects (status is still reported).
    #[serde(default)]
    pub paused: bool,

    /// Transport security. Reserved: this operator version refuses `enabled: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// Scheduled backups. Reserved: accepted but not acted on by this operator version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSchedule>,
}

fn default_replicas() -> i32 {
    DEFAULT_REPLICAS
}

fn default_version() -> String {
    DEFAULT_VERSION.to_string()
}

/// What happens to a member's volume when the member goes away.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum VolumePolicy {
    /// Keep the PersistentVolumeClaim (and the data) for a human to decide.
    #[default]
    Retain,
    /// Delete the PersistentVolumeClaim.
    Delete,
}

impl VolumePolicy {
    /// The StatefulSet `persistentVolumeClaimRetentionPolicy` spelling (the same words).
    pub fn as_str(self) -> &'static str {
        match self {
            VolumePolicy::Retain => "Retain",
            VolumePolicy::Delete => "Delete",
        }
    }
}

/// Volume settings; one PersistentVolumeClaim per member.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size of each member's volume.
    #[serde(default = "default_storage_size")]
    pub size: Quantity,
    /// StorageClass of the volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Volume fate when the member count shrinks. Retain by default: data is never lost by accident.
    #[serde(default)]
    pub on_scale_down: VolumePolicy,
    /// Volume fate when the CairnCluster is deleted. Retain by default.
    #[serde(default)]
    pub on_delete: VolumePolicy,
}

fn default_storage_size() -> Quantity {
    Quantity("1Gi".to_string())
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            on_scale_down: VolumePolicy::Retain,
            on_delete: VolumePolicy::Retain,
        }
    }
}

/// How the store compacts old revisions automatically (etcd's `--auto-compaction-mode`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CompactionMode {
    /// Keep a time window of history (`autoCompactionRetention` is a duration such as `1h`).
    Periodic,
    /// Keep a number of revisions (`autoCompactionRetention` is a count such as `1000`).
    Revision,
}

impl CompactionMode {
    pub fn as_flag(self) -> &'static str {
        match self {
            CompactionMode::Periodic => "periodic",
            CompactionMode::Revision => "revision",
        }
    }
}

/// Store flags. Unset fields keep the store's own defaults.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.heartbeatInterval) || !has(self.electionTimeout) || self.electionTimeout >= 5 * self.heartbeatInterval").message("electionTimeout must be at least 5 times heartbeatInterval"))]
pub struct StoreOptions {
    /// Backend size limit in bytes (`--quota-backend-bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub quota_backend_bytes: Option<i64>,
    /// `--auto-compaction-mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_compaction_mode: Option<CompactionMode>,
    /// `--auto-compaction-retention`, e.g. `1h` (periodic) or `1000` (revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_compaction_retention: Option<String>,
    /// Applied entries between snapshots (`--snapshot-count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub snapshot_count: Option<i64>,
    /// Raft heartbeat interval in milliseconds (`--heartbeat-interval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub heartbeat_interval: Option<i64>,
    /// Raft election timeout in milliseconds (`--election-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub election_timeout: Option<i64>,
}

/// TLS settings; the TLS issue fills in the behaviour.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Serve clients and peers over TLS.
    #[serde(default)]
    pub enabled: bool,
    /// Secret (tls.crt, tls.key, ca.crt) for the client listener; operator-issued when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_name: Option<String>,
    /// Secret (tls.crt, tls.key, ca.crt) for the peer listener; operator-issued when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_secret_name: Option<String>,
    /// A cert-manager issuer to request certificates from instead of the operator's own CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager_issuer: Option<IssuerRef>,
}

/// Reference to a cert-manager Issuer or ClusterIssuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    pub name: String,
    /// `Issuer` or `ClusterIssuer`.
    #[serde(default = "default_issuer_kind")]
    pub kind: String,
}

fn default_issuer_kind() -> String {
    "Issuer".to_string()
}

/// The coarse state shown in `kubectl get`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Phase {
    /// Objects are being created; no member has answered yet.
    #[default]
    Pending,
    /// Every member is healthy and a leader exists.
    Running,
    /// The cluster answers but something is wrong (see the Degraded condition).
    Degraded,
    /// `spec.paused` is set: the operator leaves the objects alone.
    Paused,
    /// The spec cannot be acted on (see the Degraded condition and events).
    Invalid,
}

/// Observed state of a cairn cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CairnClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: Phase,
    /// Member pods that exist (the scale subresource's status replicas).
    #[serde(default)]
    pub replicas: i32,
    /// Member pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Members as the store reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// Name of the current leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Raft cluster id (hex), set once the cluster has bootstrapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Available, Progressing and Degraded, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Label selector of the member pods (for the scale subresource and HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// One member of the Raft group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub name: String,
    /// Member id in hex, as `cairn member list` prints it.
    pub id: String,
    pub is_learner: bool,
    pub is_leader: bool,
    /// The member answered a status request without errors and knows a leader.
    pub healthy: bool,
}
