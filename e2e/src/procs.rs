//! The cluster's processes for long runs: each member is a `cairn serve` child that the nemesis
//! kills, pauses and restarts; its log is appended across restarts so a post-mortem sees all of
//! it. Signals go through libc (kill(2)) because SIGSTOP/SIGCONT have no std API.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cairn_store::client::{Client, ConnectOptions};
use cairn_store::proto::etcdserverpb::StatusRequest;

use crate::proxy::Proxy;

/// Errors from controlling processes.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot find the cairn binary (set CAIRN_BIN): looked next to {0}")]
    NoBinary(PathBuf),
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
    pub client_port: u16,
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
    env: Vec<(String, String)>,
    child: Option<Child>,
    paused: bool,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
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
        let mut cmd = Command::new(&self.bin);
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
            &format!("http://127.0.0.1:{}", self.listen_peer_port),
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
pub struct Cluster {
    pub members: Vec<Member>,
    /// For each member, the proxy in front of its peer listener (partitions), if any.
    pub proxies: Vec<Option<Proxy>>,
    pub dir: PathBuf,
    bin: PathBuf,
}

impl Cluster {
    /// Lays out (does not start) `n` founding members under `dir`.
    pub fn new(n: usize, dir: &Path) -> Result<Cluster, ProcError> {
        let mut ports = Vec::new();
        for _ in 0..n {
            let peer = free_port()?;
            ports.push((free_port()?, peer, peer));
        }
        Self::lay_out(ports, dir, Vec::new())
    }

    /// Like `new`, with a fault-injecting proxy in front of each member's peer listener.
    pub async fn new_proxied(n: usize, dir: &Path) -> Result<Cluster, ProcError> {
        let mut ports = Vec::new();
        let mut proxies = Vec::new();
        for _ in 0..n {
            let listen = free_port()?;
            let proxy = Proxy::start(listen)
                .await
                .map_err(io("start a peer proxy"))?;
            ports.push((free_port()?, proxy.port, listen));
            proxies.push(Some(proxy));
        }
        Self::lay_out(ports, dir, proxies)
    }

    /// (client port, advertised peer port, listening peer port) per member.
    fn lay_out(
        ports: Vec<(u16, u16, u16)>,
        dir: &Path,
        mut proxies: Vec<Option<Proxy>>,
    ) -> Result<Cluster, ProcError> {
        let bin = cairn_bin()?;
        proxies.resize_with(ports.len(), || None);
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p, _))| format!("m{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (c, p, l))| Member {
                name: format!("m{i}"),
                client_port: *c,
                peer_port: *p,
                listen_peer_port: *l,
                data_dir: dir.join(format!("m{i}")),
                log: dir.join(format!("m{i}.log")),
                initial_cluster: initial_cluster.clone(),
                cluster_state: "new",
                election_timeout_ms: 500,
                snapshot_count: 2000,
                extra_args: Vec::new(),
                bin: bin.clone(),
                env: Vec::new(),
                child: None,
                paused: false,
            })
            .collect();
        Ok(Cluster {
            members,
            proxies,
            dir: dir.to_path_buf(),
            bin,
        })
    }

    /// Lays out a member that will join with `--initial-cluster-state existing`.
    pub fn add_joiner(
        &mut self,
        name: &str,
        peer_port: u16,
        initial_cluster: String,
    ) -> Result<usize, ProcError> {
        self.members.push(Member {
            name: name.to_string(),
            client_port: free_port()?,
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
            env: Vec::new(),
            child: None,
            paused: false,
        });
        self.proxies.push(None);
        Ok(self.members.len() - 1)
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
