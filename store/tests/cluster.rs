//! Three real cairn processes on loopback: writes through any member, leader failover under a
//! continuous writer, catch-up of a restarted member, and no acknowledged write lost.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};
use support::{eventually, Cluster};

async fn connect(endpoint: &str) -> Option<Client> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(3));
    Client::connect([endpoint], Some(opts)).await.ok()
}

/// Writes `w/<n>` keys in order, rotating through the endpoints on errors. Records every
/// acknowledged key and the longest stretch without a successful write.
struct Writer {
    acked: Arc<Mutex<BTreeSet<u64>>>,
    longest_gap: Arc<Mutex<Duration>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(endpoints: Vec<String>) -> Writer {
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let longest_gap = Arc::new(Mutex::new(Duration::ZERO));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (a, g) = (acked.clone(), longest_gap.clone());
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            let mut ep = 0usize;
            let mut client: Option<Client> = None;
            let mut last_ok = Instant::now();
            while !*stop_rx.borrow() {
                if client.is_none() {
                    client = connect(&endpoints[ep % endpoints.len()]).await;
                }
                let ok = match client.as_mut() {
                    Some(c) => c
                        .put(format!("w/{n:08}"), format!("v{n}"), None)
                        .await
                        .is_ok(),
                    None => false,
                };
                if ok {
                    a.lock().unwrap().insert(n);
                    let gap = last_ok.elapsed();
                    let mut lg = g.lock().unwrap();
                    if gap > *lg {
                        *lg = gap;
                    }
                    last_ok = Instant::now();
                } else {
                    // Outcome unknown: never reuse the key, move to the next member.
                    client = None;
                    ep += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                n += 1;
            }
        });
        Writer {
            acked,
            longest_gap,
            stop,
            task,
        }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn finish(self) -> (BTreeSet<u64>, Duration) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let acked = self.acked.lock().unwrap().clone();
        let gap = *self.longest_gap.lock().unwrap();
        (acked, gap)
    }
}

/// Every acknowledged key is readable (serializably) from `endpoint`.
async fn assert_all_present(endpoint: &str, acked: &BTreeSet<u64>) {
    let mut c = connect(endpoint).await.expect("connect");
    let resp = c
        .get(
            "w/",
            Some(GetOptions::new().with_prefix().with_serializable()),
        )
        .await
        .expect("read back");
    let present: BTreeSet<u64> = resp
        .kvs()
        .iter()
        .filter_map(|kv| kv.key_str().ok()?.strip_prefix("w/")?.parse().ok())
        .collect();
    let missing: Vec<_> = acked.difference(&present).take(10).collect();
    assert!(
        missing.is_empty(),
        "{endpoint}: acknowledged writes missing: {missing:?} (of {})",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_any_member_and_failover() {
    let mut cluster = Cluster::start(3).await;

    // Writes through every member (followers forward to the leader) are visible on all.
    for (i, m) in cluster.members.iter().enumerate() {
        let mut c = m.client().await;
        c.put(format!("via/{i}"), "x", None)
            .await
            .expect("put through member");
    }
    for m in &cluster.members {
        let mut c = m.client().await;
        let resp = c
            .get("via/", Some(GetOptions::new().with_prefix()))
            .await
            .expect("linearizable get");
        assert_eq!(resp.count(), 3, "{} sees every write", m.name);
    }

    let writer = Writer::start(cluster.endpoints());
    eventually(
        Duration::from_secs(10),
        "writes before the fault",
        || async { (writer.acked_count() >= 50).then_some(()) },
    )
    .await;

    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let killed_at = Instant::now();
    let before_kill = writer.acked_count();
    cluster.members[leader].kill9();
    let new_leader = cluster.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader);
    eventually(
        Duration::from_secs(10),
        "writes to continue after the leader was killed",
        || async { (writer.acked_count() > before_kill + 20).then_some(()) },
    )
    .await;
    let recovered_in = killed_at.elapsed();
    eprintln!("writes continued {recovered_in:?} after killing the leader");

    // The killed member restarts and catches up.
    cluster.members[leader].start();
    let writes_then = writer.acked_count();
    eventually(
        Duration::from_secs(10),
        "writes after the restart",
        || async { (writer.acked_count() > writes_then + 20).then_some(()) },
    )
    .await;
    let (acked, gap) = writer.finish().await;
    eprintln!("acknowledged {} writes; longest gap {gap:?}", acked.len());
    assert!(gap < Duration::from_secs(8), "writes stalled for {gap:?}");

    let restarted = cluster.members[leader].endpoint();
    let last = *acked.iter().next_back().expect("some writes");
    eventually(
        Duration::from_secs(15),
        "the restarted member to catch up",
        || {
            let ep = restarted.clone();
            async move {
                let mut c = connect(&ep).await?;
                let r = c
                    .get(
                        format!("w/{last:08}"),
                        Some(GetOptions::new().with_serializable()),
                    )
                    .await
                    .ok()?;
                (r.count() == 1).then_some(())
            }
        },
    )
    .await;
    for ep in cluster.endpoints() {
        assert_all_present(&ep, &acked).await;
    }
}
