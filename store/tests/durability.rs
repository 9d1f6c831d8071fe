//! Restarts and crashes: a member keeps its data, revision and compaction point across a clean
//! restart, and repeated kill -9 under a write load never loses an acknowledged write.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};
use support::{eventually, Cluster};

async fn wait_serving(endpoint: &str) -> Client {
    eventually(
        Duration::from_secs(20),
        "cairn to serve after restart",
        || async {
            let opts = ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(300))
                .with_timeout(Duration::from_secs(2));
            let mut c = Client::connect([endpoint], Some(opts)).await.ok()?;
            c.get("probe", None).await.ok()?;
            Some(c)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_data_revision_and_compaction_point() {
    let mut cluster = Cluster::start(1).await;
    let ep = cluster.members[0].endpoint();
    let mut c = cluster.members[0].client().await;
    for i in 0..20 {
        c.put("k", format!("v{i}"), None).await.unwrap();
    }
    c.put("other", "x", None).await.unwrap();
    let mut rev = c.get("k", None).await.unwrap().header().unwrap().revision();
    c.compact(10, None).await.unwrap();
    drop(c);

    for restart in ["clean", "kill -9"] {
        if restart == "clean" {
            cluster.members[0].stop();
        } else {
            cluster.members[0].kill9();
        }
        cluster.members[0].start();
        let mut c = wait_serving(&ep).await;
        let resp = c.get("k", None).await.unwrap();
        assert_eq!(
            resp.header().unwrap().revision(),
            rev,
            "{restart}: revision kept"
        );
        let kv = &resp.kvs()[0];
        assert_eq!(kv.value_str().unwrap(), "v19");
        assert_eq!(kv.version(), 20);
        assert_eq!(kv.create_revision(), 2);
        // History at or above the compaction point survives; below it is compacted.
        let at = c
            .get("k", Some(GetOptions::new().with_revision(10)))
            .await
            .unwrap();
        assert_eq!(
            at.kvs()[0].value_str().unwrap(),
            "v8",
            "{restart}: history kept"
        );
        let err = c
            .get("k", Some(GetOptions::new().with_revision(9)))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("required revision has been compacted"),
            "{restart}: {err}"
        );
        // The next write continues the revision sequence.
        let put = c.put("after", restart, None).await.unwrap();
        assert_eq!(
            put.header().unwrap().revision(),
            rev + 1,
            "{restart}: revisions continue"
        );
        rev += 1;
    }
}

/// Writes distinct keys as fast as it can; records the acknowledged ones.
fn spawn_writer(
    endpoint: String,
    acked: Arc<Mutex<BTreeSet<String>>>,
    round: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(300))
            .with_timeout(Duration::from_secs(2));
        let Ok(mut c) = Client::connect([endpoint], Some(opts)).await else {
            return;
        };
        for n in 0.. {
            let key = format!("crash/{round}/{n:06}");
            match c.put(key.clone(), "x".repeat(100), None).await {
                Ok(_) => {
                    acked.lock().unwrap().insert(key);
                }
                Err(_) => return,
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_kill9_under_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(1).await;
    let ep = cluster.members[0].endpoint();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    for round in 0..5 {
        let writers: Vec<_> = (0..4)
            .map(|w| spawn_writer(ep.clone(), acked.clone(), round * 10 + w))
            .collect();
        let target = acked.lock().unwrap().len() + 200;
        eventually(Duration::from_secs(20), "writes under load", || async {
            (acked.lock().unwrap().len() >= target).then_some(())
        })
        .await;
        cluster.members[0].kill9();
        for w in writers {
            let _ = w.await;
        }
        cluster.members[0].start();
        let mut c = wait_serving(&ep).await;
        let resp = c
            .get(
                "crash/",
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .unwrap();
        let present: BTreeSet<String> = resp
            .kvs()
            .iter()
            .map(|kv| kv.key_str().unwrap().to_string())
            .collect();
        let acked_now = acked.lock().unwrap().clone();
        let missing: Vec<_> = acked_now.difference(&present).take(5).collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged writes lost after kill -9: {missing:?}"
        );
        eprintln!(
            "round {round}: {} acknowledged writes all present ({} keys)",
            acked_now.len(),
            present.len()
        );
    }
}
