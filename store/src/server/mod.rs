//! `cairn serve`: flags -> storage -> Raft -> gRPC listeners, and a clean shutdown.

pub mod batch;
pub mod compactor;
pub mod config;
pub mod conn;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod leases;
pub mod membership;
pub mod node;
pub mod peer;
pub mod read_index;
pub mod snapshots;
pub mod transfer;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::transport::Server;

use crate::api::auth::AuthService;
use crate::api::cluster::ClusterService;
use crate::api::election::ElectionService;
use crate::api::kv::KvService;
use crate::api::lease::LeaseService;
use crate::api::lock::LockService;
use crate::api::maintenance::MaintenanceService;
use crate::api::watch::WatchService;
use crate::proto::cairnpeerpb::peer_server::PeerServer;
use crate::proto::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use crate::proto::v3electionpb::election_server::ElectionServer;
use crate::proto::v3lockpb::lock_server::LockServer;
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::StateMachine;
use crate::raft::{Command, Member, Raft};
use crate::storage::Backend;
use crate::tls::TlsReloader;
use crate::watch::stream::WatchConfig;
use config::ClusterState;
pub use config::ServeArgs;
use identity::Identity;
use node::{Limits, Node};
use peer::PeerService;

/// gRPC allows this much framing on top of `--max-request-bytes`, as etcd does.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// How long a removed member keeps running so the change that removed it completes.
const REMOVED_GRACE: Duration = Duration::from_secs(2);

/// Runs a member until SIGINT or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    args.validate()?;
    let data_dir = args.data_dir();
    let member_dir = data_dir.join("member");
    std::fs::create_dir_all(&member_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    tracing::info!(name = %args.name, data_dir = %data_dir.display(), version = env!("CARGO_PKG_VERSION"), "starting cairn");

    // Bind first: a port already in use fails start-up before anything is written.
    let client_listeners = bind_all(&args.listen_client_urls).await?;
    let peer_listeners = bind_all(&args.listen_peer_urls).await?;
    let metrics_listeners = bind_all(&args.listen_metrics_urls).await?;
    // Certificates are checked before anything is written, like the ports.
    let client_tls = load_tls("client", args.client_tls(), false)?;
    let peer_tls = load_tls("peer", args.peer_tls(), true)?;

    let backend: Arc<dyn Backend> = Arc::new(
        crate::storage::open(&member_dir.join("db"))
            .with_context(|| format!("opening {}", member_dir.display()))?,
    );
    let network = Network::new(crate::raft::network::Peers::new(peer_tls.clone()));
    let (identity, bootstrap) = resolve_identity(backend.as_ref(), &args, &network.peers).await?;
    tracing::info!(member_id = %format!("{:x}", identity.member_id), cluster_id = %format!("{:x}", identity.cluster_id), "member identity");

    let config = openraft::Config {
        cluster_name: args.initial_cluster_token.clone(),
        heartbeat_interval: args.heartbeat_interval,
        election_timeout_min: args.election_timeout,
        election_timeout_max: args.election_timeout * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(args.snapshot_count),
        max_in_snapshot_log_to_keep: args.snapshot_catchup_entries,
        install_snapshot_timeout: args.election_timeout.max(5_000),
        ..Default::default()
    }
    .validate()
    .context("raft configuration")?;

    let wal_dir = crate::raft::log_store::wal_dir(&member_dir);
    let log_store = LogStore::open(&wal_dir, backend.clone())
        .with_context(|| format!("opening the WAL in {}", wal_dir.display()))?;
    let appends = log_store.appends();
    let log_size = log_store.clone();
    let sm = StateMachine::open(backend.clone(), member_dir.join("snap"))
        .context("opening the state machine")?;
    sm.auth()
        .tokens
        .set_ttl(Duration::from_secs(args.auth_token_ttl));
    let raft = Raft::new(
        identity.member_id,
        Arc::new(config),
        network.clone(),
        log_store,
        sm.clone(),
    )
    .await
    .context("starting raft")?;
    if let Some(members) = bootstrap {
        // Every initial member initializes with the same membership; openraft accepts that.
        if let Err(e) = raft.initialize(members).await {
            tracing::debug!(error = %e, "raft already initialized");
        }
        // Bootstrapped (or found already bootstrapped): a restored data dir never asks again.
        crate::snapshot::restore::bootstrap_done(backend.as_ref())?;
    }

    let node = Arc::new(Node {
        id: identity.member_id,
        cluster_id: identity.cluster_id,
        name: args.name.clone(),
        raft: raft.clone(),
        batcher: batch::Batcher::start(raft.clone(), appends),
        read_rounds: read_index::ReadIndexRounds::new(raft.clone()),
        sm,
        peers: network.peers.clone(),
        limits: Limits {
            max_request_bytes: args.max_request_bytes,
            max_txn_ops: args.max_txn_ops,
            quota_bytes: args.quota_bytes(),
        },
        request_timeout: Duration::from_secs(5) + Duration::from_millis(2 * args.election_timeout),
        backend: backend.clone(),
        db_size: Default::default(),
        min_lease_ttl: crate::lease::min_ttl(args.election_timeout),
        lease_ids: node::LeaseIdGen::new(identity.member_id),
        cluster_token: args.initial_cluster_token.clone(),
        membership_lock: tokio::sync::Mutex::new(()),
        transferring: std::sync::atomic::AtomicBool::new(false),
        removed: tokio::sync::Notify::new(),
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for (listener, https) in peer_listeners {
        let svc = PeerServer::new(PeerService::new(node.clone()))
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let stop = stopped(stop_rx.clone());
        let router = Server::builder().tcp_nodelay(true).add_service(svc);
        spawn_server(
            &mut servers,
            router,
            listener,
            tls_for(https, &peer_tls)?,
            stop,
        );
    }
    let max_decode = args.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let watch_config = WatchConfig {
        progress_notify_interval: args.watch_progress_notify_interval,
        fragment_bytes: args.max_request_bytes,
        // etcd's monitorLeader ends `hasleader` streams after ~3 election timeouts without one.
        require_leader: Some(Duration::from_millis(3 * args.election_timeout)),
    };
    let http_state = http::HttpState::new(node.clone());
    // One Auth implementation for gRPC and the JSON gateway: the one place to swap in the real
    // auth service.
    let auth = Arc::new(AuthService::new(node.clone()));
    // The gateway calls the same service implementations as gRPC.
    let gateway =
        gateway::Gateway::new(node.clone(), watch_config.clone(), auth.clone(), max_decode);
    for (listener, https) in client_listeners {
        let tls = tls_for(https, &client_tls)?;
        let stop = stopped(stop_rx.clone());
        let grpc = tonic::service::Routes::default()
            .add_service(
                KvServer::new(KvService::new(node.clone()))
                    .max_decoding_message_size(max_decode)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(
                MaintenanceServer::new(MaintenanceService::new(node.clone()))
                    .max_decoding_message_size(max_decode)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(
                ClusterServer::new(ClusterService::new(node.clone()))
                    .max_decoding_message_size(max_decode)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(
                WatchServer::new(WatchService::new(node.clone(), watch_config.clone()))
                    .max_decoding_message_size(max_decode)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(
                LeaseServer::new(LeaseService::new(node.clone()))
                    .max_decoding_message_size(max_decode),
            )
            .add_service(
                LockServer::new(LockService::new(node.clone()))
                    .max_decoding_message_size(max_decode),
            )
            .add_service(
                ElectionServer::new(ElectionService::new(node.clone()))
                    .max_decoding_message_size(max_decode)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(AuthServer::from_arc(auth.clone()).max_decoding_message_size(max_decode));
        let router = Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(7200)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            // HTTP/1.1 as well as h2c: /health, /metrics and friends share the client port.
            .accept_http1(true)
            .add_routes(http::with_grpc(
                grpc,
                http_state.clone(),
                gateway::router(gateway.clone()),
            ));
        spawn_server(&mut servers, router, listener, tls, stop);
    }
    // The metrics listener stays plaintext (as etcd's may): scrapers need no certificates.
    for (listener, _) in metrics_listeners {
        let stop = stopped(stop_rx.clone());
        let routes = tonic::service::Routes::from(http::router(http_state.clone()));
        servers.spawn(async move {
            Server::builder()
                .tcp_nodelay(true)
                .accept_http1(true)
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming(listener), stop)
                .await
        });
    }
    tracing::info!(clients = ?args.listen_client_urls, peers = ?args.listen_peer_urls, metrics = ?args.listen_metrics_urls, "serving");

    let tls_watchers: Vec<_> = [&client_tls, &peer_tls]
        .into_iter()
        .flatten()
        .map(|t| t.spawn_watch())
        .collect();
    let background = [
        tokio::spawn(publish_attributes(
            node.clone(),
            args.name.clone(),
            args.advertise_client_urls.clone(),
        )),
        tokio::spawn(compactor::run(node.clone(), args.auto_compaction()?)),
        tokio::spawn(snapshots::run(
            node.raft.clone(),
            log_size,
            node.sm.clone(),
            args.snapshot_log_bytes,
        )),
        tokio::spawn(leases::track_leadership(node.clone())),
        tokio::spawn(watch_removal(node.clone(), stop_tx.clone())),
        tokio::spawn(leases::expire(node.clone())),
        tokio::spawn(http::track_leader_changes(node.clone())),
    ];

    tokio::select! {
        _ = shutdown_signal() => tracing::info!("received shutdown signal"),
        Some(res) = servers.join_next() => {
            match res {
                Ok(Err(e)) => tracing::error!(error = %e, "a listener failed"),
                Err(e) => tracing::error!(error = %e, "a listener task failed"),
                Ok(Ok(())) => {}
            }
        }
    }
    let _ = stop_tx.send(true);
    for task in background.into_iter().chain(tls_watchers) {
        task.abort();
    }
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    while servers.join_next().await.is_some() {}
    backend.flush().context("final flush")?;
    tracing::info!("stopped");
    Ok(())
}

/// Stops this member once the cluster removed it (etcd exits the same way), so a removed member
/// never campaigns or serves stale data.
async fn watch_removal(node: Arc<Node>, stop: tokio::sync::watch::Sender<bool>) {
    let mut metrics = node.raft.metrics();
    let mut was_member = false;
    loop {
        let is_member = metrics
            .borrow_and_update()
            .membership_config
            .membership()
            .get_node(&node.id)
            .is_some();
        if was_member && !is_member {
            tracing::error!("this member has been permanently removed from the cluster; stopping");
            // Let the removal finish committing and its reply reach the client first (a removed
            // leader answers the MemberRemove that removed it).
            tokio::time::sleep(REMOVED_GRACE).await;
            let _ = stop.send(true);
            return;
        }
        was_member |= is_member;
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = node.removed.notified() => {
                tracing::error!("this member has been permanently removed from the cluster; stopping");
                tokio::time::sleep(REMOVED_GRACE).await;
                let _ = stop.send(true);
                return;
            }
        }
    }
}

/// Accepted connections with Nagle's algorithm off. tonic's `tcp_nodelay` only applies to
/// listeners it binds itself; without this, small gRPC replies (and Raft messages) wait for the
/// peer's delayed ACK, about 40 ms, whenever more than one is in flight.
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Binds every URL; each listener comes with whether its URL asks for TLS.
async fn bind_all(urls: &[String]) -> anyhow::Result<Vec<(TcpListener, bool)>> {
    let mut out = Vec::new();
    for u in urls {
        let addr: SocketAddr = config::socket_addr_of(u)?;
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {u}"))?;
        out.push((l, config::is_https(u)));
    }
    Ok(out)
}

/// One side's TLS, when its certificate and key are configured.
fn load_tls(
    side: &'static str,
    files: crate::tls::TlsFiles,
    dials: bool,
) -> anyhow::Result<Option<Arc<TlsReloader>>> {
    if !files.has_identity() {
        return Ok(None);
    }
    let tls = TlsReloader::load(side, files, dials)
        .with_context(|| format!("loading the {side} TLS certificates"))?;
    Ok(Some(tls))
}

/// The TLS a listener serves with: none for `http` URLs (etcd ignores the files there too).
fn tls_for(
    https: bool,
    tls: &Option<Arc<TlsReloader>>,
) -> anyhow::Result<Option<Arc<TlsReloader>>> {
    match (https, tls) {
        (false, Some(t)) => {
            tracing::warn!(
                client_cert_auth = t.files().client_cert_auth,
                "scheme is HTTP while key and certificate files are present; ignoring key and certificate files for this listener"
            );
            Ok(None)
        }
        (false, None) => Ok(None),
        (true, Some(t)) => Ok(Some(t.clone())),
        // ServeArgs::validate refuses this first; kept as an error rather than a panic.
        (true, None) => bail!("an https listener needs a certificate and key"),
    }
}

type Servers = tokio::task::JoinSet<Result<(), tonic::transport::Error>>;

/// Serves `router` on `listener`, through TLS handshakes when `tls` is given. Every connection
/// is wrapped in `conn::Unvectored`, so small replies leave in one write.
fn spawn_server(
    servers: &mut Servers,
    router: tonic::transport::server::Router,
    listener: TcpListener,
    tls: Option<Arc<TlsReloader>>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    match tls {
        Some(tls) => servers.spawn(async move {
            router
                .serve_with_incoming_shutdown(
                    crate::tls::accept::incoming(listener, tls).map(|c| c.map(conn::Unvectored)),
                    stop,
                )
                .await
        }),
        None => servers.spawn(async move {
            router
                .serve_with_incoming_shutdown(
                    incoming(listener).map(|c| c.map(conn::Unvectored)),
                    stop,
                )
                .await
        }),
    };
}

/// Loads this member's identity, or derives it for a first start. Returns the initial
/// membership when this start bootstraps a new cluster.
async fn resolve_identity(
    backend: &dyn Backend,
    args: &ServeArgs,
    peers: &crate::raft::network::Peers,
) -> anyhow::Result<(Identity, Option<BTreeMap<u64, Member>>)> {
    if let Some(id) = identity::load(backend)? {
        if id.name != args.name {
            tracing::warn!(stored = %id.name, flag = %args.name, "data dir belongs to another member name; keeping the stored identity");
        }
        // A data dir made by `cairn snapshot restore` still has to bootstrap its new cluster.
        return Ok((id, crate::snapshot::restore::pending_bootstrap(backend)?));
    }
    let members = args.initial_members()?;
    let token = &args.initial_cluster_token;
    let ids: Vec<(u64, Member)> = members
        .iter()
        .map(|(name, urls)| {
            (
                identity::member_id(urls, token, None),
                Member {
                    name: name.clone(),
                    peer_urls: urls.clone(),
                },
            )
        })
        .collect();
    let me = ids
        .iter()
        .find(|(_, m)| m.name == args.name)
        .map(|(id, _)| *id);
    match args.initial_cluster_state {
        ClusterState::New => {
            let Some(member_id) = me else {
                bail!("--initial-cluster has no entry for {:?}", args.name)
            };
            let all: Vec<u64> = ids.iter().map(|(id, _)| *id).collect();
            let id = Identity {
                member_id,
                cluster_id: identity::cluster_id(&all, token),
                name: args.name.clone(),
            };
            identity::save(backend, &id)?;
            Ok((id, Some(ids.into_iter().collect())))
        }
        ClusterState::Existing => {
            // The cluster already knows this member (`member add`); ask it for our id.
            let (member_id, cluster_id) = membership::discover(
                peers,
                &members,
                &args.initial_advertise_peer_urls,
                Duration::from_secs(30),
            )
            .await
            .map_err(|e| anyhow::anyhow!("joining the existing cluster: {e}"))?;
            let id = Identity {
                member_id,
                cluster_id,
                name: args.name.clone(),
            };
            identity::save(backend, &id)?;
            Ok((id, None))
        }
    }
}

/// Announces this member's name and client URLs through Raft once a leader exists (etcd's
/// publish), so MemberList shows them on every member.
async fn publish_attributes(node: Arc<Node>, name: String, client_urls: Vec<String>) {
    let want = crate::raft::MemberAttributes {
        name: name.clone(),
        client_urls: client_urls.clone(),
    };
    loop {
        if node.sm.member_attributes(node.id).as_ref() == Some(&want) {
            return;
        }
        let cmd = Command::PublishMember {
            id: node.id,
            name: name.clone(),
            client_urls: client_urls.clone(),
        };
        match node.propose(cmd).await {
            Ok(_) => tracing::info!(?client_urls, "published member attributes"),
            Err(e) => {
                tracing::debug!(error = %e, "publishing member attributes; will retry");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
