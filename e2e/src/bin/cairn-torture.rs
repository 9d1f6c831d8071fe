//! `cairn-torture`: runs a cluster of real `cairn` processes under a nemesis while clients and
//! watchers record a history, then checks it (linearizability per key, revision rules, watch
//! guarantees, no lost acknowledged write, converged members). Exit status 1 on any problem,
//! with the seed to repeat the run.

use std::path::PathBuf;
use std::time::Duration;

use cairn_e2e::nemesis;
use cairn_e2e::run::{self, Config};
use cairn_e2e::workload::Workload;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "cairn-torture",
    about = "Fault injection and history checking for cairn"
)]
struct Args {
    /// How long the workload and the nemesis run (humantime: 90s, 10m, 2h).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of every random choice (clients, watchers, nemesis); random when absent.
    #[arg(long)]
    seed: Option<u64>,
    /// Faults: a comma list of kill, kill-leader, pause, pause-leader, move-leader, member,
    /// partition, partition-leader, partition-halves, slow-net (network faults use network
    /// namespaces when run as root, else one-sided proxies); or
    /// `all` / `none`.
    #[arg(long, default_value = "all")]
    nemesis: String,
    #[arg(long, default_value_t = 3)]
    members: usize,
    #[arg(long, default_value_t = 6)]
    clients: usize,
    #[arg(long, default_value_t = 2)]
    watchers: usize,
    /// Keys the clients share (fewer keys: more contention, harder checks).
    #[arg(long, default_value_t = 8)]
    keys: usize,
    /// Where data, logs and the history go (kept); a fresh temporary directory by default,
    /// kept only when the run fails.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Repeat runs with seeds seed, seed+1, ... until the total duration is used up.
    #[arg(long, default_value_t = 1)]
    runs: u32,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m, h)")),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let faults = nemesis::parse_list(&args.nemesis).map_err(anyhow::Error::msg)?;
    let first_seed = args.seed.unwrap_or_else(rand::random);
    let mut failed = 0;
    for i in 0..args.runs {
        let seed = first_seed.wrapping_add(u64::from(i));
        let tmp = tempfile::Builder::new()
            .prefix("cairn-torture-")
            .tempdir()?;
        let dir = match &args.dir {
            Some(d) => d.join(format!("seed-{seed}")),
            None => tmp.path().to_path_buf(),
        };
        let cfg = Config {
            members: args.members,
            duration: args.duration,
            seed,
            nemesis: faults.clone(),
            clients: args.clients,
            watchers: args.watchers,
            workload: Workload {
                keys: args.keys,
                ..Workload::default()
            },
            dir,
        };
        eprintln!(
            "cairn-torture: seed {seed}, {:?}, nemesis {}",
            args.duration, args.nemesis
        );
        let report = run::run(cfg).await?;
        println!("{}", serde_json::to_string(&report)?);
        if report.ok() {
            eprintln!("cairn-torture: seed {seed}: OK");
        } else {
            failed += 1;
            if args.dir.is_none() {
                let _ = tmp.keep();
            }
            eprintln!("{}", run::describe(&report));
            eprintln!(
                "repeat with: cairn-torture --seed {seed} --duration {:?} --nemesis {}",
                args.duration, args.nemesis
            );
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} run(s) failed", args.runs);
    }
    Ok(())
}
