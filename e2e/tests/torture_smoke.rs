//! The CI smoke run of cairn-torture: three members under every nemesis for a minute, then the
//! full set of checks. As root the network faults are true two-way partitions (network
//! namespaces); elsewhere they fall back to one-sided proxies (the report says which). `CAIRN_TORTURE_SEED` repeats a failing run; `CAIRN_TORTURE_SECS` makes
//! it longer (a soak uses the `cairn-torture` binary instead).

mod common;

use std::time::Duration;

use cairn_e2e::nemesis::Fault;
use cairn_e2e::netns::Netns;
use cairn_e2e::run::{self, Config};
use cairn_e2e::workload::Workload;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn torture_smoke_every_nemesis() {
    common::ensure_cairn_built();
    let seed = std::env::var("CAIRN_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let secs = std::env::var("CAIRN_TORTURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::Builder::new()
        .prefix("cairn-torture-smoke-")
        .tempdir()
        .expect("tempdir");
    eprintln!("torture smoke: seed {seed}, {secs}s, every nemesis");
    let report = run::run(Config {
        members: 3,
        duration: Duration::from_secs(secs),
        seed,
        nemesis: Fault::ALL.to_vec(),
        clients: 6,
        watchers: 2,
        workload: Workload::default(),
        dir: dir.path().to_path_buf(),
    })
    .await
    .expect("the run itself failed");
    eprintln!("{}", serde_json::to_string(&report).unwrap_or_default());
    if Netns::probe().is_ok() {
        assert!(
            report.network.starts_with("two-way"),
            "namespaces work here but the run used {}",
            report.network
        );
    }
    if !report.ok() {
        let kept = dir.keep();
        panic!(
            "{}\nrepeat: CAIRN_TORTURE_SEED={seed} cargo test -p cairn-e2e --test torture_smoke (history kept in {})",
            run::describe(&report),
            kept.display()
        );
    }
    assert!(
        report.acknowledged_writes > 100,
        "too little work done: {report:?}"
    );
    assert!(
        !report.faults.is_empty(),
        "the nemesis injected nothing: {report:?}"
    );
}
