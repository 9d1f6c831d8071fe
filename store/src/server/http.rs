//! Plain HTTP next to gRPC: `/health`, `/livez`, `/readyz`, `/version` and `/metrics`, with
//! etcd's shapes so probes, load balancers and dashboards written for etcd work against cairn.
//!
//! The client listeners serve these on the same port as gRPC (HTTP/1.1 and h2c; requests are told
//! apart by path, as etcd's cmux does), and `--listen-metrics-urls` serves them alone. This module
//! also holds the tower layer that counts gRPC calls for `grpc_server_*` metrics, and the task
//! that counts leader changes.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, Request, Response, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde::Serialize;

use crate::api::errors::ApiError;
use crate::metrics::{self, GrpcLabels, Sample};
use crate::server::node::Node;

/// What the HTTP handlers share: the member, and the last key count (counting keys walks the
/// whole keyspace, so it is redone only when the revision moved).
pub struct HttpState {
    node: Arc<Node>,
    keys_total: Mutex<Option<KeyCount>>,
}

#[derive(Clone, Copy)]
struct KeyCount {
    revision: i64,
    keys: i64,
}

impl HttpState {
    pub fn new(node: Arc<Node>) -> Arc<Self> {
        Arc::new(Self {
            node,
            keys_total: Mutex::new(None),
        })
    }
}

/// The HTTP endpoints alone (what `--listen-metrics-urls` serves).
pub fn router(state: Arc<HttpState>) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/version", get(version))
        .route("/metrics", get(metrics_handler))
        .with_state(state)
}

/// The client port's service: the gRPC services (counted by [`GrpcMetricsLayer`]), the HTTP
/// endpoints and the JSON gateway (`gateway`, under `/v3/`) on one router. Unknown paths answer
/// gRPC's Unimplemented to gRPC clients and 404 to everyone else.
pub fn with_grpc(
    grpc: tonic::service::Routes,
    state: Arc<HttpState>,
    gateway: axum::Router,
) -> tonic::service::Routes {
    let app = grpc
        .into_axum_router()
        .layer(GrpcMetricsLayer)
        .merge(router(state))
        .merge(gateway)
        .fallback(fallback);
    tonic::service::Routes::from(app)
}

async fn fallback(headers: HeaderMap) -> axum::response::Response {
    if is_grpc(&headers) {
        let (parts, ()) = tonic::Status::unimplemented("")
            .into_http::<()>()
            .into_parts();
        return Response::from_parts(parts, axum::body::Body::empty());
    }
    (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

// ---------------------------------------------------------------------------------------------
// /health, /livez, /readyz

/// etcd's `/health` body. Both fields are strings ("true"/"false"), as etcd writes them.
#[derive(Debug, Serialize)]
struct Health {
    health: &'static str,
    reason: String,
}

/// What `/health` was asked to skip.
#[derive(Debug, Default)]
struct HealthQuery {
    /// Local checks only: no quorum round trip (a follower cut off from the leader still passes).
    serializable: bool,
    /// Alarm names (etcd's `?exclude=NOSPACE`) that do not make the member unhealthy.
    exclude: Vec<String>,
}

impl HealthQuery {
    fn parse(query: Option<&str>) -> Self {
        let mut q = HealthQuery::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*k {
                "serializable" => q.serializable = v == "true",
                "exclude" => q.exclude.push(v.into_owned()),
                _ => {}
            }
        }
        q
    }
}

/// Why a check failed, worded as etcd's reasons are.
#[derive(Debug, thiserror::Error)]
enum Unhealthy {
    #[error("ALARM {0}")]
    Alarm(String),
    #[error("RAFT NO LEADER")]
    NoLeader,
    #[error("LINEARIZABLE READ FAILED: {0}")]
    ReadIndex(ApiError),
    #[error("LINEARIZABLE READ FAILED: timed out after {0:?}")]
    ReadIndexTimeout(Duration),
    #[error("RANGE ERROR:{0}")]
    Range(String),
}

/// Alarms currently raised in the cluster, by etcd's names (NOSPACE, CORRUPT).
///
/// cairn raises none yet; when the quota work adds replicated alarms this reads them from the
/// member, and `/health` and `?exclude=` already treat them as etcd does.
fn active_alarms(_node: &Node) -> Vec<String> {
    Vec::new()
}

/// etcd's health check: no unexcluded alarm, a known leader, and a read that works (a
/// linearizable one unless `serializable`), bounded by the request timeout like any client read.
async fn check_health(node: &Node, q: &HealthQuery) -> Result<(), Unhealthy> {
    if let Some(alarm) = active_alarms(node)
        .into_iter()
        .find(|a| !q.exclude.iter().any(|e| e.eq_ignore_ascii_case(a)))
    {
        return Err(Unhealthy::Alarm(alarm));
    }
    if node.current_leader().is_none() {
        return Err(Unhealthy::NoLeader);
    }
    if !q.serializable {
        let limit = node.request_timeout;
        match tokio::time::timeout(limit, node.read_index()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Unhealthy::ReadIndex(e)),
            Err(_) => return Err(Unhealthy::ReadIndexTimeout(limit)),
        }
    }
    local_read(node)
}

/// A read of one key from this member's state, as etcd's health range on the key "health".
fn local_read(node: &Node) -> Result<(), Unhealthy> {
    let mvcc = node.mvcc();
    let revision = mvcc
        .check_read_revision(0)
        .map_err(|e| Unhealthy::Range(e.to_string()))?;
    mvcc.get(b"health", revision)
        .map(|_| ())
        .map_err(|e| Unhealthy::Range(e.to_string()))
}

async fn health(State(state): State<Arc<HttpState>>, uri: Uri) -> axum::response::Response {
    let q = HealthQuery::parse(uri.query());
    let (status, body) = match check_health(&state.node, &q).await {
        Ok(()) => (
            StatusCode::OK,
            Health {
                health: "true",
                reason: String::new(),
            },
        ),
        Err(why) => {
            tracing::warn!(reason = %why, serializable = q.serializable, "/health failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Health {
                    health: "false",
                    reason: why.to_string(),
                },
            )
        }
    };
    json(status, &body)
}

/// Liveness: answering at all is the check (a wedged runtime does not answer).
async fn livez() -> &'static str {
    "ok"
}

/// Readiness: a leader is known and this member can serve a serializable read.
async fn readyz(State(state): State<Arc<HttpState>>) -> axum::response::Response {
    let q = HealthQuery {
        serializable: true,
        exclude: Vec::new(),
    };
    match check_health(&state.node, &q).await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("[-]{why}\nreadyz check failed\n"),
        )
            .into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// /version

#[derive(Debug, Serialize)]
struct Version {
    etcdserver: &'static str,
    etcdcluster: &'static str,
    cairn: &'static str,
}

/// The cluster version etcd reports for a 3.5 server (major.minor.0).
const ETCD_CLUSTER_VERSION: &str = "3.5.0";

async fn version() -> axum::response::Response {
    json(
        StatusCode::OK,
        &Version {
            etcdserver: crate::api::maintenance::ETCD_API_VERSION,
            etcdcluster: ETCD_CLUSTER_VERSION,
            cairn: env!("CARGO_PKG_VERSION"),
        },
    )
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> axum::response::Response {
    match serde_json::to_string(body) {
        Ok(text) => (status, [(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// /metrics

async fn metrics_handler(State(state): State<Arc<HttpState>>) -> axum::response::Response {
    // Sizing the database and counting keys touch the disk: off the async workers.
    let sampled = tokio::task::spawn_blocking(move || sample(&state)).await;
    let rendered = match sampled {
        Ok(s) => metrics::encode(&s).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match rendered {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "/metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, e).into_response()
        }
    }
}

/// Reads the state gauges from the member. A failing part (disk size, key count) is logged and
/// reported as 0 rather than failing the whole scrape: the other metrics still matter then.
fn sample(state: &HttpState) -> Sample {
    let node = &state.node;
    let m = node.raft.metrics().borrow().clone();
    let applied = m.last_applied.map_or(0, |l| l.index);
    let last_log = m.last_log_index.unwrap_or(0);
    let is_leader = m.current_leader == Some(node.id);
    let committed = if is_leader {
        quorum_matched(node.id, last_log, &m).max(applied)
    } else {
        // A follower learns the commit index only with the next append; what it applied is the
        // best lower bound it has.
        applied
    };
    let db_size = node.backend.size_on_disk().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "sizing the database for /metrics");
        0
    });
    let mvcc = node.mvcc();
    Sample {
        has_leader: m.current_leader.is_some(),
        is_leader,
        committed_index: committed,
        applied_index: applied,
        // Entries this member has in its log but not applied yet: what is still in flight
        // through Raft here (etcd counts its own in-flight proposals; close on the leader).
        proposals_pending: last_log.saturating_sub(applied),
        db_size_bytes: db_size,
        // sled does not report free pages; everything it occupies counts as in use.
        db_size_in_use_bytes: db_size,
        keys_total: keys_total(state),
        current_revision: mvcc.current_revision(),
        compact_revision: mvcc.compact_revision(),
    }
}

/// The highest log index a quorum of voters holds (the leader's view of the commit index).
fn quorum_matched(
    me: u64,
    my_last: u64,
    m: &openraft::RaftMetrics<crate::raft::NodeId, crate::raft::Member>,
) -> u64 {
    let membership = m.membership_config.membership();
    let mut matched: Vec<u64> = membership
        .voter_ids()
        .map(|id| {
            if id == me {
                return my_last;
            }
            m.replication
                .as_ref()
                .and_then(|r| r.get(&id).copied().flatten())
                .map_or(0, |l| l.index)
        })
        .collect();
    if matched.is_empty() {
        return 0;
    }
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched[matched.len() / 2]
}

fn keys_total(state: &HttpState) -> i64 {
    let mvcc = state.node.mvcc();
    let revision = mvcc.current_revision();
    if let Ok(guard) = state.keys_total.lock() {
        if let Some(c) = *guard {
            if c.revision == revision {
                return c.keys;
            }
        }
    }
    let req = crate::proto::etcdserverpb::RangeRequest {
        key: vec![0],
        range_end: vec![0],
        count_only: true,
        ..Default::default()
    };
    match mvcc.range(&req, revision) {
        Ok(r) => {
            if let Ok(mut guard) = state.keys_total.lock() {
                *guard = Some(KeyCount {
                    revision,
                    keys: r.count,
                });
            }
            r.count
        }
        Err(e) => {
            tracing::warn!(error = %e, "counting keys for /metrics");
            0
        }
    }
}

/// Counts leader changes as etcd does: each time a leader becomes known that differs from the
/// last one seen (including after a period with none). Runs for the life of the member.
pub async fn track_leader_changes(node: Arc<Node>) {
    let mut rx = node.raft.metrics();
    let mut last = None;
    loop {
        let leader = rx.borrow_and_update().current_leader;
        if leader.is_some() && leader != last {
            metrics::leader_changed();
        }
        last = leader;
        if rx.changed().await.is_err() {
            return; // Raft shut down.
        }
    }
}

// ---------------------------------------------------------------------------------------------
// gRPC call counting

/// Every RPC of etcd's API with go-grpc-prometheus' type label. Only these are counted, so a
/// client cannot grow the label set by calling made-up paths.
const RPCS: &[(&str, &str, &str)] = &[
    ("etcdserverpb.KV", "Range", "unary"),
    ("etcdserverpb.KV", "Put", "unary"),
    ("etcdserverpb.KV", "DeleteRange", "unary"),
    ("etcdserverpb.KV", "Txn", "unary"),
    ("etcdserverpb.KV", "Compact", "unary"),
    ("etcdserverpb.Watch", "Watch", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseGrant", "unary"),
    ("etcdserverpb.Lease", "LeaseRevoke", "unary"),
    ("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseTimeToLive", "unary"),
    ("etcdserverpb.Lease", "LeaseLeases", "unary"),
    ("etcdserverpb.Cluster", "MemberAdd", "unary"),
    ("etcdserverpb.Cluster", "MemberRemove", "unary"),
    ("etcdserverpb.Cluster", "MemberUpdate", "unary"),
    ("etcdserverpb.Cluster", "MemberList", "unary"),
    ("etcdserverpb.Cluster", "MemberPromote", "unary"),
    ("etcdserverpb.Maintenance", "Alarm", "unary"),
    ("etcdserverpb.Maintenance", "Status", "unary"),
    ("etcdserverpb.Maintenance", "Defragment", "unary"),
    ("etcdserverpb.Maintenance", "Hash", "unary"),
    ("etcdserverpb.Maintenance", "HashKV", "unary"),
    ("etcdserverpb.Maintenance", "Snapshot", "server_stream"),
    ("etcdserverpb.Maintenance", "MoveLeader", "unary"),
    ("etcdserverpb.Maintenance", "Downgrade", "unary"),
    ("etcdserverpb.Auth", "AuthEnable", "unary"),
    ("etcdserverpb.Auth", "AuthDisable", "unary"),
    ("etcdserverpb.Auth", "AuthStatus", "unary"),
    ("etcdserverpb.Auth", "Authenticate", "unary"),
    ("etcdserverpb.Auth", "UserAdd", "unary"),
    ("etcdserverpb.Auth", "UserGet", "unary"),
    ("etcdserverpb.Auth", "UserList", "unary"),
    ("etcdserverpb.Auth", "UserDelete", "unary"),
    ("etcdserverpb.Auth", "UserChangePassword", "unary"),
    ("etcdserverpb.Auth", "UserGrantRole", "unary"),
    ("etcdserverpb.Auth", "UserRevokeRole", "unary"),
    ("etcdserverpb.Auth", "RoleAdd", "unary"),
    ("etcdserverpb.Auth", "RoleGet", "unary"),
    ("etcdserverpb.Auth", "RoleList", "unary"),
    ("etcdserverpb.Auth", "RoleDelete", "unary"),
    ("etcdserverpb.Auth", "RoleGrantPermission", "unary"),
    ("etcdserverpb.Auth", "RoleRevokePermission", "unary"),
];

fn grpc_labels<B>(req: &Request<B>) -> Option<GrpcLabels> {
    if !is_grpc(req.headers()) {
        return None;
    }
    let (service, method) = req.uri().path().strip_prefix('/')?.split_once('/')?;
    rpc_labels(service, method)
}

/// The labels of one of etcd's RPCs (`etcdserverpb.KV`, `Range`); `None` for anything else.
pub(crate) fn rpc_labels(service: &str, method: &str) -> Option<GrpcLabels> {
    RPCS.iter()
        .find(|(s, m, _)| *s == service && *m == method)
        .map(|(s, m, t)| GrpcLabels {
            grpc_type: t,
            grpc_service: s,
            grpc_method: m,
        })
}

/// Counts `grpc_server_started_total` when a call arrives and `grpc_server_handled_total` with
/// its status when it ends: from the headers of a trailers-only reply (errors), from the
/// trailers after the last message otherwise, and as Canceled if the call is dropped unfinished.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for GrpcMetrics<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let labels = grpc_labels(&req);
        if let Some(l) = &labels {
            metrics::grpc_started(l);
        }
        let mut handled = Handled(labels);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let (parts, body) = resp.into_parts();
            if let Some(code) = grpc_status(&parts.headers) {
                handled.finish(code);
            }
            Ok(Response::from_parts(
                parts,
                MeteredBody {
                    inner: body,
                    handled,
                },
            ))
        })
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A call not yet counted as handled; counted as Canceled if dropped before its status is seen.
pub(crate) struct Handled(Option<GrpcLabels>);

impl Handled {
    /// Counts a call as started (the JSON gateway's calls count as gRPC calls, as in etcd,
    /// whose gateway is a gRPC client of its own server).
    pub(crate) fn start(labels: Option<GrpcLabels>) -> Self {
        if let Some(l) = &labels {
            metrics::grpc_started(l);
        }
        Handled(labels)
    }

    pub(crate) fn finish(&mut self, code: i32) {
        if let Some(l) = self.0.take() {
            metrics::grpc_handled(&l, code);
        }
    }
}

impl Drop for Handled {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled as i32);
    }
}

/// A response body that reports the call's status once the trailers carrying it go by.
pub struct MeteredBody<B> {
    inner: B,
    handled: Handled,
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.handled.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.handled.finish(tonic::Code::Unknown as i32),
            // Ended without a status: malformed for gRPC, which clients see as Unknown.
            Poll::Ready(None) => this.handled.finish(tonic::Code::Unknown as i32),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_query_reads_etcds_parameters() {
        let q = HealthQuery::parse(Some("serializable=true&exclude=NOSPACE&exclude=CORRUPT"));
        assert!(q.serializable);
        assert_eq!(q.exclude, vec!["NOSPACE", "CORRUPT"]);
        let q = HealthQuery::parse(None);
        assert!(!q.serializable && q.exclude.is_empty());
        assert!(!HealthQuery::parse(Some("serializable=false")).serializable);
    }

    #[test]
    fn only_known_grpc_calls_are_labelled() {
        let req = |path: &str, ct: &str| {
            Request::builder()
                .uri(path)
                .header(header::CONTENT_TYPE, ct)
                .body(())
                .expect("request")
        };
        let l = grpc_labels(&req("/etcdserverpb.Watch/Watch", "application/grpc"))
            .expect("watch is known");
        assert_eq!(
            (l.grpc_type, l.grpc_service, l.grpc_method),
            ("bidi_stream", "etcdserverpb.Watch", "Watch")
        );
        assert!(grpc_labels(&req("/etcdserverpb.KV/Range", "text/plain")).is_none());
        assert!(grpc_labels(&req("/made.Up/Call", "application/grpc")).is_none());
        assert!(grpc_labels(&req("/health", "application/grpc")).is_none());
    }
}
