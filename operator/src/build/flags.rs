//! The `cairn serve` command line of a member, derived from the spec.
//!
//! Per-pod values come from `$(POD_NAME)`, which the kubelet expands from the downward-API
//! environment variable, so one pod template serves every ordinal.

use super::names;
use super::{ClusterRef, CLIENT_PORT, METRICS_PORT, PEER_PORT};
use crate::crd::StoreOptions;

/// Where the PersistentVolumeClaim is mounted; the data dir sits below it so the volume's
/// `lost+found` never confuses the store.
pub const VOLUME_MOUNT_PATH: &str = "/var/lib/cairn";
pub const DATA_DIR: &str = "/var/lib/cairn/data";
/// Environment variable the pod template fills with the pod's own name.
pub const POD_NAME_ENV: &str = "POD_NAME";

/// `--initial-cluster`: every member's name and peer URL, ordinals `0..members`.
pub fn initial_cluster(cluster: &ClusterRef, members: i32) -> String {
    (0..members.max(0))
        .map(|i| {
            let m = names::member(&cluster.name, i);
            format!(
                "{m}={}",
                names::member_peer_url(&cluster.name, &cluster.namespace, &m)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The full argument list after the `cairn` binary (starting with `serve`).
pub fn serve_args(cluster: &ClusterRef, members: i32, store: &StoreOptions) -> Vec<String> {
    let own_host = names::member_host(
        &cluster.name,
        &cluster.namespace,
        &format!("$({POD_NAME_ENV})"),
    );
    let mut args = vec![
        "serve".to_string(),
        format!("--name=$({POD_NAME_ENV})"),
        format!("--data-dir={DATA_DIR}"),
        format!("--listen-client-urls=http://0.0.0.0:{CLIENT_PORT}"),
        format!("--advertise-client-urls=http://{own_host}:{CLIENT_PORT}"),
        format!("--listen-peer-urls=http://0.0.0.0:{PEER_PORT}"),
        format!("--initial-advertise-peer-urls=http://{own_host}:{PEER_PORT}"),
        format!("--listen-metrics-urls=http://0.0.0.0:{METRICS_PORT}"),
        format!("--initial-cluster={}", initial_cluster(cluster, members)),
        // Only read when a member starts on an empty data dir: restarts keep their identity from
        // the volume. Members added later by scaling join with `existing` (the scaling issue).
        "--initial-cluster-state=new".to_string(),
        format!("--initial-cluster-token={}", cluster.token),
    ];
    if let Some(v) = store.heartbeat_interval {
        args.push(format!("--heartbeat-interval={v}"));
    }
    if let Some(v) = store.election_timeout {
        args.push(format!("--election-timeout={v}"));
    }
    if let Some(v) = store.quota_backend_bytes {
        args.push(format!("--quota-backend-bytes={v}"));
    }
    if let Some(v) = store.auto_compaction_mode {
        args.push(format!("--auto-compaction-mode={}", v.as_flag()));
    }
    if let Some(v) = &store.auto_compaction_retention {
        args.push(format!("--auto-compaction-retention={v}"));
    }
    if let Some(v) = store.snapshot_count {
        args.push(format!("--snapshot-count={v}"));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::testutil::cluster;
    use crate::crd::cluster::CompactionMode;

    fn cref() -> ClusterRef {
        ClusterRef::new(&cluster("demo", serde_json::json!({}))).unwrap()
    }

    #[test]
    fn initial_cluster_lists_every_member_by_dns_name() {
        assert_eq!(
            initial_cluster(&cref(), 3),
            "demo-0=http://demo-0.demo-peer.db.svc:2380,\
             demo-1=http://demo-1.demo-peer.db.svc:2380,\
             demo-2=http://demo-2.demo-peer.db.svc:2380"
        );
        assert_eq!(
            initial_cluster(&cref(), 1),
            "demo-0=http://demo-0.demo-peer.db.svc:2380"
        );
    }

    #[test]
    fn default_args_bootstrap_a_new_cluster_with_the_pod_name() {
        let args = serve_args(&cref(), 3, &StoreOptions::default());
        assert_eq!(args[0], "serve");
        for expected in [
            "--name=$(POD_NAME)",
            "--data-dir=/var/lib/cairn/data",
            "--listen-client-urls=http://0.0.0.0:2379",
            "--advertise-client-urls=http://$(POD_NAME).demo-peer.db.svc:2379",
            "--listen-peer-urls=http://0.0.0.0:2380",
            "--initial-advertise-peer-urls=http://$(POD_NAME).demo-peer.db.svc:2380",
            "--listen-metrics-urls=http://0.0.0.0:2381",
            "--initial-cluster-state=new",
            "--initial-cluster-token=demo-1234-uid",
        ] {
            assert!(
                args.iter().any(|a| a == expected),
                "missing {expected} in {args:?}"
            );
        }
        assert!(
            !args.iter().any(|a| a.starts_with("--snapshot-count")),
            "unset options stay unset"
        );
    }

    #[test]
    fn store_options_become_flags() {
        let opts = StoreOptions {
            quota_backend_bytes: Some(8 << 30),
            auto_compaction_mode: Some(CompactionMode::Periodic),
            auto_compaction_retention: Some("1h".into()),
            snapshot_count: Some(10_000),
            heartbeat_interval: Some(100),
            election_timeout: Some(1000),
        };
        let args = serve_args(&cref(), 1, &opts);
        for expected in [
            "--quota-backend-bytes=8589934592",
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=1h",
            "--snapshot-count=10000",
            "--heartbeat-interval=100",
            "--election-timeout=1000",
        ] {
            assert!(
                args.iter().any(|a| a == expected),
                "missing {expected} in {args:?}"
            );
        }
    }
}
