//! Process metrics, exposed at `/metrics` (server/http.rs) in Prometheus' text format.
//!
//! Names follow etcd's wherever the meaning is the same, so existing etcd dashboards and alerts
//! work unchanged against cairn. Two kinds of metric live here:
//! - event metrics (fsync latencies, failed proposals, leader changes, gRPC calls) updated on the
//!   hot paths through the free functions below, which cost an atomic op or two;
//! - state gauges (leadership, indexes, revisions, sizes) that are cheaper to read than to keep
//!   current, so the scraper computes a [`Sample`] from the running member and hands it to
//!   [`encode`].
//!
//! The registry is process-wide: one process runs one member.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The media type of what [`encode`] produces (OpenMetrics text, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of the per-RPC counters, as go-grpc-prometheus (used by etcd) names them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub grpc_type: &'static str,
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcHandledLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

/// etcd's label is capitalised: `To="<member id in hex>"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case)]
struct PeerLabels {
    To: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerVersionLabels {
    server_version: &'static str,
}

/// The state gauges, read from the member at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub has_leader: bool,
    pub is_leader: bool,
    pub committed_index: u64,
    pub applied_index: u64,
    pub proposals_pending: u64,
    pub db_size_bytes: u64,
    pub db_size_in_use_bytes: u64,
    pub keys_total: i64,
    pub current_revision: i64,
    pub compact_revision: i64,
}

struct Metrics {
    registry: Registry,
    // Scrape-time gauges.
    has_leader: Gauge,
    is_leader: Gauge,
    proposals_committed: Gauge,
    proposals_applied: Gauge,
    proposals_pending: Gauge,
    db_total_size: Gauge,
    db_total_size_in_use: Gauge,
    keys_total: Gauge,
    current_revision: Gauge,
    compact_revision: Gauge,
    // Event metrics.
    leader_changes: Counter,
    proposals_failed: Counter,
    commands_applied: Counter,
    wal_fsync: Histogram,
    backend_commit: Histogram,
    peer_round_trip: Family<PeerLabels, Histogram>,
    grpc_started: Family<GrpcLabels, Counter>,
    grpc_handled: Family<GrpcHandledLabels, Counter>,
}

/// etcd's disk latency buckets: 1ms doubling to ~8s (etcd/server/storage/wal/metrics.go).
fn disk_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// etcd's peer round-trip buckets: 100us doubling to ~0.8s (rafthttp/metrics.go).
fn round_trip_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 14))
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::default();
        let m = Metrics {
            has_leader: Gauge::default(),
            is_leader: Gauge::default(),
            proposals_committed: Gauge::default(),
            proposals_applied: Gauge::default(),
            proposals_pending: Gauge::default(),
            db_total_size: Gauge::default(),
            db_total_size_in_use: Gauge::default(),
            keys_total: Gauge::default(),
            current_revision: Gauge::default(),
            compact_revision: Gauge::default(),
            leader_changes: Counter::default(),
            proposals_failed: Counter::default(),
            commands_applied: Counter::default(),
            wal_fsync: disk_buckets(),
            backend_commit: disk_buckets(),
            peer_round_trip: Family::new_with_constructor(round_trip_buckets),
            grpc_started: Family::default(),
            grpc_handled: Family::default(),
            registry: Registry::default(),
        };
        // Gauges whose etcd names end in `_total` are registered under their full name (etcd
        // exposes them as gauges); counters get `_total` appended by the encoder.
        r.register(
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            m.has_leader.clone(),
        );
        r.register(
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            m.is_leader.clone(),
        );
        r.register(
            "etcd_server_leader_changes_seen",
            "The number of leader changes seen.",
            m.leader_changes.clone(),
        );
        r.register(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            m.proposals_committed.clone(),
        );
        r.register(
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            m.proposals_applied.clone(),
        );
        r.register(
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit.",
            m.proposals_pending.clone(),
        );
        r.register(
            "etcd_server_proposals_failed",
            "The total number of failed proposals seen.",
            m.proposals_failed.clone(),
        );
        r.register(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            m.db_total_size.clone(),
        );
        r.register(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.",
            m.db_total_size_in_use.clone(),
        );
        r.register(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
            m.wal_fsync.clone(),
        );
        r.register(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            m.backend_commit.clone(),
        );
        r.register(
            "etcd_network_peer_round_trip_time_seconds",
            "Round-Trip-Time histogram between peers",
            m.peer_round_trip.clone(),
        );
        r.register(
            "etcd_debugging_mvcc_keys_total",
            "Total number of keys.",
            m.keys_total.clone(),
        );
        r.register(
            "etcd_debugging_mvcc_current_revision",
            "The current revision of store.",
            m.current_revision.clone(),
        );
        r.register(
            "etcd_debugging_mvcc_compact_revision",
            "The revision of the last compaction in store.",
            m.compact_revision.clone(),
        );
        r.register(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            m.grpc_started.clone(),
        );
        r.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            m.grpc_handled.clone(),
        );
        let etcd_version: Family<ServerVersionLabels, Gauge> = Family::default();
        etcd_version
            .get_or_create(&ServerVersionLabels {
                server_version: crate::api::maintenance::ETCD_API_VERSION,
            })
            .set(1);
        r.register(
            "etcd_server_version",
            "Which version of etcd's API is running. 1 for 'server_version' label with current version.",
            etcd_version,
        );
        r.register(
            "cairn_build",
            "cairn's build information.",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register(
            "cairn_commands_applied",
            "Commands applied to the state machine by this process (etcd's proposals_applied_total is the applied index).",
            m.commands_applied.clone(),
        );
        Metrics { registry: r, ..m }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// A leader change as etcd counts it: a (possibly the same) leader became known after none or
/// another one was.
pub fn leader_changed() {
    METRICS.leader_changes.inc();
}

pub fn observe_wal_fsync(took: Duration) {
    WAL_FSYNCS.fetch_add(1, Ordering::Relaxed);
    METRICS.wal_fsync.observe(took.as_secs_f64());
}

pub fn observe_backend_commit(took: Duration) {
    METRICS.backend_commit.observe(took.as_secs_f64());
}

/// A round trip to peer `to` (a member id), for `etcd_network_peer_round_trip_time_seconds`.
pub fn observe_peer_round_trip(to: u64, took: Duration) {
    METRICS
        .peer_round_trip
        .get_or_create(&PeerLabels {
            To: format!("{to:x}"),
        })
        .observe(took.as_secs_f64());
}

pub fn proposal_applied() {
    METRICS.commands_applied.inc();
}

pub fn proposal_failed() {
    METRICS.proposals_failed.inc();
}

pub fn grpc_started(labels: &GrpcLabels) {
    METRICS.grpc_started.get_or_create(labels).inc();
}

/// An RPC finished with gRPC status `code` (its number, as on the wire).
pub fn grpc_handled(labels: &GrpcLabels, code: i32) {
    METRICS
        .grpc_handled
        .get_or_create(&GrpcHandledLabels {
            grpc_type: labels.grpc_type,
            grpc_service: labels.grpc_service,
            grpc_method: labels.grpc_method,
            grpc_code: grpc_code_name(code),
        })
        .inc();
}

/// gRPC's code names as Go's `codes.Code.String()` spells them (go-grpc-prometheus' labels).
pub fn grpc_code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

fn gauge_value<T: TryInto<i64>>(v: T) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

/// Sets the state gauges from `sample` and renders every metric.
pub fn encode(sample: &Sample) -> Result<String, std::fmt::Error> {
    let m = &*METRICS;
    m.has_leader.set(i64::from(sample.has_leader));
    m.is_leader.set(i64::from(sample.is_leader));
    m.proposals_committed
        .set(gauge_value(sample.committed_index));
    m.proposals_applied.set(gauge_value(sample.applied_index));
    m.proposals_pending
        .set(gauge_value(sample.proposals_pending));
    m.db_total_size.set(gauge_value(sample.db_size_bytes));
    m.db_total_size_in_use
        .set(gauge_value(sample.db_size_in_use_bytes));
    m.keys_total.set(sample.keys_total);
    m.current_revision.set(sample.current_revision);
    m.compact_revision.set(sample.compact_revision);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &m.registry)?;
    Ok(out)
}

// Kept alongside the histogram: a cheap count for tests and logs that do not parse exposition.
static WAL_FSYNCS: AtomicU64 = AtomicU64::new(0);

/// How many WAL fsyncs this process has made.
pub fn wal_fsyncs() -> u64 {
    WAL_FSYNCS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_etcd_names() {
        observe_wal_fsync(Duration::from_millis(3));
        proposal_failed();
        leader_changed();
        let labels = GrpcLabels {
            grpc_type: "unary",
            grpc_service: "etcdserverpb.KV",
            grpc_method: "Range",
        };
        grpc_started(&labels);
        grpc_handled(&labels, 0);
        let text = encode(&Sample {
            has_leader: true,
            applied_index: 7,
            ..Default::default()
        })
        .expect("encode");
        for line in [
            "etcd_server_has_leader 1",
            "etcd_server_is_leader 0",
            "etcd_server_proposals_applied_total 7",
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.004\"} ",
            "cairn_build_info{version=\"",
            "etcd_server_version{server_version=\"3.5.17\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains(
            "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"etcdserverpb.KV\",grpc_method=\"Range\",grpc_code=\"OK\"} "
        ));
        assert!(text.contains("etcd_server_leader_changes_seen_total "));
        assert!(text.contains("etcd_server_proposals_failed_total "));
        // A labelled family shows only once it has a series (as etcd's, which a lone member lacks).
        assert!(!text.contains("etcd_network_peer_round_trip_time_seconds"));
        observe_peer_round_trip(0xabc, Duration::from_micros(300));
        let text = encode(&Sample::default()).expect("encode");
        assert!(text.contains(
            "etcd_network_peer_round_trip_time_seconds_bucket{le=\"0.0004\",To=\"abc\"} 1"
        ));
    }
}
