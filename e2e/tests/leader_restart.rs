//! Regression (found by cairn-torture, seed 1): a leader killed right after acknowledging writes
//! restarts as leader of the same term (openraft restores a member holding a committed vote for
//! itself as leader) with an older commit index (it is made durable only by the next fsync).
//! A linearizable read served by it must still see every write it had acknowledged.

mod common;

use std::time::Duration;

use cairn_e2e::history::{Input, Output};
use cairn_e2e::procs::{self, Cluster};
use cairn_e2e::workload::{connect, execute};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_leader_reads_every_write_it_acknowledged() {
    common::ensure_cairn_built();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::new(3, dir.path()).expect("lay out cluster");
    // Followers must not campaign while the leader is down for a moment: the bug only shows
    // when the restarted member is still the leader of its term.
    for m in &mut cluster.members {
        m.election_timeout_ms = 4000;
    }
    cluster.start_all().expect("start");
    for round in 0..4 {
        let eps = cluster.all_endpoints();
        let (leader_ep, _) = procs::wait_leader(&eps, Duration::from_secs(60))
            .await
            .expect("a leader");
        let li = eps
            .iter()
            .position(|e| *e == leader_ep)
            .expect("leader is a member");
        let client = connect(&leader_ep).await.expect("connect to the leader");
        let mut acked = 0;
        for i in 0..30 {
            let out = execute(
                &client,
                &format!("/restart/k{}", i % 3),
                &Input::Put {
                    value: format!("r{round}-{i}"),
                },
            )
            .await
            .expect("put on a healthy leader");
            if let Output::Put { revision } = out {
                acked = revision;
            }
        }
        // Kill right after the last acknowledgement, before anything flushes the commit index.
        cluster.members[li].kill9();
        cluster.members[li].start().expect("restart");
        let seen = common::eventually(Duration::from_secs(30), "a linearizable read", || {
            let ep = leader_ep.clone();
            async move {
                let c = connect(&ep).await?;
                match execute(&c, "/restart/k0", &Input::Get).await.ok()? {
                    Output::Get { revision, .. } => Some(revision),
                    _ => None,
                }
            }
        })
        .await;
        assert!(
            seen >= acked,
            "round {round}: a linearizable read on the restarted leader answered revision {seen}, \
             but it had acknowledged a write at {acked}\n{}",
            cluster.members[li].log_tail(30)
        );
    }
}
