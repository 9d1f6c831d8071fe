//! Leases, end to end against real processes: Debian's `etcdctl lease ...` against cairn and etcd
//! side by side; expiry deletes the keys with DELETE events; a leader failover does not expire
//! leases early; keep-alive through a follower; leases survive a restart of the whole cluster.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{EventType, GetOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions};
use support::{eventually, have_etcdctl, Cluster, Etcd};

// ---------------------------------------------------------------------------------------------
// etcdctl lease, side by side with etcd
// ---------------------------------------------------------------------------------------------

/// The script; `{L1}`/`{L2}` stand for the ids the first and second grants returned.
const SCRIPT: &[&str] = &[
    "lease grant 60",
    "put lk1 v1 --lease={L1}",
    "put lk2 v2 --lease={L1}",
    "get lk1 -w json",
    "lease timetolive {L1}",
    "lease timetolive {L1} --keys",
    "lease timetolive {L1} --keys -w json",
    "lease keep-alive --once {L1}",
    "lease grant 30",
    "lease list",
    "put lk3 v3 --lease={L2}",
    "put lk3 v4 --ignore-lease",
    "lease timetolive {L2} --keys",
    "lease revoke {L1}",
    "get lk --prefix",
    "lease timetolive {L1}",
    "lease revoke {L1}",
    "lease keep-alive --once {L1}",
    "put lk4 v --lease=1234abcd",
    "lease timetolive 1234abcd",
    "lease grant 9000000001",
    "put lk5 v --ignore-lease",
    "lease revoke {L2}",
    "get lk --prefix",
    "lease list",
];

/// Masks what differs by nature: member/cluster ids, the term and the granted lease ids (hex in
/// text output, decimal in JSON). `lease list` prints ids in map order in etcd: sort them.
fn normalize(out: &str, leases: &[(String, i64)]) -> String {
    let mut s = String::new();
    let mut lines: Vec<String> = Vec::new();
    for line in out.lines() {
        if line.starts_with("{\"level\"") {
            continue;
        }
        let mut l = support::mask_ids(line);
        l = mask_remaining(&l);
        l = sort_attached_keys(&l);
        for (n, (hex, dec)) in leases.iter().enumerate() {
            l = l.replace(hex, &format!("L{}", n + 1));
            l = l.replace(&dec.to_string(), &format!("L{}", n + 1));
        }
        lines.push(l);
    }
    if lines.first().is_some_and(|l| l.starts_with("found ")) {
        lines[1..].sort();
    }
    for l in lines {
        s.push_str(&l);
        s.push('\n');
    }
    s
}

/// etcd lists a lease's keys in map order (it varies from run to run): sort them, in both
/// `attached keys([a b])` and `"keys":["..",".."]`.
fn sort_attached_keys(line: &str) -> String {
    let mut out = line.to_string();
    for (open, close, sep) in [("attached keys([", "])", " "), ("\"keys\":[", "]", ",")] {
        if let Some(at) = out.find(open) {
            let start = at + open.len();
            if let Some(len) = out[start..].find(close) {
                let mut items: Vec<&str> = out[start..start + len].split(sep).collect();
                items.sort_unstable();
                let sorted = items.join(sep);
                out.replace_range(start..start + len, &sorted);
            }
        }
    }
    out
}

/// The seconds left depend on how long the commands took: a value within 5s below the TTL the
/// script granted (60 or 30) is masked; anything else stays visible in the comparison.
fn mask_remaining(line: &str) -> String {
    let mut out = line.to_string();
    for (open, close) in [("remaining(", "s)"), ("\"ttl\":", ",")] {
        if let Some(at) = out.find(open) {
            let start = at + open.len();
            if let Some(len) = out[start..].find(close) {
                if let Ok(n) = out[start..start + len].parse::<i64>() {
                    if (55..=60).contains(&n) || (25..=30).contains(&n) {
                        out.replace_range(start..start + len, "N");
                    }
                }
            }
        }
    }
    out
}

fn run_script(endpoint: &str) -> Vec<String> {
    let mut leases: Vec<(String, i64)> = Vec::new();
    let mut out = Vec::new();
    for line in SCRIPT {
        let mut cmd = line.to_string();
        for (n, (hex, _)) in leases.iter().enumerate() {
            cmd = cmd.replace(&format!("{{L{}}}", n + 1), hex);
        }
        let args: Vec<&str> = cmd.split(' ').collect();
        let (ok, stdout, stderr) = support::etcdctl(endpoint, &args, None);
        let granted = line.starts_with("lease grant ");
        if let Some(rest) = stdout.strip_prefix("lease ").filter(|_| granted) {
            if let Some((hex, _)) = rest.split_once(" granted") {
                let dec = i64::from_str_radix(hex, 16).expect("hex lease id");
                leases.push((hex.to_string(), dec));
            }
        }
        out.push(format!(
            "$ etcdctl {line}\nok={ok}\n{}{}",
            normalize(&stdout, &leases),
            normalize(&stderr, &leases)
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lease_commands_print_what_they_print_against_etcd() {
    if !have_etcdctl() {
        eprintln!("SKIP: etcdctl not installed (Debian package etcd-client)");
        return;
    }
    let cairn = Cluster::start(1).await;
    let got = run_script(&cairn.members[0].endpoint());
    assert!(got[0].contains("L1 granted with TTL(60s)"), "{}", got[0]);
    let Some(etcd) = Etcd::start().await else {
        eprintln!("SKIP comparison: no etcd server installed (Debian package etcd-server)");
        return;
    };
    let want = run_script(&etcd.endpoint());
    let diffs: Vec<String> = got
        .iter()
        .zip(&want)
        .filter(|(g, w)| g != w)
        .map(|(g, w)| format!("--- etcd\n{w}+++ cairn\n{g}"))
        .collect();
    assert!(
        diffs.is_empty(),
        "{} of {} commands differ:\n{}",
        diffs.len(),
        want.len(),
        diffs.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Expiry, failover, follower keep-alive, restart
// ---------------------------------------------------------------------------------------------

async fn client_of(endpoint: &str) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(10));
    etcd_client::Client::connect([endpoint], Some(opts))
        .await
        .expect("connect")
}

async fn keys_with_prefix(c: &mut etcd_client::Client, prefix: &str) -> Vec<String> {
    c.get(
        prefix,
        Some(GetOptions::new().with_prefix().with_keys_only()),
    )
    .await
    .expect("get")
    .kvs()
    .iter()
    .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
    .collect()
}

/// (TTL left, attached keys); TTL -1 once the lease is gone.
async fn time_to_live(c: &mut etcd_client::Client, id: i64) -> (i64, Vec<String>) {
    let r = c
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("time to live");
    (
        r.ttl(),
        r.keys()
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect(),
    )
}

async fn listed(c: &mut etcd_client::Client) -> Vec<i64> {
    c.leases()
        .await
        .expect("lease list")
        .leases()
        .iter()
        .map(|l| l.id())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_deletes_its_keys_with_delete_events() {
    let cluster = Cluster::start(1).await;
    let mut c = cluster.members[0].client().await;
    let mut ws = c
        .watch(
            "e/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .expect("watch");
    assert!(ws
        .message()
        .await
        .expect("created")
        .expect("created")
        .created());
    let lease = c.lease_grant(2, None).await.expect("grant");
    let granted = Instant::now();
    assert_eq!(lease.ttl(), 2);
    for k in ["e/1", "e/2"] {
        c.put(k, "v", Some(PutOptions::new().with_lease(lease.id())))
            .await
            .expect("put with lease");
    }
    c.put("e/3", "kept", None).await.expect("put");
    let deleted = loop {
        let r = tokio::time::timeout(Duration::from_secs(10), ws.message())
            .await
            .expect("the lease to expire within 10s")
            .expect("watch")
            .expect("watch open");
        if r.events()
            .iter()
            .any(|e| e.event_type() == EventType::Delete)
        {
            break r;
        }
    };
    let elapsed = granted.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1800),
        "expired after {elapsed:?}, before its 2s TTL"
    );
    // Both keys in one response, one revision, with what they held.
    let evs = deleted.events();
    assert_eq!(evs.len(), 2, "{evs:?}");
    let rev = evs[0].kv().expect("kv").mod_revision();
    for (e, k) in evs.iter().zip(["e/1", "e/2"]) {
        assert_eq!(e.event_type(), EventType::Delete);
        let kv = e.kv().expect("kv");
        assert_eq!((kv.key(), kv.mod_revision()), (k.as_bytes(), rev));
        let prev = e.prev_kv().expect("prev_kv");
        assert_eq!((prev.value(), prev.lease()), (&b"v"[..], lease.id()));
    }
    assert_eq!(keys_with_prefix(&mut c, "e/").await, vec!["e/3"]);
    assert_eq!(time_to_live(&mut c, lease.id()).await.0, -1);
    assert!(!listed(&mut c).await.contains(&lease.id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_does_not_expire_leases_early() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let follower = (leader + 1) % 3;
    // Talk only to a member that survives.
    let mut c = client_of(&cluster.members[follower].endpoint()).await;
    let lease = c.lease_grant(10, None).await.expect("grant").id();
    c.put("f/key", "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put with lease");
    let (mut keeper, mut acks) = c.lease_keep_alive(lease).await.expect("keep alive");
    for _ in 0..3 {
        keeper.keep_alive().await.expect("send keep-alive");
        let ack = acks.message().await.expect("ack").expect("ack");
        assert_eq!(ack.ttl(), 10);
    }
    drop((keeper, acks));
    // From here on nobody keeps the lease alive: it must last about its TTL from now (from the
    // new leader's election), not expire at once because the old leader's clock is gone.
    let killed = Instant::now();
    cluster.members[leader].kill9();
    cluster.wait_leader(Duration::from_secs(20)).await;
    let mut checks = 0;
    while killed.elapsed() < Duration::from_secs(8) {
        let (ttl, keys) = time_to_live(&mut c, lease).await;
        let since = killed.elapsed().as_secs_f64();
        assert!(
            ttl > 0 && ttl <= 10 && ttl as f64 >= 10.0 - since - 1.0,
            "TTL {ttl} reported {since:.1}s after the leader was killed"
        );
        assert_eq!(keys, vec!["f/key"]);
        assert_eq!(keys_with_prefix(&mut c, "f/").await, vec!["f/key"]);
        checks += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(checks >= 5);
    // It does expire in the end, on the new leader, with its key.
    eventually(Duration::from_secs(10), "the lease to expire", || {
        let ep = cluster.members[follower].endpoint();
        async move {
            let mut c = client_of(&ep).await;
            (time_to_live(&mut c, lease).await.0 == -1).then_some(())
        }
    })
    .await;
    let gone_after = killed.elapsed();
    assert!(
        gone_after >= Duration::from_secs(9),
        "expired {gone_after:?} after the last keep-alive, before its 10s TTL"
    );
    assert!(keys_with_prefix(&mut c, "f/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_through_a_follower_keeps_the_lease() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let follower = (leader + 2) % 3;
    let mut c = client_of(&cluster.members[follower].endpoint()).await;
    let lease = c.lease_grant(2, None).await.expect("grant").id();
    c.put("k/alive", "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put with lease");
    let (mut keeper, mut acks) = c.lease_keep_alive(lease).await.expect("keep alive");
    let started = Instant::now();
    // Three TTLs, refreshed every half second through the follower only.
    while started.elapsed() < Duration::from_secs(6) {
        keeper.keep_alive().await.expect("send keep-alive");
        let ack = acks.message().await.expect("ack").expect("ack");
        assert_eq!((ack.id(), ack.ttl()), (lease, 2));
        assert_eq!(keys_with_prefix(&mut c, "k/").await, vec!["k/alive"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (ttl, keys) = time_to_live(&mut c, lease).await;
    assert!((1..=2).contains(&ttl), "TTL {ttl}");
    assert_eq!(keys, vec!["k/alive"]);
    drop((keeper, acks));
    let stopped = Instant::now();
    eventually(Duration::from_secs(6), "the key to expire", || {
        let ep = cluster.members[follower].endpoint();
        async move {
            let mut c = client_of(&ep).await;
            keys_with_prefix(&mut c, "k/")
                .await
                .is_empty()
                .then_some(())
        }
    })
    .await;
    assert!(stopped.elapsed() >= Duration::from_millis(1500));
    // A keep-alive for the expired lease is answered with TTL 0 (etcd's "not found").
    // (etcd_client turns that first answer into an error.)
    let again = c.lease_keep_alive(lease).await;
    assert!(
        matches!(again, Err(etcd_client::Error::LeaseKeepAliveError(_))),
        "{:?}",
        again.map(|_| ())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_a_restart_of_the_whole_cluster() {
    let mut cluster = Cluster::start(3).await;
    let mut c = client_of(&cluster.members[0].endpoint()).await;
    let short = c.lease_grant(3, None).await.expect("grant").id();
    let long = c.lease_grant(600, None).await.expect("grant").id();
    for (k, l) in [("r/a", short), ("r/b", short), ("r/long", long)] {
        c.put(k, "v", Some(PutOptions::new().with_lease(l)))
            .await
            .expect("put with lease");
    }
    drop(c);
    for m in &mut cluster.members {
        m.stop();
    }
    // The cluster stays down longer than the short lease's TTL: downtime does not count against
    // a lease (etcd's new leader gives every lease its TTL afresh).
    tokio::time::sleep(Duration::from_secs(4)).await;
    for m in &mut cluster.members {
        m.start();
    }
    cluster.wait_leader(Duration::from_secs(20)).await;
    let restarted = Instant::now();
    let mut c = client_of(&cluster.members[1].endpoint()).await;
    let mut ids = listed(&mut c).await;
    ids.sort();
    let mut want = vec![short, long];
    want.sort();
    assert_eq!(ids, want, "both leases are still listed");
    let (ttl, keys) = time_to_live(&mut c, short).await;
    assert!((1..=3).contains(&ttl), "TTL {ttl} after the restart");
    assert_eq!(keys, vec!["r/a", "r/b"]);
    let (ttl, keys) = time_to_live(&mut c, long).await;
    assert!(ttl > 590 && ttl <= 600, "TTL {ttl}");
    assert_eq!(keys, vec!["r/long"]);
    assert_eq!(
        keys_with_prefix(&mut c, "r/").await,
        vec!["r/a", "r/b", "r/long"]
    );
    // Not kept alive, the short lease then expires with its keys; the long one stays.
    eventually(Duration::from_secs(10), "the short lease to expire", || {
        let ep = cluster.members[2].endpoint();
        async move {
            let mut c = client_of(&ep).await;
            (keys_with_prefix(&mut c, "r/").await == vec!["r/long"]).then_some(())
        }
    })
    .await;
    assert!(restarted.elapsed() < Duration::from_secs(10));
    // LeaseLeases reads the member's own state, as etcd's does: member 1 may apply the revoke
    // a moment after member 2 has.
    eventually(Duration::from_secs(5), "member 1 to drop the lease", || {
        let ep = cluster.members[1].endpoint();
        async move {
            let mut c = client_of(&ep).await;
            (listed(&mut c).await == vec![long]).then_some(())
        }
    })
    .await;
    assert_eq!(time_to_live(&mut c, short).await.0, -1);
}
