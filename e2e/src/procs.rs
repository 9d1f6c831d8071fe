//! The cluster's processes for long runs: each member is a `cairn serve` child that the nemesis
//! kills, pauses and restarts; its log is appended across restarts so a post-mortem sees all of
//! it. Signals go through libc (kill(2)) because SIGSTOP/SIGCONT have no std API.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cairn_store::client::{Client, ConnectOptions};
use cairn_store::proto::etcdserverpb::StatusRequest;

use crate::netns::{self, Netns};
use crate::proxy::Proxy;

/// Errors from controlling processes.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot find the cairn binary (set CAIRN_BIN): looked next to {0}")]
    NoBinary(PathBuf),
    #[error("setting up network namespaces: {0}")]
    Netns(#[from] netns::NetnsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProcError {
    let what = what.into();
    move |source| ProcError::Io { what, source }
}

/// The `cairn` binary: `$CAIRN_BIN`, else next to this executable (cargo puts test and bin
/// targets of one profile in the same directory tree).
pub fn cairn_bin() -> Result<PathBuf, ProcError> {
    if let Some(p) = std::env::var_os("CAIRN_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(io("current_exe"))?;
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let candidate = d.join("cairn");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    Err(ProcError::NoBinary(exe))
}

/// A free loopback port (bound then released; the member binds it right after).
pub fn free_port() -> Result<u16, ProcError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("bind an ephemeral port"))?;
    Ok(l.local_addr().map_err(io("local addr"))?.port())
}

/// One member process.
pub struct Member {
    pub name: String,
    /// The address clients reach it on (loopback, or its namespace's client link).
    pub client_host: String,
    pub client_port: u16,
    /// The address it listens on and advertises for peers (loopback, or its namespace's peer
    /// link).
    pub peer_host: String,
    /// The peer port the member advertises (a proxy's, when partitions are injected).
    pub peer_port: u16,
    /// The peer port the member listens on.
    pub listen_peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub initial_cluster: String,
    /// `new` for the founding members, `existing` for members added at runtime.
    pub cluster_state: &'static str,
    /// `--election-timeout` in ms (tests that must restart a member before the others campaign
    /// raise it).
    pub election_timeout_ms: u64,
    /// `--snapshot-count`: small values make members catch up through Raft snapshots.
    pub snapshot_count: u64,
    /// More `cairn serve` flags.
    pub extra_args: Vec<String>,
    /// The binary (a failpoints build in the crash tests).
    pub bin: PathBuf,
    /// The network namespace it runs in (`ip netns exec`, which execs: the child's pid is
    /// cairn's, so kill -9 and SIGSTOP reach it).
    pub netns: Option<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    paused: bool,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.client_host, self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.peer_host, self.peer_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Extra environment for the next start (e.g. `FAILPOINTS`).
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    pub fn start(&mut self) -> Result<(), ProcError> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io(format!("open {}", self.log.display())))?;
        let err = log.try_clone().map_err(io("clone log handle"))?;
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.args([
            "serve",
            "--name",
            &self.name,
            "--data-dir",
            &self.data_dir.display().to_string(),
            "--listen-client-urls",
            &self.endpoint(),
            "--advertise-client-urls",
            &self.endpoint(),
            "--listen-peer-urls",
            &format!("http://{}:{}", self.peer_host, self.listen_peer_port),
            "--initial-advertise-peer-urls",
            &self.peer_url(),
            "--initial-cluster",
            &self.initial_cluster,
            "--initial-cluster-state",
            self.cluster_state,
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            &self.election_timeout_ms.to_string(),
            "--snapshot-count",
            &self.snapshot_count.to_string(),
        ])
        .args(&self.extra_args)
        .env("CAIRN_LOG", "info,openraft=error")
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(
            cmd.spawn()
                .map_err(io(format!("spawn {}", self.bin.display())))?,
        );
        self.paused = false;
        Ok(())
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            if let Ok(pid) = libc::pid_t::try_from(c.id()) {
                // SAFETY: kill(2) on our own child's pid; no memory is touched.
                unsafe {
                    libc::kill(pid, sig);
                }
            }
        }
    }

    /// kill -9: nothing gets flushed.
    pub fn kill9(&mut self) {
        if self.paused {
            self.signal(libc::SIGCONT);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// SIGSTOP: the process freezes with its sockets open (a long GC pause, a stuck disk).
    pub fn pause(&mut self) {
        if self.child.is_some() && !self.paused {
            self.signal(libc::SIGSTOP);
            self.paused = true;
        }
    }

    pub fn resume(&mut self) {
        if self.paused {
            self.signal(libc::SIGCONT);
            self.paused = false;
        }
    }

    /// Reaps the process if it exited on its own (a failpoint's abort, a crash); returns its
    /// exit status then.
    pub fn reap(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.paused = false;
        Some(status)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The members of one run, in a directory that outlives the run when asked to (post-mortems).
/// Fields drop in order: the members are killed before their namespaces go away.
pub struct Cluster {
    pub members: Vec<Member>,
    /// For each member, the proxy in front of its peer listener (one-sided partitions), if any.
    pub proxies: Vec<Option<Proxy>>,
    /// The members' network namespaces (two-way partitions), if the run has them.
    pub net: Option<Netns>,
    pub dir: PathBuf,
    bin: PathBuf,
}

/// Where one member listens: client host and port, peer host, advertised and listening peer
/// ports, namespace.
struct Place {
    client_host: String,
    client_port: u16,
    peer_host: String,
    peer_port: u16,
    listen_peer_port: u16,
    netns: Option<String>,
}

impl Place {
    fn loopback(client_port: u16, peer_port: u16, listen_peer_port: u16) -> Place {
        Place {
            client_host: "127.0.0.1".into(),
            client_port,
            peer_host: "127.0.0.1".into(),
            peer_port,
            listen_peer_port,
            netns: None,
        }
    }
}

impl Cluster {
    /// Lays out (does not start) `n` founding members under `dir`.
    pub fn new(n: usize, dir: &Path) -> Result<Cluster, ProcError> {
        let mut places = Vec::new();
        for _ in 0..n {
            let peer = free_port()?;
            places.push(Place::loopback(free_port()?, peer, peer));
        }
        Self::lay_out(places, dir, Vec::new(), None)
    }

    /// Like `new`, with a fault-injecting proxy in front of each member's peer listener.
    pub async fn new_proxied(n: usize, dir: &Path) -> Result<Cluster, ProcError> {
        let mut places = Vec::new();
        let mut proxies = Vec::new();
        for _ in 0..n {
            let listen = free_port()?;
            let proxy = Proxy::start(listen)
                .await
                .map_err(io("start a peer proxy"))?;
            places.push(Place::loopback(free_port()?, proxy.port, listen));
            proxies.push(Some(proxy));
        }
        Self::lay_out(places, dir, proxies, None)
    }

    /// Like `new`, each member in its own network namespace (see `netns`).
    pub fn new_netns(n: usize, dir: &Path) -> Result<Cluster, ProcError> {
        let net = Netns::create(n)?;
        let places = net
            .members
            .iter()
            .map(|m| Place {
                client_host: m.client_ip.clone(),
                client_port: netns::CLIENT_PORT,
                peer_host: m.peer_ip.clone(),
                peer_port: netns::PEER_PORT,
                listen_peer_port: netns::PEER_PORT,
                netns: Some(m.ns.clone()),
            })
            .collect();
        Self::lay_out(places, dir, Vec::new(), Some(net))
    }

    fn lay_out(
        places: Vec<Place>,
        dir: &Path,
        mut proxies: Vec<Option<Proxy>>,
        net: Option<Netns>,
    ) -> Result<Cluster, ProcError> {
        let bin = cairn_bin()?;
        proxies.resize_with(places.len(), || None);
        let initial_cluster = places
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}=http://{}:{}", p.peer_host, p.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let members = places
            .into_iter()
            .enumerate()
            .map(|(i, p)| Member {
                name: format!("m{i}"),
                client_host: p.client_host,
                client_port: p.client_port,
                peer_host: p.peer_host,
                peer_port: p.peer_port,
                listen_peer_port: p.listen_peer_port,
                data_dir: dir.join(format!("m{i}")),
                log: dir.join(format!("m{i}.log")),
                initial_cluster: initial_cluster.clone(),
                cluster_state: "new",
                election_timeout_ms: 500,
                snapshot_count: 2000,
                extra_args: Vec::new(),
                bin: bin.clone(),
                netns: p.netns,
                env: Vec::new(),
                child: None,
                paused: false,
            })
            .collect();
        Ok(Cluster {
            members,
            proxies,
            net,
            dir: dir.to_path_buf(),
            bin,
        })
    }

    /// Lays out a member that will join with `--initial-cluster-state existing` (on loopback).
    pub fn add_joiner(
        &mut self,
        name: &str,
        peer_port: u16,
        initial_cluster: String,
    ) -> Result<usize, ProcError> {
        self.members.push(Member {
            name: name.to_string(),
            client_host: "127.0.0.1".into(),
            client_port: free_port()?,
            peer_host: "127.0.0.1".into(),
            peer_port,
            listen_peer_port: peer_port,
            data_dir: self.dir.join(name),
            log: self.dir.join(format!("{name}.log")),
            initial_cluster,
            cluster_state: "existing",
            election_timeout_ms: 500,
            snapshot_count: 2000,
            extra_args: Vec::new(),
            bin: self.bin.clone(),
            netns: None,
            env: Vec::new(),
            child: None,
            paused: false,
        });
        self.proxies.push(None);
        Ok(self.members.len() - 1)
    }

    /// A new peer port for member `i` re-added with a new identity (its id derives from the
    /// peer URL): the next port in its namespace, or a free loopback port.
    pub fn fresh_peer_port(&self, i: usize) -> Result<u16, ProcError> {
        match (&self.net, self.members.get(i)) {
            (Some(_), Some(m)) => Ok(m.peer_port.wrapping_add(1)),
            _ => free_port(),
        }
    }

    pub fn start_all(&mut self) -> Result<(), ProcError> {
        for m in &mut self.members {
            m.start()?;
        }
        Ok(())
    }

    /// Endpoints of every member that is running and not paused.
    pub fn live_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.is_running() && !m.is_paused())
            .map(|m| m.endpoint())
            .collect()
    }

    pub fn all_endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint()).collect()
    }
}

/// Status of one endpoint: (member id, leader id, raft term, revision), `None` if unreachable.
pub async fn status(endpoint: &str) -> Option<(u64, u64, u64, i64)> {
    let opts = ConnectOptions {
        dial_timeout: Duration::from_millis(500),
        request_timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let c = Client::connect(&[endpoint.to_string()], &opts).await.ok()?;
    let s = c
        .maintenance()
        .status(StatusRequest {})
        .await
        .ok()?
        .into_inner();
    let h = s.header?;
    Some((h.member_id, s.leader, s.raft_term, h.revision))
}

/// Waits until the given endpoints agree on one leader among them; returns its endpoint.
pub async fn wait_leader(endpoints: &[String], timeout: Duration) -> Option<(String, u64)> {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        let mut leader = None;
        let mut leader_ep = None;
        let mut agreed = true;
        for ep in endpoints {
            match status(ep).await {
                Some((me, l, _, _)) if l != 0 && leader.is_none_or(|x| x == l) => {
                    leader = Some(l);
                    if me == l {
                        leader_ep = Some(ep.clone());
                    }
                }
                _ => agreed = false,
            }
        }
        if agreed {
            if let (Some(ep), Some(id)) = (leader_ep, leader) {
                return Some((ep, id));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
