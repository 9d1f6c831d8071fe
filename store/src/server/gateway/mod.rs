//! etcd's JSON gateway: the v3 API as `POST /v3/<service>/<rpc>` with JSON bodies, on the client
//! port next to gRPC, for curl and HTTP-only clients.
//!
//! Every path dispatches to the same service implementation gRPC clients use (`api::*`), so the
//! two can never disagree; this module only translates JSON <-> messages (`json.rs`) and streams
//! (`stream.rs`). gRPC requests never reach it: they are routed by their `/package.Service/Rpc`
//! paths, which no gateway path matches.
//!
//! Observable behaviour follows etcd 3.4's grpc-gateway (checked against a real etcd 3.4.23):
//! paths under `/v3/` and `/v3beta/` (3.4; 3.5 kept only `/v3/`), POST only (405 otherwise), an
//! unknown path under them answers 404 `Not Found`, CORS headers on every answer.

mod json;
mod stream;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::cluster::ClusterService;
use crate::api::election::ElectionService;
use crate::api::kv::KvService;
use crate::api::lease::LeaseService;
use crate::api::lock::LockService;
use crate::api::maintenance::MaintenanceService;
use crate::api::watch::WatchService;
use crate::proto::etcdserverpb::auth_server::Auth;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::watch_server::Watch;
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3lockpb::lock_server::Lock;
use crate::server::http;
use crate::server::node::Node;
use crate::watch::stream::WatchConfig;
use json::json_response;
use stream::{bidi, stream_response, OnBodyEnd};

/// Every RPC the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Range,
    Put,
    DeleteRange,
    Txn,
    Compact,
    Watch,
    LeaseGrant,
    LeaseRevoke,
    LeaseKeepAlive,
    LeaseTimeToLive,
    LeaseLeases,
    MemberAdd,
    MemberRemove,
    MemberUpdate,
    MemberList,
    MemberPromote,
    Alarm,
    Status,
    Defragment,
    Hash,
    Snapshot,
    MoveLeader,
    Downgrade,
    AuthEnable,
    AuthDisable,
    AuthStatus,
    Authenticate,
    UserAdd,
    UserGet,
    UserList,
    UserDelete,
    UserChangePassword,
    UserGrantRole,
    UserRevokeRole,
    RoleAdd,
    RoleGet,
    RoleList,
    RoleDelete,
    RoleGrantPermission,
    RoleRevokePermission,
    Lock,
    Unlock,
    Campaign,
    Proclaim,
    Leader,
    Observe,
    Resign,
}

/// The paths (after `/v3/`) of etcd's `google.api.http` bindings. HashKV shares Hash's path in
/// etcd's .proto, where Hash wins; it is not reachable over the gateway there either.
const ROUTES: &[(&str, Rpc)] = &[
    ("kv/range", Rpc::Range),
    ("kv/put", Rpc::Put),
    ("kv/deleterange", Rpc::DeleteRange),
    ("kv/txn", Rpc::Txn),
    ("kv/compaction", Rpc::Compact),
    ("watch", Rpc::Watch),
    ("lease/grant", Rpc::LeaseGrant),
    ("lease/revoke", Rpc::LeaseRevoke),
    ("kv/lease/revoke", Rpc::LeaseRevoke),
    ("lease/keepalive", Rpc::LeaseKeepAlive),
    ("lease/timetolive", Rpc::LeaseTimeToLive),
    ("kv/lease/timetolive", Rpc::LeaseTimeToLive),
    ("lease/leases", Rpc::LeaseLeases),
    ("kv/lease/leases", Rpc::LeaseLeases),
    ("cluster/member/add", Rpc::MemberAdd),
    ("cluster/member/remove", Rpc::MemberRemove),
    ("cluster/member/update", Rpc::MemberUpdate),
    ("cluster/member/list", Rpc::MemberList),
    ("cluster/member/promote", Rpc::MemberPromote),
    ("maintenance/alarm", Rpc::Alarm),
    ("maintenance/status", Rpc::Status),
    ("maintenance/defragment", Rpc::Defragment),
    ("maintenance/hash", Rpc::Hash),
    ("maintenance/snapshot", Rpc::Snapshot),
    ("maintenance/transfer-leadership", Rpc::MoveLeader),
    ("maintenance/downgrade", Rpc::Downgrade),
    ("auth/enable", Rpc::AuthEnable),
    ("auth/disable", Rpc::AuthDisable),
    ("auth/status", Rpc::AuthStatus),
    ("auth/authenticate", Rpc::Authenticate),
    ("auth/user/add", Rpc::UserAdd),
    ("auth/user/get", Rpc::UserGet),
    ("auth/user/list", Rpc::UserList),
    ("auth/user/delete", Rpc::UserDelete),
    ("auth/user/changepw", Rpc::UserChangePassword),
    ("auth/user/grant", Rpc::UserGrantRole),
    ("auth/user/revoke", Rpc::UserRevokeRole),
    ("auth/role/add", Rpc::RoleAdd),
    ("auth/role/get", Rpc::RoleGet),
    ("auth/role/list", Rpc::RoleList),
    ("auth/role/delete", Rpc::RoleDelete),
    ("auth/role/grant", Rpc::RoleGrantPermission),
    ("auth/role/revoke", Rpc::RoleRevokePermission),
    ("lock/lock", Rpc::Lock),
    ("lock/unlock", Rpc::Unlock),
    ("election/campaign", Rpc::Campaign),
    ("election/proclaim", Rpc::Proclaim),
    ("election/leader", Rpc::Leader),
    ("election/observe", Rpc::Observe),
    ("election/resign", Rpc::Resign),
];

impl Rpc {
    fn from_path(path: &str) -> Option<Rpc> {
        ROUTES.iter().find(|(p, _)| *p == path).map(|(_, rpc)| *rpc)
    }

    /// The gRPC service this RPC belongs to (the variant's name is the method's).
    fn service(self) -> &'static str {
        use Rpc::*;
        match self {
            Range | Put | DeleteRange | Txn | Compact => "etcdserverpb.KV",
            Watch => "etcdserverpb.Watch",
            LeaseGrant | LeaseRevoke | LeaseKeepAlive | LeaseTimeToLive | LeaseLeases => {
                "etcdserverpb.Lease"
            }
            MemberAdd | MemberRemove | MemberUpdate | MemberList | MemberPromote => {
                "etcdserverpb.Cluster"
            }
            Alarm | Status | Defragment | Hash | Snapshot | MoveLeader | Downgrade => {
                "etcdserverpb.Maintenance"
            }
            Lock | Unlock => "v3lockpb.Lock",
            Campaign | Proclaim | Leader | Observe | Resign => "v3electionpb.Election",
            AuthEnable | AuthDisable | AuthStatus | Authenticate | UserAdd | UserGet | UserList
            | UserDelete | UserChangePassword | UserGrantRole | UserRevokeRole | RoleAdd
            | RoleGet | RoleList | RoleDelete | RoleGrantPermission | RoleRevokePermission => {
                "etcdserverpb.Auth"
            }
        }
    }

    /// Its `grpc_server_*` metric labels (etcd counts gateway calls as gRPC calls).
    fn metric_labels(self) -> Option<crate::metrics::GrpcLabels> {
        http::rpc_labels(self.service(), &format!("{self:?}"))
    }
}

/// The gRPC code a finished answer carries, for the call metrics; streamed answers have none
/// (they are counted when their body ends).
#[derive(Debug, Clone, Copy)]
struct GrpcCode(i32);

/// Counts the call as handled when its answer is known: at once for a unary answer, when the
/// body ends (OK) or is dropped unfinished (Canceled) for a stream.
fn count_handled(mut handled: http::Handled, mut resp: Response) -> Response {
    if let Some(GrpcCode(code)) = resp.extensions().get::<GrpcCode>().copied() {
        handled.finish(code);
        return resp;
    }
    use futures::StreamExt;
    let body = std::mem::take(resp.body_mut());
    let end = futures::stream::once(async move {
        handled.finish(tonic::Code::Ok as i32);
        None
    })
    .filter_map(futures::future::ready);
    *resp.body_mut() = Body::from_stream(body.into_data_stream().chain(end));
    resp
}

/// The services the gateway calls: the same implementations the gRPC server runs.
pub struct Gateway {
    kv: KvService,
    watch: WatchService,
    lease: LeaseService,
    cluster: ClusterService,
    maintenance: MaintenanceService,
    lock: LockService,
    election: ElectionService,
    auth: Arc<dyn Auth>,
    /// Largest request body accepted (etcd's `--max-request-bytes` plus gRPC's allowance).
    max_bytes: usize,
}

impl Gateway {
    /// `auth` is whatever implements etcd's Auth service on the gRPC side.
    pub fn new(
        node: Arc<Node>,
        watch: WatchConfig,
        auth: Arc<dyn Auth>,
        max_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            kv: KvService::new(node.clone()),
            watch: WatchService::new(node.clone(), watch),
            lease: LeaseService::new(node.clone()),
            cluster: ClusterService::new(node.clone()),
            maintenance: MaintenanceService::new(node.clone()),
            lock: LockService::new(node.clone()),
            election: ElectionService::new(node),
            auth,
            max_bytes,
        })
    }
}

/// The gateway's routes, merged into the client port's router.
pub fn router(gateway: Arc<Gateway>) -> axum::Router {
    axum::Router::new()
        .route("/v3/{*rpc}", any(handle))
        .route("/v3beta/{*rpc}", any(handle))
        .with_state(gateway)
}

async fn handle(
    State(gw): State<Arc<Gateway>>,
    method: Method,
    Path(rpc): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let resp = match Rpc::from_path(&rpc) {
        None => plain(StatusCode::NOT_FOUND, "Not Found\n"),
        // A CORS preflight: the headers below are the whole answer.
        Some(_) if method == Method::OPTIONS => StatusCode::OK.into_response(),
        Some(_) if method != Method::POST => {
            plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n")
        }
        Some(rpc) => {
            let handled = http::Handled::start(rpc.metric_labels());
            count_handled(handled, gw.call(rpc, &headers, body).await)
        }
    };
    with_cors(resp)
}

/// A failed call's JSON answer, tagged with its code for the call metrics.
fn error_response(status: &tonic::Status) -> Response {
    let mut resp = json::error_response(status);
    resp.extensions_mut().insert(GrpcCode(status.code() as i32));
    resp
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text,
    )
        .into_response()
}

/// etcd answers every client-port HTTP request with permissive CORS headers.
fn with_cors(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    resp
}

/// Carries HTTP headers into gRPC metadata as grpc-gateway does: `Authorization` as
/// `authorization` (the auth token), `Grpc-Metadata-<name>` as `<name>`.
fn forward_metadata<T>(headers: &HeaderMap, req: &mut tonic::Request<T>) {
    let md = req.metadata_mut();
    for (name, value) in headers {
        let key = if name == header::AUTHORIZATION {
            "authorization"
        } else if let Some(k) = name.as_str().strip_prefix("grpc-metadata-") {
            k
        } else {
            continue;
        };
        let Ok(key) = tonic::metadata::MetadataKey::from_bytes(key.as_bytes()) else {
            continue;
        };
        if let Ok(v) = value.to_str() {
            if let Ok(v) = tonic::metadata::MetadataValue::try_from(v) {
                md.insert(key, v);
            }
        }
    }
}

/// A unary request from the whole body, or the error answer if it does not decode.
async fn read_unary<T: DeserializeOwned + Default + prost::Message>(
    headers: &HeaderMap,
    body: Body,
    max_bytes: usize,
) -> Result<tonic::Request<T>, Response> {
    // The limit is on the message, as for gRPC; its JSON (base64, field names) is larger.
    let bytes = axum::body::to_bytes(body, json_limit(max_bytes))
        .await
        .map_err(|e| {
            error_response(&tonic::Status::resource_exhausted(format!(
                "grpc: received message larger than max: {e}"
            )))
        })?;
    let msg = json::decode::<T>(&bytes).map_err(|e| error_response(&e.into_status(false)))?;
    let size = msg.encoded_len();
    if size > max_bytes {
        let e = json::DecodeError::TooLarge {
            size,
            max: max_bytes,
        };
        return Err(error_response(&e.into_status(false)));
    }
    let mut req = tonic::Request::new(msg);
    forward_metadata(headers, &mut req);
    Ok(req)
}

/// How much JSON may carry a message of `max_bytes`: base64 grows bytes by 4/3, and names,
/// quotes and decimal numbers add more.
fn json_limit(max_bytes: usize) -> usize {
    max_bytes.saturating_mul(2)
}

fn respond<T: Serialize>(result: Result<tonic::Response<T>, tonic::Status>) -> Response {
    match result {
        Ok(resp) => {
            let mut out = json_response(StatusCode::OK, resp.get_ref());
            out.extensions_mut()
                .insert(GrpcCode(tonic::Code::Ok as i32));
            // grpc-gateway passes the gRPC response's content type on as metadata.
            out.headers_mut().insert(
                "grpc-metadata-content-type",
                HeaderValue::from_static("application/grpc"),
            );
            out
        }
        Err(status) => error_response(&status),
    }
}

/// Decodes the body, calls `$svc.$rpc` and answers with its JSON (or error).
macro_rules! unary {
    ($gw:ident, $headers:ident, $body:ident, $svc:expr, $rpc:ident) => {
        match read_unary($headers, $body, $gw.max_bytes).await {
            Ok(req) => respond($svc.$rpc(req).await),
            Err(resp) => resp,
        }
    };
}

/// Same for a server-streaming RPC: one request, a stream of `{"result":..}` lines.
macro_rules! server_stream {
    ($gw:ident, $headers:ident, $body:ident, $svc:expr, $rpc:ident) => {
        match read_unary($headers, $body, $gw.max_bytes).await {
            Ok(req) => match $svc.$rpc(req).await {
                Ok(resp) => stream_response(resp.into_inner()),
                Err(status) => error_response(&status),
            },
            Err(resp) => resp,
        }
    };
}

impl Gateway {
    async fn call(&self, rpc: Rpc, headers: &HeaderMap, body: Body) -> Response {
        let gw = self;
        let auth = self.auth.as_ref();
        match rpc {
            Rpc::Range => unary!(gw, headers, body, gw.kv, range),
            Rpc::Put => unary!(gw, headers, body, gw.kv, put),
            Rpc::DeleteRange => unary!(gw, headers, body, gw.kv, delete_range),
            Rpc::Txn => unary!(gw, headers, body, gw.kv, txn),
            Rpc::Compact => unary!(gw, headers, body, gw.kv, compact),
            Rpc::Watch => {
                bidi(
                    body,
                    self.max_bytes,
                    OnBodyEnd::KeepOpen,
                    |r| forward_metadata(headers, r),
                    |r| self.watch.watch(r),
                )
                .await
            }
            Rpc::LeaseGrant => unary!(gw, headers, body, gw.lease, lease_grant),
            Rpc::LeaseRevoke => unary!(gw, headers, body, gw.lease, lease_revoke),
            Rpc::LeaseKeepAlive => {
                bidi(
                    body,
                    self.max_bytes,
                    OnBodyEnd::Close,
                    |r| forward_metadata(headers, r),
                    |r| self.lease.lease_keep_alive(r),
                )
                .await
            }
            Rpc::LeaseTimeToLive => unary!(gw, headers, body, gw.lease, lease_time_to_live),
            Rpc::LeaseLeases => unary!(gw, headers, body, gw.lease, lease_leases),
            Rpc::MemberAdd => unary!(gw, headers, body, gw.cluster, member_add),
            Rpc::MemberRemove => unary!(gw, headers, body, gw.cluster, member_remove),
            Rpc::MemberUpdate => unary!(gw, headers, body, gw.cluster, member_update),
            Rpc::MemberList => unary!(gw, headers, body, gw.cluster, member_list),
            Rpc::MemberPromote => unary!(gw, headers, body, gw.cluster, member_promote),
            Rpc::Alarm => unary!(gw, headers, body, gw.maintenance, alarm),
            Rpc::Status => unary!(gw, headers, body, gw.maintenance, status),
            Rpc::Defragment => unary!(gw, headers, body, gw.maintenance, defragment),
            Rpc::Hash => unary!(gw, headers, body, gw.maintenance, hash),
            Rpc::Snapshot => server_stream!(gw, headers, body, gw.maintenance, snapshot),
            Rpc::MoveLeader => unary!(gw, headers, body, gw.maintenance, move_leader),
            Rpc::Downgrade => unary!(gw, headers, body, gw.maintenance, downgrade),
            Rpc::AuthEnable => unary!(gw, headers, body, auth, auth_enable),
            Rpc::AuthDisable => unary!(gw, headers, body, auth, auth_disable),
            Rpc::AuthStatus => unary!(gw, headers, body, auth, auth_status),
            Rpc::Authenticate => unary!(gw, headers, body, auth, authenticate),
            Rpc::UserAdd => unary!(gw, headers, body, auth, user_add),
            Rpc::UserGet => unary!(gw, headers, body, auth, user_get),
            Rpc::UserList => unary!(gw, headers, body, auth, user_list),
            Rpc::UserDelete => unary!(gw, headers, body, auth, user_delete),
            Rpc::UserChangePassword => unary!(gw, headers, body, auth, user_change_password),
            Rpc::UserGrantRole => unary!(gw, headers, body, auth, user_grant_role),
            Rpc::UserRevokeRole => unary!(gw, headers, body, auth, user_revoke_role),
            Rpc::RoleAdd => unary!(gw, headers, body, auth, role_add),
            Rpc::RoleGet => unary!(gw, headers, body, auth, role_get),
            Rpc::RoleList => unary!(gw, headers, body, auth, role_list),
            Rpc::RoleDelete => unary!(gw, headers, body, auth, role_delete),
            Rpc::RoleGrantPermission => unary!(gw, headers, body, auth, role_grant_permission),
            Rpc::RoleRevokePermission => unary!(gw, headers, body, auth, role_revoke_permission),
            Rpc::Lock => unary!(gw, headers, body, gw.lock, lock),
            Rpc::Unlock => unary!(gw, headers, body, gw.lock, unlock),
            Rpc::Campaign => unary!(gw, headers, body, gw.election, campaign),
            Rpc::Proclaim => unary!(gw, headers, body, gw.election, proclaim),
            Rpc::Leader => unary!(gw, headers, body, gw.election, leader),
            Rpc::Observe => server_stream!(gw, headers, body, gw.election, observe),
            Rpc::Resign => unary!(gw, headers, body, gw.election, resign),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_etcds_rpcs() {
        assert_eq!(Rpc::from_path("kv/range"), Some(Rpc::Range));
        assert_eq!(
            Rpc::from_path("kv/lease/timetolive"),
            Some(Rpc::LeaseTimeToLive)
        );
        assert_eq!(
            Rpc::from_path("lease/timetolive"),
            Some(Rpc::LeaseTimeToLive)
        );
        assert_eq!(Rpc::from_path("maintenance/hash"), Some(Rpc::Hash));
        assert_eq!(Rpc::from_path("kv/nope"), None);
        assert_eq!(Rpc::from_path("kv/range/"), None);
        // Every path is listed once.
        for (i, (p, _)) in ROUTES.iter().enumerate() {
            assert!(ROUTES[i + 1..].iter().all(|(q, _)| q != p), "{p} twice");
        }
    }

    #[test]
    fn authorization_and_grpc_metadata_headers_become_metadata() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("tok"));
        headers.insert("grpc-metadata-hasleader", HeaderValue::from_static("true"));
        headers.insert("x-other", HeaderValue::from_static("no"));
        let mut req = tonic::Request::new(());
        forward_metadata(&headers, &mut req);
        let md = req.metadata();
        assert_eq!(
            md.get("authorization").and_then(|v| v.to_str().ok()),
            Some("tok")
        );
        assert_eq!(
            md.get("hasleader").and_then(|v| v.to_str().ok()),
            Some("true")
        );
        assert!(md.get("x-other").is_none());
    }
}
