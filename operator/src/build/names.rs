//! Object names and member DNS names. A member's identity is its stable DNS name, so the same
//! pod ordinal always comes back as the same member.

use super::{CLIENT_PORT, PEER_PORT};

/// The headless Service that gives each member `<pod>.<cluster>-peer.<ns>.svc`.
pub fn peer_service(cluster: &str) -> String {
    format!("{cluster}-peer")
}

/// The Service clients (and the operator) use.
pub fn client_service(cluster: &str) -> String {
    format!("{cluster}-client")
}

/// StatefulSet and PodDisruptionBudget share the cluster's name.
pub fn statefulset(cluster: &str) -> String {
    cluster.to_string()
}

pub fn member(cluster: &str, ordinal: i32) -> String {
    format!("{cluster}-{ordinal}")
}

/// The stable DNS name of a member pod, served by the peer Service.
pub fn member_host(cluster: &str, namespace: &str, member: &str) -> String {
    format!("{member}.{}.{namespace}.svc", peer_service(cluster))
}

pub fn member_peer_url(cluster: &str, namespace: &str, member: &str) -> String {
    format!(
        "http://{}:{PEER_PORT}",
        member_host(cluster, namespace, member)
    )
}

pub fn member_client_url(cluster: &str, namespace: &str, member: &str) -> String {
    format!(
        "http://{}:{CLIENT_PORT}",
        member_host(cluster, namespace, member)
    )
}

/// The client Service's URL, the operator's way in to the store.
pub fn client_url(cluster: &str, namespace: &str) -> String {
    format!(
        "http://{}.{namespace}.svc:{CLIENT_PORT}",
        client_service(cluster)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_urls_use_the_peer_service_dns_name() {
        assert_eq!(member("demo", 2), "demo-2");
        assert_eq!(
            member_host("demo", "db", "demo-2"),
            "demo-2.demo-peer.db.svc"
        );
        assert_eq!(
            member_peer_url("demo", "db", "demo-0"),
            "http://demo-0.demo-peer.db.svc:2380"
        );
        assert_eq!(
            member_client_url("demo", "db", "demo-0"),
            "http://demo-0.demo-peer.db.svc:2379"
        );
        assert_eq!(client_url("demo", "db"), "http://demo-client.db.svc:2379");
    }
}
