//! Membership changes on live clusters of real processes: etcdctl's member commands, growing
//! 1 -> 3 -> 5 and shrinking 5 -> 3 under a writer, and a far-behind member catching up by
//! snapshot after the log it needed was purged.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, MemberAddOptions};
use support::{etcdctl, eventually, free_port, have_etcdctl, Cluster, Member};

async fn connect(endpoints: &[String]) -> Option<Client> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(5));
    Client::connect(endpoints, Some(opts)).await.ok()
}

/// `member add` through the API, then start the new member with what the cluster reported.
async fn add_member(cluster: &mut Cluster, name: &str, learner: bool) -> (usize, u64) {
    let (cp, pp) = (free_port(), free_port());
    let peer_url = format!("http://127.0.0.1:{pp}");
    let mut c = connect(&cluster.endpoints()).await.expect("connect");
    let opts = if learner {
        Some(MemberAddOptions::new().with_is_learner())
    } else {
        None
    };
    let resp = c
        .member_add([peer_url.clone()], opts)
        .await
        .expect("member add");
    let id = resp.member().expect("added member").id();
    // ETCD_INITIAL_CLUSTER as etcdctl prints it: every member with peer URLs, named.
    let mut initial: Vec<String> = Vec::new();
    for m in resp.member_list() {
        let n = if m.id() == id {
            name.to_string()
        } else {
            m.name().to_string()
        };
        for u in m.peer_urls() {
            initial.push(format!("{n}={u}"));
        }
    }
    let mut member = cluster.joining_member(name, cp, pp, initial.join(","));
    member.start();
    cluster.members.push(member);
    (cluster.members.len() - 1, id)
}

/// Waits until `member` serves a serializable read of `key` with `value`.
async fn caught_up(member: &Member, key: &str, value: &str) {
    let ep = member.endpoint();
    eventually(
        Duration::from_secs(30),
        &format!("{} to catch up", member.name),
        || {
            let ep = ep.clone();
            async move {
                let mut c = connect(&[ep]).await?;
                let r = c
                    .get(key, Some(GetOptions::new().with_serializable()))
                    .await
                    .ok()?;
                (r.kvs().first()?.value_str().ok()? == value).then_some(())
            }
        },
    )
    .await;
}

/// Every member holds exactly the same keys and values at the same revision.
async fn assert_same_data(cluster: &Cluster) {
    let mut c = connect(&cluster.running_endpoints())
        .await
        .expect("connect");
    let rev = c
        .get("probe", None)
        .await
        .expect("get")
        .header()
        .unwrap()
        .revision();
    let mut seen: Option<Vec<(String, String)>> = None;
    for m in cluster.members.iter().filter(|m| m.is_running()) {
        let ep = m.endpoint();
        let data = eventually(
            Duration::from_secs(20),
            "a member to reach the revision",
            || {
                let ep = ep.clone();
                async move {
                    let mut c = connect(&[ep]).await?;
                    let r = c
                        .get(
                            "",
                            Some(
                                GetOptions::new()
                                    .with_from_key()
                                    .with_revision(rev)
                                    .with_serializable(),
                            ),
                        )
                        .await
                        .ok()?;
                    Some(
                        r.kvs()
                            .iter()
                            .map(|kv| {
                                (
                                    kv.key_str().unwrap().to_string(),
                                    kv.value_str().unwrap().to_string(),
                                )
                            })
                            .collect::<Vec<_>>(),
                    )
                }
            },
        )
        .await;
        if let Some(s) = &seen {
            assert_eq!(s, &data, "{} differs at revision {rev}", m.name);
        }
        seen = Some(data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_member_commands_on_a_live_cluster() {
    if !have_etcdctl() {
        eprintln!("SKIP: etcdctl not installed");
        return;
    }
    let mut cluster = Cluster::start(1).await;
    let ep = format!("127.0.0.1:{}", cluster.members[0].client_port);
    let (pc, pp) = (free_port(), free_port());
    let peer = format!("http://127.0.0.1:{pp}");
    let (ok, out, err) = etcdctl(
        &ep,
        &[
            "member",
            "add",
            "learner1",
            "--peer-urls",
            &peer,
            "--learner",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{out}"
    );
    let initial = out
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("ETCD_INITIAL_CLUSTER line")
        .to_string();
    let mut learner = cluster.joining_member("learner1", pc, pp, initial);
    learner.start();
    cluster.members.push(learner);

    let id = eventually(
        Duration::from_secs(20),
        "the learner to start and publish",
        || async {
            let (_, out, _) = etcdctl(&ep, &["member", "list"], None);
            out.lines()
                .find(|l| l.contains("learner1") && l.ends_with("true"))
                .map(|l| l.split(',').next().unwrap().to_string())
        },
    )
    .await;
    // A second learner is refused (at most one), as in etcd.
    let (ok, _, err) = etcdctl(
        &ep,
        &[
            "member",
            "add",
            "l2",
            "--peer-urls",
            &format!("http://127.0.0.1:{}", free_port()),
            "--learner",
        ],
        None,
    );
    assert!(
        !ok && err.contains("too many learner members in cluster"),
        "{err}"
    );
    // A learner refuses writes and linearizable reads.
    let lep = format!("127.0.0.1:{}", cluster.members[1].client_port);
    let (ok, _, err) = etcdctl(&lep, &["put", "k", "v"], None);
    assert!(
        !ok && err.contains("rpc not supported for learner"),
        "{err}"
    );
    // Promote once in sync, then it is a voter.
    eventually(Duration::from_secs(20), "promotion", || async {
        let (ok, out, _) = etcdctl(&ep, &["member", "promote", &id], None);
        (ok && out.contains("promoted")).then_some(())
    })
    .await;
    let (_, out, _) = etcdctl(&ep, &["member", "list"], None);
    assert!(
        out.lines()
            .any(|l| l.contains("learner1") && l.ends_with("false")),
        "{out}"
    );
    let (ok, _, err) = etcdctl(&ep, &["member", "promote", &id], None);
    assert!(
        !ok && err.contains("can only promote a learner member"),
        "{err}"
    );
    // Remove it again; unknown ids are refused.
    let (ok, out, err) = etcdctl(&ep, &["member", "remove", &id], None);
    assert!(ok, "{err}");
    assert!(out.contains("removed from cluster"), "{out}");
    let (ok, _, err) = etcdctl(&ep, &["member", "remove", "1234"], None);
    assert!(!ok && err.contains("member not found"), "{err}");
    let (_, out, _) = etcdctl(&ep, &["member", "list"], None);
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grow_1_3_5_and_shrink_to_3_under_a_writer() {
    let mut cluster = Cluster::start(1).await;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let endpoints = Arc::new(Mutex::new(cluster.endpoints()));
    let writer = {
        let (acked, endpoints) = (acked.clone(), endpoints.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut client: Option<Client> = None;
            while !*stop_rx.borrow() {
                if client.is_none() {
                    let eps = endpoints.lock().unwrap().clone();
                    client = connect(&eps).await;
                }
                if let Some(c) = client.as_mut() {
                    match c.put(format!("g/{n:06}"), "v", None).await {
                        Ok(_) => {
                            acked.lock().unwrap().insert(n);
                        }
                        Err(_) => client = None,
                    }
                }
                n += 1;
            }
        })
    };
    let writes = |k: usize| {
        let acked = acked.clone();
        async move {
            let target = acked.lock().unwrap().len() + k;
            eventually(Duration::from_secs(30), "writes to progress", || async {
                (acked.lock().unwrap().len() >= target).then_some(())
            })
            .await
        }
    };
    writes(20).await;
    // 1 -> 3 -> 5, each new member as a learner first, then promoted once in sync.
    for i in 1..5 {
        let (idx, id) = add_member(&mut cluster, &format!("m{i}"), true).await;
        *endpoints.lock().unwrap() = cluster.endpoints();
        writes(10).await;
        let c = connect(&cluster.endpoints()[..1]).await.unwrap();
        eventually(Duration::from_secs(30), "promote the learner", || {
            let mut c = c.clone();
            async move { c.member_promote(id).await.ok().map(|_| ()) }
        })
        .await;
        let last = *acked.lock().unwrap().iter().next_back().unwrap();
        caught_up(&cluster.members[idx], &format!("g/{last:06}"), "v").await;
        // Started, in etcd's words: it has published its name, which the next member's
        // --initial-cluster needs (etcdctl prints `=<url>` for a member that has not).
        let name = format!("m{i}");
        eventually(
            Duration::from_secs(30),
            "the member to publish its name",
            || {
                let (mut c, name) = (c.clone(), name.clone());
                async move {
                    let list = c.member_list().await.ok()?;
                    list.members()
                        .iter()
                        .any(|m| m.id() == id && m.name() == name)
                        .then_some(())
                }
            },
        )
        .await;
    }
    let mut c = connect(&cluster.endpoints()).await.unwrap();
    assert_eq!(c.member_list().await.unwrap().members().len(), 5);
    writes(20).await;

    // 5 -> 3: remove two members, the current leader first (leader-aware removal).
    for _ in 0..2 {
        let leader = cluster.wait_leader(Duration::from_secs(10)).await;
        let id = support::member_id(&cluster.members[leader].endpoint())
            .await
            .unwrap();
        let others: Vec<String> = cluster
            .members
            .iter()
            .enumerate()
            .filter(|(i, m)| *i != leader && m.is_running())
            .map(|(_, m)| m.endpoint())
            .collect();
        let c = connect(&others).await.unwrap();
        eventually(Duration::from_secs(20), "member remove", || {
            let mut c = c.clone();
            async move { c.member_remove(id).await.ok().map(|_| ()) }
        })
        .await;
        // The removed member stops by itself.
        let name = cluster.members[leader].name.clone();
        eventually(
            Duration::from_secs(20),
            "the removed member to exit",
            || {
                let log = cluster.members[leader].log_text();
                async move { log.contains("permanently removed").then_some(()) }
            },
        )
        .await;
        cluster.members[leader].kill9();
        *endpoints.lock().unwrap() = others;
        eprintln!("removed {name}");
        writes(20).await;
    }
    let _ = stop_tx.send(true);
    let _ = writer.await;
    let acked = acked.lock().unwrap().clone();
    let running: Vec<&Member> = cluster.members.iter().filter(|m| m.is_running()).collect();
    assert_eq!(running.len(), 3);
    let mut c = connect(&[running[0].endpoint()]).await.unwrap();
    assert_eq!(c.member_list().await.unwrap().members().len(), 3);
    let resp = connect(&[running[0].endpoint()])
        .await
        .unwrap()
        .get("g/", Some(GetOptions::new().with_prefix().with_keys_only()))
        .await
        .unwrap();
    let present: BTreeSet<u64> = resp
        .kvs()
        .iter()
        .filter_map(|kv| kv.key_str().ok()?.strip_prefix("g/")?.parse().ok())
        .collect();
    let missing: Vec<_> = acked.difference(&present).take(5).collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes lost across membership changes: {missing:?}"
    );
    assert_same_data(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_behind_member_catches_up_by_snapshot() {
    let mut cluster = Cluster::start_with(
        3,
        &[
            "--snapshot-count",
            "100",
            "--snapshot-catchup-entries",
            "10",
        ],
    )
    .await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let behind = (leader + 1) % 3;
    cluster.members[behind].stop();
    let mut c = connect(&[cluster.members[leader].endpoint()])
        .await
        .unwrap();
    for i in 0..600 {
        c.put(format!("s/{i:04}"), format!("v{i}"), None)
            .await
            .unwrap();
    }
    cluster.members[behind].start();
    caught_up(&cluster.members[behind], "s/0599", "v599").await;
    assert!(
        cluster.members[behind]
            .log_text()
            .contains("installed raft snapshot"),
        "the member should have caught up by snapshot:\n{}",
        cluster.members[behind].log_text()
    );
    assert_same_data(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_leader_hands_leadership_to_the_chosen_voter() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let target = (leader + 1) % 3;
    let target_id = support::member_id(&cluster.members[target].endpoint())
        .await
        .unwrap();
    let mut c = connect(&[cluster.members[leader].endpoint()])
        .await
        .unwrap();
    let started = std::time::Instant::now();
    c.move_leader(target_id).await.expect("move leader");
    eprintln!("leadership moved in {:?}", started.elapsed());
    assert_eq!(cluster.wait_leader(Duration::from_secs(5)).await, target);
    // Only the leader may move leadership; unknown targets are refused.
    let mut f = connect(&[cluster.members[leader].endpoint()])
        .await
        .unwrap();
    let err = f.move_leader(target_id).await.unwrap_err().to_string();
    assert!(err.contains("etcdserver: not leader"), "{err}");
    let mut t = connect(&[cluster.members[target].endpoint()])
        .await
        .unwrap();
    let err = t.move_leader(42).await.unwrap_err().to_string();
    assert!(err.contains("etcdserver: bad leader transferee"), "{err}");
    // Writes work through the new leader.
    t.put("after-move", "x", None).await.unwrap();
}
