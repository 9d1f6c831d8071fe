//! Crash points: a member built with `--features failpoints` is crashed (abort) at each point
//! on the durability path while a writer runs; after a restart no acknowledged write is lost and
//! every member converges to the same HashKV.
//!
//! Needs the failpoints build of `cairn` as `cairn-failpoints` next to `cairn` (or
//! `$CAIRN_FAILPOINTS_BIN`); `./scripts/test` builds it. Without it each test prints SKIP.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn_e2e::history::{Input, OpRecord, Output};
use cairn_e2e::procs::{self, Cluster};
use cairn_e2e::run;
use cairn_e2e::workload::{connect, execute};
use cairn_store::proto::etcdserverpb::CompactionRequest;

fn failpoints_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CAIRN_FAILPOINTS_BIN") {
        return Some(PathBuf::from(p));
    }
    let cairn = procs::cairn_bin().ok()?;
    let p = cairn.with_file_name("cairn-failpoints");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: no failpoints build of cairn at {} (cargo build -p cairn-store --features \
             failpoints --bin cairn, then copy target/debug/cairn there; ./scripts/test does)",
            p.display()
        );
        None
    }
}

/// Writes under `/fp/` through the members other than `victim`, keeping what was acknowledged.
struct Writer {
    acked: Vec<OpRecord>,
    n: u64,
    /// The revision of each key's latest acknowledged write.
    latest: BTreeMap<String, i64>,
}

impl Writer {
    async fn write(&mut self, endpoints: &[String], count: usize, compact_every: Option<u64>) {
        let mut done = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while done < count && Instant::now() < deadline {
            let ep = &endpoints[(self.n as usize) % endpoints.len()];
            self.n += 1;
            let Some(c) = connect(ep).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let key = format!("/fp/k{}", self.n % 7);
            let input = Input::Put {
                value: format!("v{}", self.n),
            };
            let out = tokio::time::timeout(Duration::from_secs(3), execute(&c, &key, &input)).await;
            let Ok(Ok(output @ Output::Put { revision })) = out else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            self.latest.insert(key.clone(), revision);
            self.acked.push(OpRecord {
                id: self.n,
                client: 0,
                endpoint: ep.clone(),
                key,
                input,
                output,
                call: 0,
                ret: 0,
                txn: None,
            });
            done += 1;
            if let Some(every) = compact_every {
                // The check afterwards reads each key's latest acknowledged write at its own
                // revision, so never compact past one: a key whose writes failed for a while
                // (they went to the crashed member) would otherwise read ErrCompacted, rightly.
                let oldest_latest = self.latest.values().min().copied().unwrap_or(0);
                let at = (revision - 5).min(oldest_latest);
                if self.n % every == 0 && at > 0 {
                    let _ = c
                        .kv()
                        .compact(CompactionRequest {
                            revision: at,
                            physical: false,
                        })
                        .await;
                }
            }
        }
    }
}

struct Scenario {
    point: &'static str,
    /// fail-rs actions for the victim.
    actions: &'static str,
    compact_every: Option<u64>,
    /// Take the victim down first and make it catch up through a Raft snapshot.
    via_snapshot: bool,
}

async fn crash_and_recover(s: Scenario) {
    common::ensure_cairn_built();
    let Some(bin) = failpoints_bin() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::new(3, dir.path()).expect("lay out cluster");
    for m in &mut cluster.members {
        m.bin = bin.clone();
        if s.via_snapshot {
            m.snapshot_count = 50;
            m.extra_args = vec!["--snapshot-catchup-entries".into(), "10".into()];
        }
    }
    let victim = 0;
    let others: Vec<String> = cluster.members[1..].iter().map(|m| m.endpoint()).collect();
    let failpoints = format!("{}={}", s.point, s.actions);
    if !s.via_snapshot {
        cluster.members[victim].set_env("FAILPOINTS", Some(&failpoints));
    }
    cluster.start_all().expect("start");
    procs::wait_leader(&cluster.all_endpoints(), Duration::from_secs(30))
        .await
        .expect("a leader");
    let mut w = Writer {
        acked: Vec::new(),
        n: 0,
        latest: BTreeMap::new(),
    };
    if s.via_snapshot {
        cluster.members[victim].kill9();
        w.write(&others, 300, None).await;
        cluster.members[victim].set_env("FAILPOINTS", Some(&failpoints));
        cluster.members[victim].start().expect("restart the victim");
    }
    // Write until the point fires.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = cluster.members[victim].reap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "{} never fired\n{}",
            s.point,
            cluster.members[victim].log_tail(40)
        );
        w.write(&others, 5, s.compact_every).await;
    };
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "{}: the victim should die by abort, got {status:?}",
        s.point
    );
    assert!(
        cluster.members[victim]
            .log_tail(50)
            .contains(&format!("failpoint {}: crashing", s.point)),
        "{}: crashed, but not at the failpoint\n{}",
        s.point,
        cluster.members[victim].log_tail(50)
    );
    w.write(&others, 20, s.compact_every).await;
    cluster.members[victim].set_env("FAILPOINTS", None);
    cluster.members[victim]
        .start()
        .expect("restart without failpoints");
    w.write(&cluster.all_endpoints(), 20, s.compact_every).await;
    assert!(
        w.acked.len() >= 40,
        "{}: only {} writes acknowledged",
        s.point,
        w.acked.len()
    );

    let all = cluster.all_endpoints();
    let problems = run::converged(&all).await;
    if !problems.is_empty() {
        let log = std::fs::read_to_string(&cluster.members[victim].log).unwrap_or_default();
        let notable: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("panic") || l.contains("snapshot") || l.contains("failpoint"))
            .take(20)
            .collect();
        panic!("{}: {problems:?}\n{}", s.point, notable.join("\n"));
    }
    // Compaction removes old versions: check the latest write of each key then.
    let history: Vec<OpRecord> = if s.compact_every.is_some() {
        let mut last = BTreeMap::new();
        for op in &w.acked {
            last.insert(op.key.clone(), op.clone());
        }
        last.into_values().collect()
    } else {
        w.acked.clone()
    };
    for ep in &all {
        let lost = run::lost_writes(ep, &history).await;
        assert!(lost.is_empty(), "{} on {ep}: {lost:?}", s.point);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_log_fsync() {
    crash_and_recover(Scenario {
        point: "raft::log::before_fsync",
        actions: "30*off->return",
        compact_every: None,
        via_snapshot: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_log_fsync() {
    crash_and_recover(Scenario {
        point: "raft::log::after_fsync",
        actions: "30*off->return",
        compact_every: None,
        via_snapshot: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_apply() {
    crash_and_recover(Scenario {
        point: "raft::apply::before",
        actions: "30*off->return",
        compact_every: None,
        via_snapshot: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_apply() {
    crash_and_recover(Scenario {
        point: "raft::apply::after",
        actions: "30*off->return",
        compact_every: None,
        via_snapshot: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_compaction() {
    crash_and_recover(Scenario {
        point: "mvcc::compact::during",
        actions: "2*off->return",
        compact_every: Some(10),
        via_snapshot: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_snapshot_install() {
    crash_and_recover(Scenario {
        point: "raft::snapshot::install",
        actions: "return",
        compact_every: None,
        via_snapshot: true,
    })
    .await;
}
