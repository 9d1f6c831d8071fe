//! Pure builders: a CairnCluster in, the Kubernetes objects that run it out. No I/O here, so
//! every flag, name and probe is checked by unit tests.

pub mod flags;
pub mod names;
pub mod pdb;
pub mod probes;
pub mod services;
pub mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::crd::CairnCluster;

pub const CLIENT_PORT: i32 = 2379;
pub const PEER_PORT: i32 = 2380;
pub const METRICS_PORT: i32 = 2381;
/// Image repository used when `spec.image` is unset; the tag is `spec.version`.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "cairn";
/// The field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "cairn-operator";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("the CairnCluster has no {0}")]
    MissingMetadata(&'static str),
}

/// What every builder needs to know about the cluster, resolved once.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterRef {
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
    /// Stable for the object's lifetime; keeps a recreated cluster from joining an old one.
    pub token: String,
}

impl ClusterRef {
    pub fn new(cluster: &CairnCluster) -> Result<Self, BuildError> {
        let name = cluster
            .meta()
            .name
            .clone()
            .ok_or(BuildError::MissingMetadata("name"))?;
        let namespace = cluster
            .namespace()
            .ok_or(BuildError::MissingMetadata("namespace"))?;
        let owner = cluster
            .controller_owner_ref(&())
            .ok_or(BuildError::MissingMetadata("uid"))?;
        let token = format!("{name}-{}", owner.uid);
        Ok(Self {
            name,
            namespace,
            owner,
            token,
        })
    }
}

/// Labels that identify a cluster's pods; immutable in a StatefulSet, so never add to them.
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "cairn".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            cluster.to_string(),
        ),
    ])
}

/// Labels on every object the operator creates.
pub fn common_labels(cluster: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "cairn-operator".into(),
    );
    labels.insert("app.kubernetes.io/component".into(), "store".into());
    labels
}

/// `key=value,...` form of the selector, as the scale subresource wants it.
pub fn selector_string(cluster: &str) -> String {
    selector_labels(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Raft majority of `voters`: the members that must agree (and so must stay up).
pub fn quorum(voters: i32) -> i32 {
    voters.max(0) / 2 + 1
}

#[cfg(test)]
pub(crate) mod testutil {
    use crate::crd::{CairnCluster, CairnClusterSpec};

    /// A cluster as the API server would hand it over (name, namespace, uid, generation).
    pub fn cluster(name: &str, spec: serde_json::Value) -> CairnCluster {
        let spec: CairnClusterSpec = serde_json::from_value(spec).unwrap();
        let mut c = CairnCluster::new(name, spec);
        c.metadata.namespace = Some("db".into());
        c.metadata.uid = Some("1234-uid".into());
        c.metadata.generation = Some(1);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_is_a_strict_majority() {
        assert_eq!(
            [1, 3, 5, 7, 9].map(quorum),
            [1, 2, 3, 4, 5],
            "a cluster of n tolerates n - quorum failures"
        );
        assert_eq!(quorum(4), 3);
        assert_eq!(quorum(0), 1);
    }

    #[test]
    fn owner_ref_points_at_the_cluster_as_controller() {
        let c = testutil::cluster("demo", serde_json::json!({}));
        let r = ClusterRef::new(&c).unwrap();
        assert_eq!(r.owner.kind, "CairnCluster");
        assert_eq!(r.owner.api_version, "cairn.dev/v1alpha1");
        assert_eq!(r.owner.name, "demo");
        assert_eq!(r.owner.uid, "1234-uid");
        assert_eq!(r.owner.controller, Some(true));
        assert_eq!(r.token, "demo-1234-uid");
    }

    #[test]
    fn missing_uid_is_an_error_not_a_panic() {
        let mut c = testutil::cluster("demo", serde_json::json!({}));
        c.metadata.uid = None;
        assert_eq!(ClusterRef::new(&c), Err(BuildError::MissingMetadata("uid")));
    }

    #[test]
    fn selector_string_is_sorted_and_stable() {
        assert_eq!(
            selector_string("demo"),
            "app.kubernetes.io/instance=demo,app.kubernetes.io/name=cairn"
        );
        let common = common_labels("demo");
        for (k, v) in selector_labels("demo") {
            assert_eq!(
                common.get(&k),
                Some(&v),
                "common labels include the selector"
            );
        }
    }
}
