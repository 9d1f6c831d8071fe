//! One torture run: start a cluster, run clients, watchers and the nemesis for a while, heal,
//! read everything back, then check the recorded history. Every failure names the seed and
//! prints a minimized history; the full history is left in the run directory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cairn_store::proto::etcdserverpb::{HashKvRequest, RangeRequest};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::history::{self, Input, OpRecord, Output};
use crate::model;
use crate::nemesis::{self, Fault, FaultRecord};
use crate::netns::Netns;
use crate::procs::{self, Cluster};
use crate::slice;
use crate::watch_check;
use crate::watchers::{self, WatchShared};
use crate::workload::{self, connect, Shared, Workload};

/// What a run does.
#[derive(Debug, Clone)]
pub struct Config {
    pub members: usize,
    pub duration: Duration,
    pub seed: u64,
    pub nemesis: Vec<Fault>,
    pub clients: usize,
    pub watchers: usize,
    pub workload: Workload,
    /// Where the cluster's data, logs and the recorded history go.
    pub dir: PathBuf,
}

/// What a run found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub duration_secs: f64,
    pub operations: usize,
    pub acknowledged_writes: usize,
    pub unknown_outcomes: usize,
    pub reads: usize,
    pub watch_events: usize,
    pub faults: Vec<(Fault, usize)>,
    /// How network faults were injected (two-way with namespaces, or one-sided proxies).
    pub network: String,
    pub final_revision: i64,
    pub problems: Vec<String>,
    pub dir: PathBuf,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Errors that stop a run before it can be judged (not findings about the store).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Proc(#[from] procs::ProcError),
    #[error("the cluster elected no leader within {0:?}")]
    NoLeader(Duration),
    #[error("writing the history: {0}")]
    Io(#[from] std::io::Error),
}

/// The cluster for a run, and how its network faults work (for the report): network
/// namespaces when the nemesis has network faults and this machine allows them, else peer
/// proxies, said loudly since those partitions are one-sided.
async fn layout(cfg: &Config) -> Result<(Cluster, String), RunError> {
    if !cfg.nemesis.iter().any(|f| f.needs_network()) {
        return Ok((Cluster::new(cfg.members, &cfg.dir)?, "none".into()));
    }
    let why = match Netns::probe() {
        Ok(()) => match Cluster::new_netns(cfg.members, &cfg.dir) {
            Ok(c) => return Ok((c, "two-way partitions (network namespaces)".into())),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    eprintln!(
        "cairn-torture: WARNING: no network namespaces ({why}); partitions are ONE-SIDED \
         (a proxy blackholes what others send a member, its own requests still flow) and \
         slow-net is skipped"
    );
    let c = Cluster::new_proxied(cfg.members, &cfg.dir).await?;
    Ok((c, format!("one-sided partitions (proxies): {why}")))
}

pub async fn run(cfg: Config) -> Result<Report, RunError> {
    std::fs::create_dir_all(&cfg.dir)?;
    let (mut cluster, network) = layout(&cfg).await?;
    cluster.start_all()?;
    let eps = cluster.all_endpoints();
    if procs::wait_leader(&eps, Duration::from_secs(30))
        .await
        .is_none()
    {
        return Err(RunError::NoLeader(Duration::from_secs(30)));
    }
    let cluster = Arc::new(Mutex::new(cluster));
    let shared = Shared::new(eps);
    let ws = WatchShared::new();

    let mut watcher_tasks = Vec::new();
    for w in 0..cfg.watchers {
        watcher_tasks.push(tokio::spawn(watchers::run_watcher(
            w,
            cfg.seed ^ (0x5741_u64 << 32) ^ w as u64,
            shared.clone(),
            ws.clone(),
            Duration::from_secs(60),
        )));
    }
    let mut clients = Vec::new();
    for c in 0..cfg.clients {
        clients.push(tokio::spawn(workload::run_client(
            c,
            cfg.seed.wrapping_mul(1_000_003).wrapping_add(c as u64),
            cfg.workload.clone(),
            shared.clone(),
        )));
    }
    let nemesis = tokio::spawn(nemesis::run_nemesis(
        cfg.seed,
        cfg.nemesis.clone(),
        cluster.clone(),
        shared.clone(),
    ));

    tokio::time::sleep(cfg.duration).await;
    shared.stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.await;
    }
    let faults = nemesis.await.unwrap_or_default();
    nemesis::heal(&cluster).await;

    let mut problems = Vec::new();
    let all = cluster.lock().await.all_endpoints();
    if let Ok(mut e) = shared.endpoints.lock() {
        *e = all.clone();
    }
    let leader = procs::wait_leader(&all, Duration::from_secs(60)).await;
    if leader.is_none() {
        problems.push("no leader within 60s after healing".to_string());
    }

    // Keys on expiring leases must go away (before the final reads, so that the watchers,
    // which stop at the final revision, see their deletion).
    let (expiry_problems, expired) = expiry_check(&cfg.workload, &shared, &all).await;
    problems.extend(expiry_problems);

    // Final linearizable reads of every key become part of the history: an acknowledged write
    // that was lost shows up as a violation there.
    let final_revision = final_reads(&cfg.workload, &shared, &all).await;
    ws.final_revision
        .store(final_revision.max(1), Ordering::SeqCst);
    for w in watcher_tasks {
        let _ = w.await;
    }

    let history: Vec<OpRecord> = shared.history.lock().map(|h| h.clone()).unwrap_or_default();
    let watch_records = ws.records.lock().map(|r| r.clone()).unwrap_or_default();
    history::write_jsonl(&cfg.dir.join("history.jsonl"), &history)?;
    history::write_jsonl(&cfg.dir.join("watch.jsonl"), &watch_records)?;
    history::write_jsonl(&cfg.dir.join("nemesis.jsonl"), &faults)?;

    if let Some((leader_ep, _)) = &leader {
        for (text, at) in lost_writes_located(leader_ep, &history).await {
            // The seed is in the report's first line; the slice shows the write's neighbours.
            problems.push(match at {
                Some((key, rev)) => {
                    text + &slice::describe(&history, &watch_records, Some(&key), rev)
                }
                None => text,
            });
        }
        problems.extend(converged(&all).await);
    }
    let lin = model::check_linearizable(&history, Duration::from_secs(60));
    for v in &lin.violations {
        let mut text = format!(
            "key {} is not linearizable; minimal history ({} ops):",
            v.key,
            v.minimal.len()
        );
        for op in &v.minimal {
            text.push_str(&format!(
                "\n    {}",
                serde_json::to_string(op).unwrap_or_default()
            ));
        }
        problems.push(text);
    }
    for k in &lin.undecided {
        problems.push(format!(
            "key {k}: the linearizability search ran out of time"
        ));
    }
    problems.extend(model::check_revisions(&history));
    problems.extend(model::check_pairs(&history));
    problems.extend(watch_check::check_expired_seen(&watch_records, &expired));
    // Watch problems can be many (one lost event shows up in every watcher): print the history
    // around the first few.
    for (n, p) in watch_check::check_watches_located(&watch_records, &history, final_revision)
        .into_iter()
        .enumerate()
    {
        problems.push(if n < 5 {
            p.text + &slice::describe(&history, &watch_records, p.key.as_deref(), p.revision)
        } else {
            p.text
        });
    }

    let count = |f: Fault| {
        faults
            .iter()
            .filter(|r: &&FaultRecord| r.fault == f)
            .count()
    };
    Ok(Report {
        seed: cfg.seed,
        duration_secs: cfg.duration.as_secs_f64(),
        operations: history.len(),
        acknowledged_writes: history
            .iter()
            .filter(|o| o.write_revision().is_some())
            .count(),
        unknown_outcomes: history
            .iter()
            .filter(|o| matches!(o.output, Output::Unknown { .. }))
            .count(),
        reads: history.iter().filter(|o| o.input.is_read()).count(),
        watch_events: watch_records
            .iter()
            .map(|r| match r {
                history::WatchRecord::Events { events, .. } => events.len(),
                _ => 0,
            })
            .sum(),
        faults: Fault::ALL
            .iter()
            .map(|&f| (f, count(f)))
            .filter(|(_, n)| *n > 0)
            .collect(),
        network,
        final_revision,
        problems,
        dir: cfg.dir.clone(),
    })
}

/// Every key an expiring put was sent to must be absent within the lease's TTL plus a margin
/// for elections after healing (a new leader restarts every lease's clock). The reads are
/// recorded. Returns the problems and the keys seen gone.
async fn expiry_check(
    w: &Workload,
    shared: &Shared,
    endpoints: &[String],
) -> (Vec<String>, Vec<String>) {
    let history = shared.history.lock().map(|h| h.clone()).unwrap_or_default();
    let mut ttl = 0;
    let mut keys: Vec<String> = Vec::new();
    for op in &history {
        if let Input::PutExpiring { ttl: t, .. } = op.input {
            ttl = ttl.max(t);
            if !keys.contains(&op.key) {
                keys.push(op.key.clone());
            }
        }
    }
    let margin = Duration::from_secs(15);
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(u64::try_from(ttl).unwrap_or(0)) + margin;
    let mut pending = keys.clone();
    let mut last = HashMap::new();
    while !pending.is_empty() && tokio::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for key in pending {
            let mut gone = false;
            for ep in endpoints {
                let Some(output) = recorded_get(shared, ep, &key, w.request_timeout).await else {
                    continue;
                };
                if let Output::Get { value, .. } = output {
                    gone = value.is_none();
                    last.insert(key.clone(), value);
                }
                break;
            }
            if !gone {
                still.push(key);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let problems = pending
        .iter()
        .map(|k| {
            format!(
                "{k} was put on a lease of {ttl}s nobody kept alive, and still holds {:?} {}s after the run healed",
                last.get(k).cloned().flatten(),
                ttl + i64::try_from(margin.as_secs()).unwrap_or(0)
            )
        })
        .collect();
    let gone = keys.into_iter().filter(|k| !pending.contains(k)).collect();
    (problems, gone)
}

/// One linearizable get of `key` on `endpoint` by the checker itself (client `usize::MAX`),
/// recorded in the history when it answered; `None` when it did not (try another member).
async fn recorded_get(
    shared: &Shared,
    endpoint: &str,
    key: &str,
    timeout: Duration,
) -> Option<Output> {
    let c = connect(endpoint).await?;
    let call = shared.now();
    let output = tokio::time::timeout(timeout, workload::execute(&c, key, &Input::Get))
        .await
        .ok()?
        .ok()?;
    shared.record(OpRecord {
        id: shared.next_id.fetch_add(1, Ordering::SeqCst),
        client: usize::MAX,
        endpoint: endpoint.to_string(),
        key: key.to_string(),
        input: Input::Get,
        output: output.clone(),
        call,
        ret: shared.now(),
        txn: None,
    });
    Some(output)
}

/// Reads every key once, linearizably, retrying across members; returns the highest revision
/// seen (the store's revision once the run settled, since nothing writes any more).
async fn final_reads(w: &Workload, shared: &Shared, endpoints: &[String]) -> i64 {
    let mut final_revision = 0;
    for key in workload::all_keys(w) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        'retry: while tokio::time::Instant::now() < deadline {
            for ep in endpoints {
                if let Some(output) = recorded_get(shared, ep, &key, Duration::from_secs(2)).await {
                    if let Output::Get { revision, .. } = output {
                        final_revision = final_revision.max(revision);
                    }
                    break 'retry;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    final_revision
}

/// No acknowledged write is lost: each one is still there at its revision (runs do not compact).
pub async fn lost_writes(endpoint: &str, history: &[OpRecord]) -> Vec<String> {
    lost_writes_located(endpoint, history)
        .await
        .into_iter()
        .map(|(text, _)| text)
        .collect()
}

/// `lost_writes`, each problem with the key and revision of the write in question.
pub async fn lost_writes_located(
    endpoint: &str,
    history: &[OpRecord],
) -> Vec<(String, Option<(String, i64)>)> {
    let Some(c) = connect(endpoint).await else {
        return vec![(
            format!("cannot reach {endpoint} for the lost-write check"),
            None,
        )];
    };
    let mut problems = Vec::new();
    for op in history {
        let Some(rev) = op.write_revision() else {
            continue;
        };
        let req = RangeRequest {
            key: op.key.as_bytes().to_vec(),
            revision: rev,
            ..Default::default()
        };
        let got = match c.kv().range(req).await {
            Ok(r) => r.into_inner(),
            Err(e) => {
                problems.push((
                    format!("op {}: reading {} at {rev}: {}", op.id, op.key, e.message()),
                    Some((op.key.clone(), rev)),
                ));
                continue;
            }
        };
        let kv = got.kvs.first();
        let ok = match op.written_value() {
            Some(v) => kv.is_some_and(|kv| kv.value == v.as_bytes() && kv.mod_revision == rev),
            None => kv.is_none(),
        };
        if !ok {
            problems.push((
                format!(
                    "acknowledged op {} ({:?} on {} at revision {rev}) is lost: the store has {:?}",
                    op.id,
                    op.input,
                    op.key,
                    kv.map(|kv| (
                        String::from_utf8_lossy(&kv.value).into_owned(),
                        kv.mod_revision
                    ))
                ),
                Some((op.key.clone(), rev)),
            ));
        }
    }
    problems
}

/// Every member reaches the same revision and the same HashKV there.
pub async fn converged(endpoints: &[String]) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        let mut revs = Vec::new();
        for ep in endpoints {
            revs.push(procs::status(ep).await.map(|s| s.3));
        }
        let target = revs.iter().flatten().max().copied().unwrap_or(0);
        if revs.iter().all(|r| *r == Some(target)) {
            let mut hashes = Vec::new();
            for ep in endpoints {
                let h = match connect(ep).await {
                    Some(c) => c
                        .maintenance()
                        .hash_kv(HashKvRequest { revision: target })
                        .await
                        .ok()
                        .map(|r| r.into_inner().hash),
                    None => None,
                };
                hashes.push(h);
            }
            if hashes.iter().all(|h| h.is_some() && *h == hashes[0]) {
                return Vec::new();
            }
            last = format!("HashKV at revision {target}: {hashes:?}");
        } else {
            last = format!("revisions {revs:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    vec![format!("members did not converge: {last}")]
}

/// The failure text: seed first, so the run can be repeated.
pub fn describe(r: &Report) -> String {
    let mut s = format!(
        "seed {}: {} problem(s) in {:.0}s ({} ops, {} acknowledged writes, {} unknown, {} watch events, faults {:?}); history in {}\n",
        r.seed,
        r.problems.len(),
        r.duration_secs,
        r.operations,
        r.acknowledged_writes,
        r.unknown_outcomes,
        r.watch_events,
        r.faults,
        r.dir.display()
    );
    for p in r.problems.iter().take(20) {
        s.push_str(&format!("  - {p}\n"));
    }
    s
}
