//! `cairn serve` flags: etcd's names and defaults, so existing manifests and habits carry over.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    New,
    Existing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompactionMode {
    Periodic,
    Revision,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Human-readable name for this member.
    #[arg(long, default_value = "default", env = "ETCD_NAME")]
    pub name: String,
    /// Path to the data directory (default: `<name>.cairn` in the working directory).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379",
        env = "ETCD_LISTEN_CLIENT_URLS"
    )]
    pub listen_client_urls: Vec<String>,
    /// Client URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379",
        env = "ETCD_ADVERTISE_CLIENT_URLS"
    )]
    pub advertise_client_urls: Vec<String>,
    /// URLs to listen on for peer traffic.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2380",
        env = "ETCD_LISTEN_PEER_URLS"
    )]
    pub listen_peer_urls: Vec<String>,
    /// Extra URLs serving only the HTTP endpoints (/metrics, /health, ...), e.g. for a
    /// Prometheus scraper that should not reach the client port.
    #[arg(long, value_delimiter = ',', env = "ETCD_LISTEN_METRICS_URLS")]
    pub listen_metrics_urls: Vec<String>,
    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2380",
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS"
    )]
    pub initial_advertise_peer_urls: Vec<String>,
    /// Initial cluster configuration for bootstrapping: `name1=url1,name2=url2`
    /// (default: this member alone, `<name>=<initial-advertise-peer-urls>`).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// `new` bootstraps a cluster; `existing` joins one this member was added to.
    #[arg(
        long,
        value_enum,
        default_value = "new",
        env = "ETCD_INITIAL_CLUSTER_STATE"
    )]
    pub initial_cluster_state: ClusterState,
    /// Initial cluster token, mixed into cluster and member ids.
    #[arg(
        long,
        default_value = "etcd-cluster",
        env = "ETCD_INITIAL_CLUSTER_TOKEN"
    )]
    pub initial_cluster_token: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100, env = "ETCD_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, default_value_t = 1000, env = "ETCD_ELECTION_TIMEOUT")]
    pub election_timeout: u64,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = 1536 * 1024, env = "ETCD_MAX_REQUEST_BYTES")]
    pub max_request_bytes: usize,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, default_value_t = 128, env = "ETCD_MAX_TXN_OPS")]
    pub max_txn_ops: usize,
    /// Raise an alarm when the backend size exceeds this many bytes (0: the default, 2 GiB).
    #[arg(long, default_value_t = 0, env = "ETCD_QUOTA_BACKEND_BYTES")]
    pub quota_backend_bytes: i64,
    /// Number of committed entries that trigger a Raft snapshot (and allow log purging).
    // etcd's default. A cairn snapshot dumps the whole state machine: at 10,000, single puts
    // against a 64 MB state dumped it after every 3 MB of log, five times in the bench suite.
    #[arg(long, default_value_t = 100_000, env = "ETCD_SNAPSHOT_COUNT")]
    pub snapshot_count: u64,
    /// Also take a Raft snapshot once the log has grown by this many bytes since the last one,
    /// or by twice the last snapshot's size if that is larger, and keep at most this many bytes
    /// of entries after it (cairn batches concurrent writes into one entry, so entry counts
    /// alone let the log grow far); 0 turns this off.
    #[arg(long, default_value_t = 64 * 1024 * 1024, env = "CAIRN_SNAPSHOT_LOG_BYTES")]
    pub snapshot_log_bytes: u64,
    /// Entries kept after a snapshot so slow followers can catch up without one.
    #[arg(long, default_value_t = 5_000, env = "ETCD_SNAPSHOT_CATCHUP_ENTRIES")]
    pub snapshot_catchup_entries: u64,
    /// Interpret auto-compaction-retention as a duration (`periodic`) or a revision count.
    #[arg(
        long,
        value_enum,
        default_value = "periodic",
        env = "ETCD_AUTO_COMPACTION_MODE"
    )]
    pub auto_compaction_mode: CompactionMode,
    /// Auto-compaction retention: `0` disables; periodic takes hours (`1`) or a duration (`30m`).
    #[arg(long, default_value = "0", env = "ETCD_AUTO_COMPACTION_RETENTION")]
    pub auto_compaction_retention: String,
    /// Interval of progress notifications sent to watchers that asked for them (etcd's default;
    /// at least 100ms).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, env = "ETCD_WATCH_PROGRESS_NOTIFY_INTERVAL")]
    pub watch_progress_notify_interval: Duration,
    /// Path to the client server TLS cert file (used by `https` client URLs).
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA cert file (a bundle during a CA rollover).
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require client certificates signed by --trusted-ca-file on `https` client URLs.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH")]
    pub client_cert_auth: bool,
    /// Path to the peer server TLS cert file (also presented when dialing peers).
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// Path to the peer server TLS trusted CA file (verifies peers both ways).
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Require peer client certificates signed by --peer-trusted-ca-file.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH")]
    pub peer_client_cert_auth: bool,
    /// Auth token type: `simple` (etcd's default). `jwt` is not supported.
    #[arg(long, default_value = "simple", env = "ETCD_AUTH_TOKEN")]
    pub auth_token: String,
    /// Seconds a simple token stays valid without being used (etcd's default 300).
    #[arg(long, default_value_t = 300, env = "ETCD_AUTH_TOKEN_TTL")]
    pub auth_token_ttl: u64,
    /// Log level: debug, info, warn, error.
    #[arg(long, default_value = "info", env = "ETCD_LOG_LEVEL")]
    pub log_level: String,
}

pub const DEFAULT_QUOTA_BYTES: i64 = 2 * 1024 * 1024 * 1024;

/// The auto-compaction policy the flags describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    Off,
    /// Keep the history of the last `Duration`.
    Periodic(Duration),
    /// Keep the last N revisions.
    Revisions(i64),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--auth-token {0:?} is not supported (only \"simple\")")]
    UnsupportedAuthToken(String),
    #[error("--auth-token-ttl must be at least 1 second")]
    ZeroAuthTokenTtl,
    #[error("invalid --initial-cluster entry {0:?} (want name=url)")]
    BadInitialCluster(String),
    #[error("--initial-cluster has no entry for member {name:?}")]
    NotInInitialCluster { name: String },
    #[error("--initial-cluster lists {listed:?} for {name:?} but --initial-advertise-peer-urls is {advertised:?}")]
    PeerUrlMismatch {
        name: String,
        listed: Vec<String>,
        advertised: Vec<String>,
    },
    #[error("invalid --auto-compaction-retention {0:?}")]
    BadRetention(String),
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("--watch-progress-notify-interval must be at least 100ms")]
    ProgressIntervalTooShort,
    #[error("TLS key/cert (--cert-file, --key-file) must be provided for client url {0} with HTTPS scheme")]
    ClientTlsMissing(String),
    #[error("cannot listen on TLS for {0}: KeyFile and CertFile are not presented")]
    PeerTlsMissing(String),
    #[error("{flag} needs {ca_flag}")]
    CertAuthWithoutCa {
        flag: &'static str,
        ca_flag: &'static str,
    },
    #[error("--election-timeout ({election}ms) must be at least 5 x --heartbeat-interval ({heartbeat}ms)")]
    BadTiming { heartbeat: u64, election: u64 },
}

impl ServeArgs {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.cairn", self.name)))
    }

    pub fn quota_bytes(&self) -> i64 {
        if self.quota_backend_bytes <= 0 {
            DEFAULT_QUOTA_BYTES
        } else {
            self.quota_backend_bytes
        }
    }

    /// The initial members as (name, peer URLs), in the order given.
    pub fn initial_members(&self) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
        let spec = match &self.initial_cluster {
            Some(s) => s.clone(),
            None => self
                .initial_advertise_peer_urls
                .iter()
                .map(|u| format!("{}={u}", self.name))
                .collect::<Vec<_>>()
                .join(","),
        };
        parse_initial_cluster(&spec)
    }

    pub fn auto_compaction(&self) -> Result<AutoCompaction, ConfigError> {
        parse_retention(self.auto_compaction_mode, &self.auto_compaction_retention)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.election_timeout < 5 * self.heartbeat_interval {
            return Err(ConfigError::BadTiming {
                heartbeat: self.heartbeat_interval,
                election: self.election_timeout,
            });
        }
        if self.watch_progress_notify_interval < Duration::from_millis(100) {
            return Err(ConfigError::ProgressIntervalTooShort);
        }
        // etcd's `--auth-token` is `simple` or `jwt,<options>`; only simple tokens exist here.
        if self.auth_token.split(',').next() != Some("simple") {
            return Err(ConfigError::UnsupportedAuthToken(self.auth_token.clone()));
        }
        if self.auth_token_ttl == 0 {
            return Err(ConfigError::ZeroAuthTokenTtl);
        }
        for u in self
            .listen_client_urls
            .iter()
            .chain(&self.listen_peer_urls)
            .chain(&self.listen_metrics_urls)
        {
            socket_addr_of(u)?;
        }
        self.auto_compaction()?;
        self.validate_tls()?;
        let members = self.initial_members()?;
        if self.initial_cluster_state == ClusterState::New {
            let mine: Vec<String> = members
                .iter()
                .filter(|(n, _)| *n == self.name)
                .flat_map(|(_, u)| u.clone())
                .collect();
            if mine.is_empty() {
                return Err(ConfigError::NotInInitialCluster {
                    name: self.name.clone(),
                });
            }
            let mut a = mine.clone();
            let mut b = self.initial_advertise_peer_urls.clone();
            a.sort();
            b.sort();
            if a != b {
                return Err(ConfigError::PeerUrlMismatch {
                    name: self.name.clone(),
                    listed: mine,
                    advertised: self.initial_advertise_peer_urls.clone(),
                });
            }
        }
        Ok(())
    }
}

impl ServeArgs {
    /// The client side's TLS files (`--cert-file`, ...).
    pub fn client_tls(&self) -> crate::tls::TlsFiles {
        crate::tls::TlsFiles {
            cert: self.cert_file.clone(),
            key: self.key_file.clone(),
            trusted_ca: self.trusted_ca_file.clone(),
            client_cert_auth: self.client_cert_auth,
        }
    }

    /// The peer side's TLS files (`--peer-cert-file`, ...).
    pub fn peer_tls(&self) -> crate::tls::TlsFiles {
        crate::tls::TlsFiles {
            cert: self.peer_cert_file.clone(),
            key: self.peer_key_file.clone(),
            trusted_ca: self.peer_trusted_ca_file.clone(),
            client_cert_auth: self.peer_client_cert_auth,
        }
    }

    /// etcd's start-up checks: an `https` listener needs a certificate and key (same messages as
    /// etcd), and certificate authentication needs a CA to check against.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        if !self.client_tls().has_identity() {
            if let Some(u) = self.listen_client_urls.iter().find(|u| is_https(u)) {
                return Err(ConfigError::ClientTlsMissing(u.clone()));
            }
        }
        if !self.peer_tls().has_identity() {
            if let Some(u) = self.listen_peer_urls.iter().find(|u| is_https(u)) {
                let addr = socket_addr_of(u)?;
                return Err(ConfigError::PeerTlsMissing(addr.to_string()));
            }
        }
        if self.client_cert_auth && self.trusted_ca_file.is_none() {
            return Err(ConfigError::CertAuthWithoutCa {
                flag: "--client-cert-auth",
                ca_flag: "--trusted-ca-file",
            });
        }
        if self.peer_client_cert_auth && self.peer_trusted_ca_file.is_none() {
            return Err(ConfigError::CertAuthWithoutCa {
                flag: "--peer-client-cert-auth",
                ca_flag: "--peer-trusted-ca-file",
            });
        }
        Ok(())
    }
}

/// Whether a URL asks for TLS (`https`, or `unixs` as etcd spells it for unix sockets).
pub fn is_https(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("unixs://")
}

/// Parses `name1=url1,name1=url1b,name2=url2` into members (a name may repeat for more URLs).
pub fn parse_initial_cluster(spec: &str) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| ConfigError::BadInitialCluster(part.to_string()))?;
        if name.is_empty() || url.is_empty() {
            return Err(ConfigError::BadInitialCluster(part.to_string()));
        }
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(url.to_string()),
            None => out.push((name.to_string(), vec![url.to_string()])),
        }
    }
    if out.is_empty() {
        return Err(ConfigError::BadInitialCluster(spec.to_string()));
    }
    Ok(out)
}

fn parse_retention(mode: CompactionMode, value: &str) -> Result<AutoCompaction, ConfigError> {
    let bad = || ConfigError::BadRetention(value.to_string());
    let v = value.trim();
    if v.is_empty() || v == "0" {
        return Ok(AutoCompaction::Off);
    }
    match mode {
        CompactionMode::Revision => {
            let n: i64 = v.parse().map_err(|_| bad())?;
            Ok(if n <= 0 {
                AutoCompaction::Off
            } else {
                AutoCompaction::Revisions(n)
            })
        }
        CompactionMode::Periodic => {
            // etcd reads a bare number as hours.
            if let Ok(hours) = v.parse::<u64>() {
                return Ok(AutoCompaction::Periodic(Duration::from_secs(hours * 3600)));
            }
            let d = humantime::parse_duration(v).map_err(|_| bad())?;
            Ok(if d.is_zero() {
                AutoCompaction::Off
            } else {
                AutoCompaction::Periodic(d)
            })
        }
    }
}

/// The socket address a listen URL binds (`http://host:port`; `localhost` is 127.0.0.1).
pub fn socket_addr_of(u: &str) -> Result<std::net::SocketAddr, ConfigError> {
    let bad = |reason: &str| ConfigError::BadUrl {
        url: u.to_string(),
        reason: reason.to_string(),
    };
    let parsed = url::Url::parse(u).map_err(|e| bad(&e.to_string()))?;
    match parsed.scheme() {
        "http" | "https" | "unix" | "unixs" => {}
        other => return Err(bad(&format!("unsupported scheme {other:?}"))),
    }
    let port = parsed.port().ok_or_else(|| bad("no port"))?;
    let host = match parsed.host() {
        Some(url::Host::Domain("localhost")) => std::net::IpAddr::from([127, 0, 0, 1]),
        Some(url::Host::Ipv4(ip)) => ip.into(),
        Some(url::Host::Ipv6(ip)) => ip.into(),
        Some(url::Host::Domain(d)) => {
            return Err(bad(&format!("listen URLs need an IP address, not {d:?}")))
        }
        None => return Err(bad("no host")),
    };
    Ok(std::net::SocketAddr::new(host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parsing() {
        let m = parse_initial_cluster("a=http://1:2380,b=http://2:2380,a=http://1b:2380").unwrap();
        assert_eq!(
            m[0],
            (
                "a".into(),
                vec!["http://1:2380".into(), "http://1b:2380".into()]
            )
        );
        assert_eq!(m[1].0, "b");
        assert!(parse_initial_cluster("nonsense").is_err());
        assert!(parse_initial_cluster("").is_err());
    }

    #[test]
    fn retention_follows_etcd() {
        assert_eq!(
            parse_retention(CompactionMode::Periodic, "0").unwrap(),
            AutoCompaction::Off
        );
        assert_eq!(
            parse_retention(CompactionMode::Periodic, "1").unwrap(),
            AutoCompaction::Periodic(Duration::from_secs(3600))
        );
        assert_eq!(
            parse_retention(CompactionMode::Periodic, "30m").unwrap(),
            AutoCompaction::Periodic(Duration::from_secs(1800))
        );
        assert_eq!(
            parse_retention(CompactionMode::Revision, "1000").unwrap(),
            AutoCompaction::Revisions(1000)
        );
        assert!(parse_retention(CompactionMode::Revision, "x").is_err());
    }

    fn serve_args(flags: &[&str]) -> ServeArgs {
        #[derive(clap::Parser)]
        struct Cmd {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let argv = std::iter::once("serve").chain(flags.iter().copied());
        <Cmd as clap::Parser>::try_parse_from(argv).unwrap().serve
    }

    #[test]
    fn https_listeners_need_certificates_as_etcd_says() {
        let err = serve_args(&["--listen-client-urls", "https://127.0.0.1:2379"])
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379 with HTTPS scheme"
        );
        let err = serve_args(&[
            "--listen-peer-urls",
            "https://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "https://127.0.0.1:2380",
        ])
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented"
        );
        let tls = [
            "--listen-client-urls",
            "https://127.0.0.1:2379",
            "--cert-file",
            "c.pem",
            "--key-file",
            "k.pem",
        ];
        assert_eq!(serve_args(&tls).validate(), Ok(()));
        let mut auth = tls.to_vec();
        auth.push("--client-cert-auth");
        assert!(serve_args(&auth).validate().is_err());
        auth.extend(["--trusted-ca-file", "ca.pem"]);
        assert_eq!(serve_args(&auth).validate(), Ok(()));
        assert!(serve_args(&["--peer-client-cert-auth"]).validate().is_err());
    }

    #[test]
    fn listen_urls() {
        assert_eq!(
            socket_addr_of("http://localhost:2379").unwrap().to_string(),
            "127.0.0.1:2379"
        );
        assert_eq!(socket_addr_of("http://0.0.0.0:2379").unwrap().port(), 2379);
        assert!(socket_addr_of("http://example.com:1").is_err());
        assert!(socket_addr_of("ftp://1.2.3.4:1").is_err());
    }
}
