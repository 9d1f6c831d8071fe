//! The peer (headless) and client Services.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{common_labels, names, selector_labels, ClusterRef, CLIENT_PORT, PEER_PORT};

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn meta(cluster: &ClusterRef, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(cluster.namespace.clone()),
        labels: Some(common_labels(&cluster.name)),
        owner_references: Some(vec![cluster.owner.clone()]),
        ..Default::default()
    }
}

/// Headless, and publishing not-ready addresses: members must resolve each other before any of
/// them is ready, or the first election can never happen.
pub fn peer(cluster: &ClusterRef) -> Service {
    Service {
        metadata: meta(cluster, names::peer_service(&cluster.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&cluster.name)),
            ports: Some(vec![port("peer", PEER_PORT), port("client", CLIENT_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A ClusterIP Service over ready members only.
pub fn client(cluster: &ClusterRef) -> Service {
    Service {
        metadata: meta(cluster, names::client_service(&cluster.name)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(&cluster.name)),
            ports: Some(vec![port("client", CLIENT_PORT)]),
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
    fn peer_service_is_headless_and_publishes_unready_members() {
        let c = ClusterRef::new(&cluster("demo", serde_json::json!({}))).unwrap();
        let s = peer(&c);
        assert_eq!(s.metadata.name.as_deref(), Some("demo-peer"));
        let spec = s.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(spec.selector, Some(selector_labels("demo")));
        assert_eq!(s.metadata.owner_references.unwrap()[0].name, "demo");
    }

    #[test]
    fn client_service_routes_to_ready_members_on_2379() {
        let c = ClusterRef::new(&cluster("demo", serde_json::json!({}))).unwrap();
        let s = client(&c);
        assert_eq!(s.metadata.name.as_deref(), Some("demo-client"));
        let spec = s.spec.unwrap();
        assert_eq!(spec.publish_not_ready_addresses, None);
        assert_eq!(spec.ports.unwrap()[0].port, 2379);
    }
}
