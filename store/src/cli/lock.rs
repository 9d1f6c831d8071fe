//! `lock NAME [COMMAND ARGS...]`: etcdctl's lock, through the Lock service. Prints the lock's key
//! (as `get` prints it) and holds the lock until ^C/SIGTERM; with a command, runs it while holding
//! the lock (with `ETCD_LOCK_KEY` and `ETCD_LOCK_REV` set) and exits with its status.
//!
//! Also home of [`Session`], the lease `lock` and `elect` keep alive while they hold something
//! (clientv3's `concurrency.Session`).
use std::ffi::OsString;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::sync::{mpsc, watch};

use super::{emit, exit, CliError, Context};
use crate::client::Client;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, RangeRequest,
};
use crate::proto::v3lockpb::lock_client::LockClient;
use crate::proto::v3lockpb::{LockRequest, UnlockRequest};

#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// <lockname> [exec-command arg1 arg2 ...]
    #[arg(
        value_name = "LOCKNAME [COMMAND ARGS...]",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<OsString>,
    /// Timeout for session (seconds), as etcdctl's `--ttl`.
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
}

/// A lease kept alive in the background until closed, or until the server says it is gone.
pub struct Session {
    pub lease: i64,
    client: Client,
    expired: watch::Receiver<bool>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Session {
    pub async fn start(ctx: &Context, client: &Client, ttl: i64) -> Result<Session, CliError> {
        let granted = ctx
            .call(
                client
                    .lease()
                    .lease_grant(ctx.request(LeaseGrantRequest { ttl, id: 0 })),
            )
            .await?;
        let (tx, expired) = watch::channel(false);
        let keeper = tokio::spawn(keep_alive(client.clone(), granted.id, granted.ttl, tx));
        Ok(Session {
            lease: granted.id,
            client: client.clone(),
            expired,
            keeper,
        })
    }

    /// Resolves when the lease is gone (expired, revoked, or not renewable in time).
    pub async fn expired(&self) {
        let mut rx = self.expired.clone();
        let _ = rx.wait_for(|gone| *gone).await;
    }

    /// Stops the keep-alives and revokes the lease, so whatever it holds is released now rather
    /// than after its TTL. Best effort: the TTL still bounds it if the revoke fails.
    pub async fn close(self, ctx: &Context) {
        self.keeper.abort();
        let _ = ctx
            .call(
                self.client
                    .lease()
                    .lease_revoke(ctx.request(LeaseRevokeRequest { id: self.lease })),
            )
            .await;
    }
}

/// clientv3's keep-alive loop: renew a third of the TTL after each answer; the lease is lost
/// when the server answers TTL <= 0, or when no renewal succeeded before its deadline.
async fn keep_alive(client: Client, id: i64, ttl: i64, expired: watch::Sender<bool>) {
    let ttl_of = |t: i64| Duration::from_secs(u64::try_from(t).unwrap_or(0));
    let mut deadline = Instant::now() + ttl_of(ttl);
    while Instant::now() < deadline {
        let (tx, rx) = mpsc::channel(1);
        let stream = client
            .lease()
            .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        if let Ok(stream) = stream {
            let mut responses = stream.into_inner();
            loop {
                if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
                    break;
                }
                match responses.message().await {
                    Ok(Some(resp)) if resp.ttl > 0 => {
                        deadline = Instant::now() + ttl_of(resp.ttl);
                        let every = (ttl_of(resp.ttl) / 3).max(Duration::from_millis(500));
                        tokio::time::sleep(every).await;
                    }
                    Ok(Some(_)) => {
                        let _ = expired.send(true);
                        return;
                    }
                    // The stream broke: reconnect below, as long as the lease may still live.
                    Ok(None) | Err(_) => break,
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = expired.send(true);
}

/// Resolves on ^C or SIGTERM (etcdctl's `signal.Notify(os.Interrupt, syscall.SIGTERM)`).
/// Registering it once at start keeps the signals from killing the process while it holds
/// something it must release.
pub struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Interrupts {
    pub fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

fn lock_client(client: &Client) -> LockClient<crate::client::Transport> {
    LockClient::new(client.channel())
}

pub async fn run(ctx: &Context, args: LockArgs) -> anyhow::Result<i32> {
    let Some((name, command)) = args.args.split_first() else {
        return Err(CliError::bad_args(
            "lock takes a lock name argument and an optional command to execute",
        )
        .into());
    };
    // `lock NAME -- CMD -x` (how etcdctl users keep the command's flags away from etcdctl's):
    // the trailing arguments keep the `--`, which is not part of the command.
    let command = match command.split_first() {
        Some((dashes, rest)) if dashes == "--" => rest,
        _ => command,
    };
    let name = name.as_encoded_bytes().to_vec();
    let mut interrupts = Interrupts::install()?;
    let client = ctx.connect().await?;
    let session = Session::start(ctx, &client, args.ttl).await?;
    let mut locks = lock_client(&client);
    // No deadline: waiting for the lock is the point. ^C abandons the request, and the server
    // withdraws our place in line when it sees the request cancelled.
    let attempt = locks.lock(LockRequest {
        name,
        lease: session.lease,
    });
    let locked = tokio::select! {
        r = attempt => r,
        _ = interrupts.recv() => {
            session.close(ctx).await;
            return Err(CliError::new(exit::ERROR, "context canceled").into());
        }
        _ = session.expired() => {
            return Err(CliError::new(exit::ERROR, "session expired").into());
        }
    };
    let locked = match locked {
        Ok(r) => r.into_inner(),
        Err(status) => {
            session.close(ctx).await;
            return Err(CliError::from_status(&status).into());
        }
    };
    let key = locked.key;
    let revision = locked.header.map_or(0, |h| h.revision);

    if let Some((program, rest)) = command.split_first() {
        let status = tokio::process::Command::new(program)
            .args(rest)
            .env(
                "ETCD_LOCK_KEY",
                OsString::from(String::from_utf8_lossy(&key).into_owned()),
            )
            .env("ETCD_LOCK_REV", revision.to_string())
            .status()
            .await;
        let unlocked = unlock(ctx, &client, &key).await;
        session.close(ctx).await;
        let status = status.map_err(|e| CliError::new(exit::ERROR, e.to_string()))?;
        if !status.success() {
            // etcdctl reports the command's failure as Go's ExitError and exits with its code.
            return Err(command_failed(status).into());
        }
        unlocked?;
        return Ok(exit::SUCCESS);
    }

    // etcdctl prints the key as `get` would, after checking it still exists.
    let got = ctx
        .call(client.kv().range(ctx.request(RangeRequest {
            key: key.clone(),
            ..Default::default()
        })))
        .await?;
    if got.kvs.is_empty() {
        session.close(ctx).await;
        return Err(CliError::new(exit::ERROR, "lock lost on init").into());
    }
    emit(&ctx.printer().get(&got)?)?;
    tokio::select! {
        _ = interrupts.recv() => {
            let unlocked = unlock(ctx, &client, &key).await;
            session.close(ctx).await;
            unlocked?;
            Ok(exit::SUCCESS)
        }
        _ = session.expired() => Err(CliError::new(exit::ERROR, "session expired").into()),
    }
}

async fn unlock(ctx: &Context, client: &Client, key: &[u8]) -> Result<(), CliError> {
    ctx.call(lock_client(client).unlock(ctx.request(UnlockRequest { key: key.to_vec() })))
        .await
        .map(|_| ())
}

/// How etcdctl reports a failed command (Go's `ExitError` text) and the code it exits with: the
/// command's own, or 255 (Go's -1) when a signal ended it.
fn command_failed(status: std::process::ExitStatus) -> CliError {
    use std::os::unix::process::ExitStatusExt as _;
    if let Some(code) = status.code() {
        return CliError::new(code, format!("exit status {code}"));
    }
    let name = match status.signal() {
        Some(1) => "hangup".to_string(),
        Some(2) => "interrupt".to_string(),
        Some(3) => "quit".to_string(),
        Some(6) => "aborted".to_string(),
        Some(9) => "killed".to_string(),
        Some(11) => "segmentation fault".to_string(),
        Some(13) => "broken pipe".to_string(),
        Some(15) => "terminated".to_string(),
        Some(n) => format!("signal {n}"),
        None => status.to_string(),
    };
    CliError::new(255, format!("signal: {name}"))
}
