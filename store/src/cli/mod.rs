//! The client side of the `cairn` binary: etcdctl-compatible subcommands.
//!
//! Every command follows etcdctl (3.5) in flags, output bytes and exit codes, so scripts written
//! for etcdctl keep working. Layout: `kv` (put/get/del/compaction), `txn` (etcdctl's txn grammar),
//! `watch` + `watch_print`, `lease`, `member`, `endpoint` (status/health/hashkv), `maintenance`
//! (alarm/defrag/move-leader/snapshot save), `output` (KV response printers), `gofmt`/`table`
//! (the Go spellings etcdctl's output is made of).
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::client::{Client, ConnectOptions, Credentials};

pub mod auth;
pub mod bench;
pub mod elect;
pub mod endpoint;
pub mod gofmt;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod member;
pub mod output;
pub mod snapshot_offline;
pub mod table;
pub mod txn;
pub mod watch;
pub mod watch_print;

/// etcdctl's exit codes (`cobrautl.Exit*`), kept so scripts can tell failures apart.
pub mod exit {
    pub const SUCCESS: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const BAD_CONNECTION: i32 = 2;
    pub const INVALID_INPUT: i32 = 3;
    pub const BAD_FEATURE: i32 = 4;
    pub const INTERRUPTED: i32 = 5;
    pub const BAD_ARGS: i32 = 128;
}

/// Output formats of `-w/--write-out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Simple,
    Json,
    Protobuf,
    Fields,
    Table,
}

/// Options every client subcommand shares (etcdctl's global flags).
///
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// gRPC endpoints, comma separated.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379",
        env = "ETCDCTL_ENDPOINTS"
    )]
    pub endpoints: Vec<String>,
    /// Dial timeout for client connections (Go duration, e.g. 2s, 500ms).
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration_arg, env = "ETCDCTL_DIAL_TIMEOUT")]
    pub dial_timeout: Duration,
    /// Timeout for short running commands (excluding dial timeout).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration_arg, env = "ETCDCTL_COMMAND_TIMEOUT")]
    pub command_timeout: Duration,
    /// Output format.
    #[arg(
        short = 'w',
        long,
        global = true,
        value_enum,
        default_value = "simple",
        env = "ETCDCTL_WRITE_OUT"
    )]
    pub write_out: OutputFormat,
    /// Print byte strings as hex encoded strings.
    #[arg(long, global = true, env = "ETCDCTL_HEX")]
    pub hex: bool,
    /// Verify certificates of TLS-enabled secure servers using this CA bundle.
    #[arg(long, global = true, env = "ETCDCTL_CACERT")]
    pub cacert: Option<PathBuf>,
    /// Identify secure client using this TLS certificate file.
    #[arg(long, global = true, env = "ETCDCTL_CERT")]
    pub cert: Option<PathBuf>,
    /// Identify secure client using this TLS key file.
    #[arg(long, global = true, env = "ETCDCTL_KEY")]
    pub key: Option<PathBuf>,
    /// Skip server certificate verification (CAUTION: this is insecure).
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY")]
    pub insecure_skip_tls_verify: bool,
    /// Disable transport security for client connections (`--insecure-transport=false` dials
    /// TLS with the system's CAs even without --cacert).
    #[arg(long, global = true, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          env = "ETCDCTL_INSECURE_TRANSPORT")]
    pub insecure_transport: bool,
    /// Username[:password] for authentication (prompt if password is not supplied).
    #[arg(long, global = true, env = "ETCDCTL_USER")]
    pub user: Option<String>,
    /// Password for authentication (if this option is used, --user option shouldn't include password).
    #[arg(long, global = true, env = "ETCDCTL_PASSWORD")]
    pub password: Option<String>,
}

impl GlobalArgs {
    /// TLS as etcdctl decides it: any TLS flag, or `--insecure-transport=false`, turns it on for
    /// endpoints without a scheme; `https://` endpoints use it regardless.
    pub fn client_tls(&self) -> Option<crate::client::ClientTls> {
        let wanted = self.cacert.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.insecure_skip_tls_verify
            || !self.insecure_transport;
        wanted.then(|| crate::client::ClientTls {
            ca_file: self.cacert.clone(),
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            insecure_skip_verify: self.insecure_skip_tls_verify,
        })
    }
}

/// etcdctl's `--user`/`--password` rules: `name:password` in one flag, or the name with
/// `--password`, or the name alone and the password read from stdin.
pub fn credentials(
    user: Option<&str>,
    password: Option<&str>,
    read_password: impl FnOnce() -> std::io::Result<String>,
) -> Result<Option<Credentials>, CliError> {
    let Some(user) = user else {
        return Ok(None);
    };
    // With --password the whole --user value is the name, colons included (as etcdctl).
    let (name, pw) = match (password, user.split_once(':')) {
        (Some(pw), _) => (user.to_string(), pw.to_string()),
        (None, Some((name, pw))) => (name.to_string(), pw.to_string()),
        (None, None) => {
            let pw = read_password()
                .map_err(|e| CliError::bad_args(format!("failed to read password: {e}")))?;
            (user.to_string(), pw)
        }
    };
    if name.is_empty() {
        return Err(CliError::bad_args("empty user name"));
    }
    Ok(Some(Credentials {
        user: name,
        password: pw,
    }))
}

/// Reads one line of stdin (without its newline) after a prompt on stderr.
pub fn read_secret(prompt: &str) -> std::io::Result<String> {
    eprint!("{prompt}");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    gofmt::parse_duration(s)
}

/// Client subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Puts the given key into the store.
    Put(kv::PutArgs),
    /// Gets the key or a range of keys.
    Get(kv::GetArgs),
    /// Removes the specified key or range of keys [key, range_end).
    Del(kv::DelArgs),
    /// Txn processes all the requests in one transaction (read from stdin).
    Txn(txn::TxnArgs),
    /// Compacts the event history.
    Compaction(kv::CompactionArgs),
    /// Endpoint related commands.
    #[command(subcommand)]
    Endpoint(endpoint::EndpointCommand),
    /// Watches events stream on keys or prefixes.
    Watch(watch::WatchArgs),
    /// Lease related commands.
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// Membership related commands.
    #[command(subcommand)]
    Member(member::MemberCommand),
    /// Alarm related commands.
    #[command(subcommand)]
    Alarm(maintenance::AlarmCommand),
    /// Defragments the storage of the etcd members with given endpoints.
    Defrag(maintenance::DefragArgs),
    /// Transfers leadership to another etcd cluster member.
    #[command(name = "move-leader")]
    MoveLeader(maintenance::MoveLeaderArgs),
    /// Manages etcd node snapshots.
    #[command(subcommand)]
    Snapshot(maintenance::SnapshotCommand),
    /// Benchmarks an etcd v3 endpoint (cairn or etcd): put, range, txn-put, list, watch, ...
    Bench(bench::BenchArgs),
    /// Acquires a named lock.
    Lock(lock::LockArgs),
    /// Observes and participates in leader election.
    Elect(elect::ElectArgs),
    /// User related commands.
    #[command(subcommand)]
    User(auth::UserCommand),
    /// Role related commands.
    #[command(subcommand)]
    Role(auth::RoleCommand),
    /// Enable or disable authentication.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
}

/// A failed command: what etcdctl would print after `Error: `, and its exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_args(message: impl Into<String>) -> Self {
        Self::new(exit::BAD_ARGS, message)
    }

    /// An RPC failure, worded as etcdctl words it.
    pub fn from_status(status: &tonic::Status) -> Self {
        Self::new(exit::ERROR, status_message(status))
    }
}

/// etcd's own errors reach etcdctl users as their bare text (`etcdserver: ...`); anything else
/// shows as Go's gRPC status string.
pub fn status_message(status: &tonic::Status) -> String {
    if status.code() == tonic::Code::DeadlineExceeded {
        return "context deadline exceeded".to_string();
    }
    if status.message().starts_with("etcdserver: ") {
        return status.message().to_string();
    }
    format!(
        "rpc error: code = {} desc = {}",
        go_code_name(status.code()),
        status.message()
    )
}

fn go_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// What a command needs from the global flags: connections, deadlines, the printer.
pub struct Context {
    pub global: GlobalArgs,
}

impl Context {
    pub fn connect_options(&self) -> Result<ConnectOptions, CliError> {
        let credentials = credentials(
            self.global.user.as_deref(),
            self.global.password.as_deref(),
            || read_secret("Password: "),
        )?;
        Ok(ConnectOptions {
            dial_timeout: self.global.dial_timeout,
            request_timeout: None,
            tls: self.global.client_tls(),
            credentials,
        })
    }

    /// Connects to the first endpoint of `--endpoints` that answers.
    pub async fn connect(&self) -> Result<Client, CliError> {
        self.connect_to(&self.global.endpoints).await
    }

    pub async fn connect_to(&self, endpoints: &[String]) -> Result<Client, CliError> {
        Client::connect(endpoints, &self.connect_options()?)
            .await
            .map_err(|e| {
                // etcdctl fails to build its client when Authenticate fails: a bad connection.
                let code = match e {
                    crate::client::ClientError::Auth(_) => exit::BAD_CONNECTION,
                    _ => exit::ERROR,
                };
                CliError::new(code, e.to_string())
            })
    }

    /// Wraps a request so the server learns the command deadline (grpc-timeout).
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.set_timeout(self.global.command_timeout);
        req
    }

    /// Runs one RPC under `--command-timeout`, mapping failures to etcdctl's wording.
    pub async fn call<T, F>(&self, rpc: F) -> Result<T, CliError>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_status(rpc)
            .await
            .map_err(|s| CliError::from_status(&s))
    }

    /// Like [`Context::call`], keeping the gRPC status for callers that branch on its code.
    pub async fn call_status<T, F>(&self, rpc: F) -> Result<T, tonic::Status>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(self.global.command_timeout, rpc).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(tonic::Status::deadline_exceeded(
                "context deadline exceeded",
            )),
        }
    }

    pub fn printer(&self) -> output::Printer {
        output::Printer::new(self.global.write_out, self.global.hex)
    }
}

/// Writes a command's output to stdout in one piece.
pub fn emit(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

/// Runs one client subcommand; returns the process exit code.
pub async fn run(global: GlobalArgs, command: ClientCommand) -> anyhow::Result<i32> {
    let ctx = Context { global };
    let result = match command {
        ClientCommand::Put(args) => kv::put(&ctx, args).await,
        ClientCommand::Get(args) => kv::get(&ctx, args).await,
        ClientCommand::Del(args) => kv::del(&ctx, args).await,
        ClientCommand::Txn(args) => txn::run(&ctx, args).await,
        ClientCommand::Compaction(args) => kv::compaction(&ctx, args).await,
        ClientCommand::Endpoint(cmd) => endpoint::run(&ctx, cmd).await,
        ClientCommand::Watch(args) => watch::run(&ctx, args).await,
        ClientCommand::Lease(cmd) => lease::run(&ctx, cmd).await,
        ClientCommand::Member(cmd) => member::run(&ctx, cmd).await,
        ClientCommand::Alarm(cmd) => maintenance::alarm(&ctx, cmd).await,
        ClientCommand::Defrag(args) => maintenance::defrag(&ctx, args).await,
        ClientCommand::MoveLeader(args) => maintenance::move_leader(&ctx, args).await,
        ClientCommand::Snapshot(cmd) => maintenance::snapshot(&ctx, cmd).await,
        ClientCommand::Bench(args) => bench::run(&ctx, args).await,
        ClientCommand::Lock(args) => lock::run(&ctx, args).await,
        ClientCommand::Elect(args) => elect::run(&ctx, args).await,
        ClientCommand::User(cmd) => auth::user(&ctx, cmd).await,
        ClientCommand::Role(cmd) => auth::role(&ctx, cmd).await,
        ClientCommand::Auth(cmd) => auth::auth(&ctx, cmd).await,
    };
    match result {
        Ok(code) => Ok(code),
        Err(e) => match e.downcast::<CliError>() {
            Ok(cli) => {
                eprintln!("Error: {}", cli.message);
                Ok(cli.code)
            }
            Err(other) => Err(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(args: &[&str]) -> GlobalArgs {
        #[derive(clap::Parser)]
        struct Cmd {
            #[command(flatten)]
            global: GlobalArgs,
        }
        let argv = std::iter::once("cairn").chain(args.iter().copied());
        <Cmd as clap::Parser>::try_parse_from(argv).unwrap().global
    }

    #[test]
    fn tls_flags_follow_etcdctl() {
        assert_eq!(global(&[]).client_tls(), None);
        assert_eq!(global(&["--insecure-transport"]).client_tls(), None);
        let tls = global(&["--cacert", "ca.pem", "--cert", "c.pem", "--key", "k.pem"])
            .client_tls()
            .unwrap();
        assert_eq!(tls.ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(tls.cert_file, Some(PathBuf::from("c.pem")));
        assert!(!tls.insecure_skip_verify);
        let skip = global(&["--insecure-skip-tls-verify"])
            .client_tls()
            .unwrap();
        assert!(skip.insecure_skip_verify && skip.ca_file.is_none());
        let system = global(&["--insecure-transport=false"])
            .client_tls()
            .unwrap();
        assert_eq!(system, crate::client::ClientTls::default());
    }

    #[test]
    fn etcd_errors_print_bare_and_others_as_go_status() {
        let compacted =
            tonic::Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        assert_eq!(
            status_message(&compacted),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let unimpl = tonic::Status::unimplemented("unknown service etcdserverpb.Maintenance");
        assert_eq!(
            status_message(&unimpl),
            "rpc error: code = Unimplemented desc = unknown service etcdserverpb.Maintenance"
        );
        let late =
            tonic::Status::deadline_exceeded("Deadline expired before operation could complete");
        assert_eq!(status_message(&late), "context deadline exceeded");
    }
}
