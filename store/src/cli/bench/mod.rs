//! `cairn bench`: load generator for any etcd v3 endpoint (cairn or etcd), after etcd's own
//! `benchmark` tool, plus the workloads Kubernetes puts on etcd.
//!
//! Layout: `runner` (the closed-loop driver, pacing, progress), `workloads` (one [`Worker`] per
//! workload and the key prefill), `watch` (watchers and put->delivery latency), `stats`
//! (percentiles, table, JSON), `keys` (pure helpers). `bench/compare.sh` at the repository root
//! drives this against etcd and cairn side by side.
//!
//! [`Worker`]: runner::Worker

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use super::{exit, gofmt, Context};
use crate::client::Client;

pub mod keys;
pub mod runner;
pub mod stats;
pub mod watch;
pub mod workloads;

/// `cairn bench <workload>`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub workload: Workload,
}

#[derive(Debug, Subcommand)]
pub enum Workload {
    /// Puts keys (sequential or random within --key-space-size).
    Put(PutArgs),
    /// Reads one key, linearizable (l) or serializable (s).
    Range(RangeArgs),
    /// Compare-mod_revision-then-put, retrying on conflict (Kubernetes' GuaranteedUpdate).
    TxnPut(TxnPutArgs),
    /// Lists a prefix in pages at a pinned revision (kube-apiserver's paged LIST).
    List(ListArgs),
    /// W watchers on a prefix, P puts into it; measures put -> event delivery latency.
    Watch(WatchArgs),
    /// Lease keep-alive round trips, one lease and one keep-alive stream per client.
    LeaseKeepalive(LeaseArgs),
    /// Gets, paged lists, compare-and-put updates and lease grants in Kubernetes-like shares.
    K8sMix(MixArgs),
    /// Writes --keys keys in batched txns (setup for churn, restart and size measurements).
    Fill(FillArgs),
}

/// Options every workload takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// gRPC connections (tonic channels), shared round-robin by the clients and spread over
    /// --endpoints.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Total operations (default 10000 when neither --total nor --duration is given).
    #[arg(long)]
    pub total: Option<u64>,
    /// Run for this long instead (Go duration: 30s, 2m).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Limit to this many operations per second over all clients.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Print one JSON line for the run instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Free text carried into the output (e.g. which server this run targeted).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Prefix of every key the workload touches.
    #[arg(long, default_value = "bench/")]
    pub prefix: String,
    /// Bytes of each key after the prefix.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Bytes of each value.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Deadline of one operation (a late one counts as an error).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub op_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Keys in order 0, 1, 2, ... instead of random.
    #[arg(long)]
    pub sequential_keys: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable (ReadIndex through the leader).
    L,
    /// Serializable (the member's local state).
    S,
}

#[derive(Debug, Clone, Args)]
pub struct RangeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
}

#[derive(Debug, Clone, Args)]
pub struct TxnPutArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Number of objects; each client updates its own share of them.
    #[arg(long, default_value_t = 1000)]
    pub key_space_size: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Keys under the prefix (written before the run if the count differs).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Page size.
    #[arg(long, default_value_t = 500)]
    pub limit: i64,
    /// Consistency of the first page; later pages are pinned to its revision.
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Watchers, all on the workload's prefix.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Watch streams the watchers are spread over (spread over --conns).
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Puts into the watched prefix (each is delivered to every watcher).
    #[arg(long, default_value_t = 1000)]
    pub puts: u64,
    /// Distinct keys the puts go to.
    #[arg(long, default_value_t = 100)]
    pub key_space_size: u64,
}

#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// TTL of each client's lease, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ttl: i64,
}

#[derive(Debug, Clone, Args)]
pub struct MixArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Objects in the collection (written before the run if the count differs).
    #[arg(long, default_value_t = 2000)]
    pub objects: u64,
    /// Page size of lists.
    #[arg(long, default_value_t = 500)]
    pub limit: i64,
    /// Share of single-object quorum gets.
    #[arg(long, default_value_t = 30)]
    pub get_weight: u32,
    /// Share of paged lists of the whole collection.
    #[arg(long, default_value_t = 2)]
    pub list_weight: u32,
    /// Share of compare-and-put updates.
    #[arg(long, default_value_t = 60)]
    pub update_weight: u32,
    /// Share of lease grants (each followed by a put attached to it, as an Event is created).
    #[arg(long, default_value_t = 8)]
    pub lease_weight: u32,
}

#[derive(Debug, Clone, Args)]
pub struct FillArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Keys to write: the prefix followed by 0..keys, --key-size digits.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Puts per txn (etcd's --max-txn-ops defaults to 128).
    #[arg(long, default_value_t = 100)]
    pub batch: u64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    gofmt::parse_duration(s)
}

/// Opens `conns` channels, spread round-robin over the endpoints.
pub async fn connect_all(ctx: &Context, conns: usize) -> anyhow::Result<Vec<Client>> {
    let opts = ctx.connect_options()?;
    let endpoints = &ctx.global.endpoints;
    if endpoints.is_empty() {
        anyhow::bail!("no endpoint given");
    }
    let mut out = Vec::with_capacity(conns.max(1));
    for c in 0..conns.max(1) {
        let ep = endpoints[c % endpoints.len()].clone();
        out.push(Client::connect(&[ep], &opts).await?);
    }
    Ok(out)
}

/// Runs one benchmark and prints its result (table on stdout, or one JSON line).
pub async fn run(ctx: &Context, args: BenchArgs) -> anyhow::Result<i32> {
    let report = match args.workload {
        Workload::Put(a) => workloads::put(ctx, a).await?,
        Workload::Range(a) => workloads::range(ctx, a).await?,
        Workload::TxnPut(a) => workloads::txn_put(ctx, a).await?,
        Workload::List(a) => workloads::list(ctx, a).await?,
        Workload::Watch(a) => watch::run(ctx, a).await?,
        Workload::LeaseKeepalive(a) => workloads::lease_keepalive(ctx, a).await?,
        Workload::K8sMix(a) => workloads::k8s_mix(ctx, a).await?,
        Workload::Fill(a) => workloads::fill(ctx, a).await?,
    };
    let (report, json) = report;
    if json {
        super::emit(format!("{}\n", stats::json_line(&report)).as_bytes())?;
    } else {
        super::emit(stats::format_table(&report).as_bytes())?;
    }
    // Errors are part of the measurement (they show in the table); only a run in which nothing
    // succeeded is a failed command.
    let failed = report
        .rows
        .first()
        .is_some_and(|r| r.summary.ops == 0 && r.summary.errors > 0);
    Ok(if failed { exit::ERROR } else { exit::SUCCESS })
}
