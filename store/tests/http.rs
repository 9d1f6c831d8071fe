//! The HTTP endpoints (/health, /livez, /readyz, /version, /metrics) of real cairn processes:
//! on the client port next to gRPC (HTTP/1.1 and h2c) and on `--listen-metrics-urls`.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{eventually, free_port, Cluster};

/// One HTTP answer: status, content type, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

#[derive(Clone, Copy)]
enum Proto {
    Http1,
    /// HTTP/2 with prior knowledge, as gRPC clients connect.
    H2c,
}

/// GET `path` from 127.0.0.1:`port` on a fresh connection.
async fn get_with(proto: Proto, port: u16, path: &str) -> Result<Answer, String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let io = TokioIo::new(stream);
    let req = hyper::Request::get(format!("http://127.0.0.1:{port}{path}"))
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = match proto {
        Proto::Http1 => {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            send.send_request(req).await
        }
        Proto::H2c => {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            send.send_request(req).await
        }
    }
    .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Answer {
        status,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

async fn get(port: u16, path: &str) -> Answer {
    match get_with(Proto::Http1, port, path).await {
        Ok(a) => a,
        Err(e) => panic!("GET {path} on port {port}: {e}"),
    }
}

fn json(a: &Answer) -> serde_json::Value {
    serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", a.body))
}

/// Samples of a Prometheus text exposition: `name{labels}` -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn value(s: &BTreeMap<String, f64>, series: &str) -> f64 {
    *s.get(series)
        .unwrap_or_else(|| panic!("no series {series} in {:#?}", s.keys()))
}

/// The metric names (sample names, after `_total`/`_bucket` suffixes) every scrape must carry.
const ETCD_SERIES: &[&str] = &[
    "etcd_server_has_leader",
    "etcd_server_is_leader",
    "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending",
    "etcd_server_proposals_failed_total",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_disk_wal_fsync_duration_seconds_count",
    "etcd_disk_backend_commit_duration_seconds_count",
    "etcd_debugging_mvcc_keys_total",
    "etcd_debugging_mvcc_current_revision",
    "etcd_debugging_mvcc_compact_revision",
];

fn assert_health(a: &Answer, healthy: bool) {
    let want = if healthy { 200 } else { 503 };
    assert_eq!(a.status, want, "{a:?}");
    assert!(a.content_type.starts_with("application/json"), "{a:?}");
    let v = json(a);
    assert_eq!(v["health"], if healthy { "true" } else { "false" }, "{a:?}");
    let reason = v["reason"].as_str().expect("reason is a string");
    assert_eq!(reason.is_empty(), healthy, "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_on_client_and_metrics_ports() {
    let metrics_port = free_port();
    let metrics_url = format!("http://127.0.0.1:{metrics_port}");
    let cluster = Cluster::start_with(1, &["--listen-metrics-urls", &metrics_url]).await;
    let client_port = cluster.members[0].client_port;

    for port in [client_port, metrics_port] {
        for path in [
            "/health",
            "/health?serializable=true",
            "/health?exclude=NOSPACE",
        ] {
            assert_health(&get(port, path).await, true);
        }
        let live = get(port, "/livez").await;
        assert_eq!((live.status, live.body.as_str()), (200, "ok"));
        let ready = get(port, "/readyz").await;
        assert_eq!((ready.status, ready.body.as_str()), (200, "ok"));

        let version = get(port, "/version").await;
        assert_eq!(version.status, 200);
        let v = json(&version);
        assert_eq!(v["etcdserver"], "3.5.17");
        assert_eq!(v["etcdcluster"], "3.5.0");
        assert_eq!(v["cairn"], env!("CARGO_PKG_VERSION"));

        assert_eq!(get(port, "/no/such/page").await.status, 404);
    }

    // The client port speaks h2c too (what gRPC clients open), for HTTP as for gRPC.
    let h2 = get_with(Proto::H2c, client_port, "/health")
        .await
        .expect("h2c /health");
    assert_health(&h2, true);

    let before = samples(&get(metrics_port, "/metrics").await.body);
    let mut client = cluster.members[0].client().await;
    const PUTS: usize = 5;
    for i in 0..PUTS {
        client
            .put(format!("k{i}"), "v", None)
            .await
            .expect("put through the client port that also serves HTTP");
    }
    let scrape = get(metrics_port, "/metrics").await;
    assert_eq!(scrape.status, 200);
    assert!(
        scrape
            .content_type
            .starts_with("application/openmetrics-text")
            || scrape.content_type.starts_with("text/plain"),
        "{}",
        scrape.content_type
    );
    let after = samples(&scrape.body);
    for name in ETCD_SERIES {
        value(&after, name);
    }
    assert!(scrape.body.contains("cairn_build_info{version=\""));
    assert_eq!(value(&after, "etcd_server_has_leader"), 1.0);
    assert_eq!(value(&after, "etcd_server_is_leader"), 1.0);
    assert!(value(&after, "etcd_server_leader_changes_seen_total") >= 1.0);
    let grew = |name: &str| value(&after, name) - value(&before, name);
    assert!(grew("etcd_server_proposals_applied_total") >= PUTS as f64);
    assert!(grew("etcd_server_proposals_committed_total") >= PUTS as f64);
    assert_eq!(grew("etcd_debugging_mvcc_current_revision"), PUTS as f64);
    assert_eq!(value(&after, "etcd_debugging_mvcc_keys_total"), PUTS as f64);
    assert!(grew("etcd_disk_wal_fsync_duration_seconds_count") >= PUTS as f64);
    assert!(value(&after, "etcd_mvcc_db_total_size_in_bytes") > 0.0);
    assert!(
        value(&after, "etcd_server_proposals_committed_total")
            >= value(&after, "etcd_server_proposals_applied_total")
    );
    let put = "{grpc_type=\"unary\",grpc_service=\"etcdserverpb.KV\",grpc_method=\"Put\"";
    assert_eq!(
        value(&after, &format!("grpc_server_started_total{put}}}")),
        PUTS as f64
    );
    assert_eq!(
        value(
            &after,
            &format!("grpc_server_handled_total{put},grpc_code=\"OK\"}}")
        ),
        PUTS as f64
    );

    // A failing RPC is counted with its code (a Range at a future revision: OutOfRange).
    let err = client
        .get(
            "k0",
            Some(etcd_client::GetOptions::new().with_revision(1_000_000)),
        )
        .await;
    assert!(err.is_err(), "{err:?}");
    let after = samples(&get(client_port, "/metrics").await.body);
    let range = "{grpc_type=\"unary\",grpc_service=\"etcdserverpb.KV\",grpc_method=\"Range\",grpc_code=\"OutOfRange\"}";
    assert_eq!(
        value(&after, &format!("grpc_server_handled_total{range}")),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_without_quorum_while_serializable_answers() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    for m in &cluster.members {
        assert_health(&get(m.client_port, "/health").await, true);
    }
    // Keep the leader alone: it still believes it leads, so only the quorum read can fail.
    for i in 0..3 {
        if i != leader {
            cluster.members[i].kill9();
        }
    }
    let port = cluster.members[leader].client_port;

    // Every answer comes within the health check's own bound (the request timeout: 5s + 2 x
    // election timeout = 6s here), never a hang.
    let bound = Duration::from_secs(10);
    let failed = eventually(Duration::from_secs(30), "/health to report 503", || async {
        let started = Instant::now();
        let a = get(port, "/health").await;
        assert!(started.elapsed() < bound, "took {:?}", started.elapsed());
        (a.status == 503).then_some(a)
    })
    .await;
    assert_health(&failed, false);

    // Local checks only: answered at once, whatever this member's view of the leader is.
    let started = Instant::now();
    let local = get(port, "/health?serializable=true").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let v = json(&local);
    match local.status {
        200 => assert_eq!(v["health"], "true"),
        503 => assert_eq!(v["reason"], "RAFT NO LEADER", "{local:?}"),
        other => panic!("unexpected status {other}: {local:?}"),
    }
    let live = get(port, "/livez").await;
    assert_eq!((live.status, live.body.as_str()), (200, "ok"));
    let started = Instant::now();
    let ready = get(port, "/readyz").await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(ready.status, 200 | 503), "{ready:?}");
    eprintln!(
        "without quorum: /health {} {:?}; serializable {} {:?}; readyz {}",
        failed.status, failed.body, local.status, local.body, ready.status
    );
}
