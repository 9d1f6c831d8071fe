//! PodDisruptionBudget: voluntary evictions may never take the cluster below quorum.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{common_labels, names, quorum, selector_labels, ClusterRef};

pub fn pdb(cluster: &ClusterRef, voters: i32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(names::statefulset(&cluster.name)),
            namespace: Some(cluster.namespace.clone()),
            labels: Some(common_labels(&cluster.name)),
            owner_references: Some(vec![cluster.owner.clone()]),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(quorum(voters))),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&cluster.name)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::testutil::cluster;

    #[test]
    fn min_available_is_the_quorum() {
        let c = ClusterRef::new(&cluster("demo", serde_json::json!({}))).unwrap();
        for (voters, q) in [(1, 1), (3, 2), (5, 3)] {
            let spec = pdb(&c, voters).spec.unwrap();
            assert_eq!(spec.min_available, Some(IntOrString::Int(q)));
        }
    }
}
