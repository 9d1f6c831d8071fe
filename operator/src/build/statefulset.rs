//! The StatefulSet that runs the members: stable names, one volume each, `cairn serve`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, SecurityContext, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::flags::{serve_args, POD_NAME_ENV, VOLUME_MOUNT_PATH};
use super::{
    common_labels, names, probes, selector_labels, ClusterRef, CLIENT_PORT,
    DEFAULT_IMAGE_REPOSITORY, METRICS_PORT, PEER_PORT,
};
use crate::crd::CairnClusterSpec;

pub const CONTAINER_NAME: &str = "cairn";
pub const VOLUME_NAME: &str = "data";
/// Time a member gets after SIGTERM to finish in-flight requests and hand off leadership.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;
/// The unprivileged uid/gid the image runs as (distroless "nonroot").
pub const RUN_AS: i64 = 65532;

/// The image a spec asks for: `spec.image`, else the default repository tagged with the version.
pub fn image(spec: &CairnClusterSpec) -> String {
    match spec.image.as_deref().map(str::trim) {
        Some(image) if !image.is_empty() => image.to_string(),
        _ => format!("{DEFAULT_IMAGE_REPOSITORY}:{}", spec.version.trim()),
    }
}

/// Members prefer different nodes; preferred, not required, so a small dev cluster still schedules.
pub fn default_affinity(cluster: &str) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".into(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(cluster)),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_labels(cluster: &ClusterRef, spec: &CairnClusterSpec) -> BTreeMap<String, String> {
    // The user's labels first, ours last: a user label can never break the selector.
    let mut labels = spec.pod_labels.clone();
    labels.extend(common_labels(&cluster.name));
    labels
}

fn container(cluster: &ClusterRef, spec: &CairnClusterSpec, members: i32) -> Container {
    let port = |name: &str, port: i32| ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(image(spec)),
        command: Some(vec!["cairn".into()]),
        args: Some(serve_args(cluster, members, &spec.store)),
        env: Some(vec![EnvVar {
            name: POD_NAME_ENV.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![
            port("client", CLIENT_PORT),
            port("peer", PEER_PORT),
            port("metrics", METRICS_PORT),
        ]),
        volume_mounts: Some(vec![VolumeMount {
            name: VOLUME_NAME.into(),
            mount_path: VOLUME_MOUNT_PATH.into(),
            ..Default::default()
        }]),
        resources: spec.resources.clone(),
        startup_probe: Some(probes::startup()),
        liveness_probe: Some(probes::liveness()),
        readiness_probe: Some(probes::readiness()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn volume_claim(cluster: &ClusterRef, spec: &CairnClusterSpec) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(VOLUME_NAME.into()),
            labels: Some(common_labels(&cluster.name)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    spec.storage.size.clone(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The StatefulSet for `members` members (which the caller decides; see `reconcile::decide`).
pub fn statefulset(cluster: &ClusterRef, spec: &CairnClusterSpec, members: i32) -> StatefulSet {
    let annotations = (!spec.pod_annotations.is_empty()).then(|| spec.pod_annotations.clone());
    StatefulSet {
        metadata: ObjectMeta {
            name: Some(names::statefulset(&cluster.name)),
            namespace: Some(cluster.namespace.clone()),
            labels: Some(common_labels(&cluster.name)),
            owner_references: Some(vec![cluster.owner.clone()]),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(members),
            service_name: Some(names::peer_service(&cluster.name)),
            // Parallel: with OrderedReady, member 0 waits to be Ready (which needs a quorum)
            // before member 1 is even created, and a multi-member cluster never bootstraps.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&cluster.name)),
                ..Default::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(spec.storage.on_delete.as_str().into()),
                    when_scaled: Some(spec.storage.on_scale_down.as_str().into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels(cluster, spec)),
                    annotations,
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container(cluster, spec, members)],
                    affinity: Some(
                        spec.affinity
                            .clone()
                            .unwrap_or_else(|| default_affinity(&cluster.name)),
                    ),
                    tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
                    node_selector: (!spec.node_selector.is_empty())
                        .then(|| spec.node_selector.clone()),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![volume_claim(cluster, spec)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::testutil::cluster;
    use serde_json::json;

    fn build(spec: serde_json::Value, members: i32) -> StatefulSet {
        let c = cluster("demo", spec);
        statefulset(&ClusterRef::new(&c).unwrap(), &c.spec, members)
    }

    fn pod(sts: &StatefulSet) -> (&ObjectMeta, &PodSpec) {
        let t = &sts.spec.as_ref().unwrap().template;
        (t.metadata.as_ref().unwrap(), t.spec.as_ref().unwrap())
    }

    #[test]
    fn defaults_give_three_parallel_members_on_the_peer_service() {
        let c = cluster("demo", json!({}));
        assert_eq!(c.spec.replicas, 3, "replicas default");
        let sts = build(json!({}), 3);
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("demo-peer"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let (_, p) = pod(&sts);
        assert_eq!(p.containers[0].image.as_deref(), Some("cairn:0.1.0"));
        assert_eq!(p.containers[0].command, Some(vec!["cairn".to_string()]));
        assert_eq!(p.termination_grace_period_seconds, Some(60));
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        let size = &claim
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"];
        assert_eq!(size.0, "1Gi");
    }

    #[test]
    fn default_affinity_prefers_spreading_by_hostname() {
        let sts = build(json!({}), 3);
        let (_, p) = pod(&sts);
        let terms = p
            .affinity
            .as_ref()
            .unwrap()
            .pod_anti_affinity
            .as_ref()
            .unwrap()
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap();
        assert_eq!(
            terms[0].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        assert_eq!(
            terms[0]
                .pod_affinity_term
                .label_selector
                .as_ref()
                .unwrap()
                .match_labels,
            Some(selector_labels("demo"))
        );
    }

    #[test]
    fn user_affinity_replaces_the_default() {
        let sts = build(json!({"affinity": {"nodeAffinity": {}}}), 3);
        let (_, p) = pod(&sts);
        assert!(p.affinity.as_ref().unwrap().pod_anti_affinity.is_none());
    }

    #[test]
    fn pod_labels_cannot_override_the_selector() {
        let sts = build(
            json!({"podLabels": {"team": "a", "app.kubernetes.io/instance": "evil"},
                   "podAnnotations": {"note": "x"}}),
            3,
        );
        let (meta, _) = pod(&sts);
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["team"], "a");
        assert_eq!(labels["app.kubernetes.io/instance"], "demo");
        assert_eq!(meta.annotations.as_ref().unwrap()["note"], "x");
    }

    #[test]
    fn storage_policies_map_to_the_pvc_retention_policy() {
        let sts = build(
            json!({"storage": {"size": "5Gi", "storageClassName": "fast", "onDelete": "Delete"}}),
            3,
        );
        let spec = sts.spec.unwrap();
        let policy = spec.persistent_volume_claim_retention_policy.unwrap();
        assert_eq!(policy.when_deleted.as_deref(), Some("Delete"));
        assert_eq!(policy.when_scaled.as_deref(), Some("Retain"));
        let claim = spec.volume_claim_templates.unwrap().remove(0).spec.unwrap();
        assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
    }

    #[test]
    fn image_override_tolerations_and_node_selector_pass_through() {
        let sts = build(
            json!({"image": "reg/cairn:sha", "tolerations": [{"key": "k", "operator": "Exists"}],
                   "nodeSelector": {"disk": "ssd"}}),
            3,
        );
        let (_, p) = pod(&sts);
        assert_eq!(p.containers[0].image.as_deref(), Some("reg/cairn:sha"));
        assert_eq!(p.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("k"));
        assert_eq!(p.node_selector.as_ref().unwrap()["disk"], "ssd");
    }

    #[test]
    fn runs_as_non_root_with_a_read_only_root() {
        let sts = build(json!({}), 1);
        let (_, p) = pod(&sts);
        assert_eq!(
            p.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        let c = p.containers[0].security_context.as_ref().unwrap();
        assert_eq!(c.read_only_root_filesystem, Some(true));
        assert_eq!(c.allow_privilege_escalation, Some(false));
    }

    #[test]
    fn members_argument_drives_replicas_and_initial_cluster() {
        let sts = build(json!({"replicas": 5}), 3);
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        let (_, p) = pod(&sts);
        let args = p.containers[0].args.as_ref().unwrap();
        let ic = args
            .iter()
            .find(|a| a.starts_with("--initial-cluster="))
            .unwrap();
        assert_eq!(ic.split(',').count(), 3, "{ic}");
    }
}
