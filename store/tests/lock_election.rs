//! Lock and Election, end to end against real processes: Debian's `etcdctl lock` / `etcdctl elect`
//! against cairn and against etcd with the same scenario (two contenders; the second waits until
//! the first exits, or until the first's lease expires after it is killed with -9; `elect -l`
//! follows leadership), cairn's own `lock` / `elect`, and the v3lock / v3election gRPC services
//! called directly, with the same calls against etcd for their answers and errors.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn_store::proto::v3electionpb::election_client::ElectionClient;
use cairn_store::proto::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, ProclaimRequest, ResignRequest,
};
use cairn_store::proto::v3lockpb::lock_client::LockClient;
use cairn_store::proto::v3lockpb::{LockRequest, UnlockRequest};
use etcd_client::GetOptions;
use support::{cairn_bin, eventually, have_etcdctl, Cluster, Etcd};
use tonic::transport::Channel;

/// How long a contender that must wait is watched for (wrongly) getting through. Not a wait for
/// a condition: a bounded window in which nothing may happen.
const MUST_WAIT: Duration = Duration::from_millis(1500);
const DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Child processes whose stdout is read line by line as it comes
// ---------------------------------------------------------------------------------------------

struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn client process");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    fn etcdctl(endpoint: &str, args: &[&str]) -> Proc {
        let mut cmd = Command::new(support::etcdctl_bin());
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(endpoint)
            .args(args);
        Proc::spawn(cmd)
    }

    fn cairn(endpoint: &str, args: &[&str]) -> Proc {
        let mut cmd = Command::new(cairn_bin());
        cmd.arg("--endpoints").arg(endpoint).args(args);
        Proc::spawn(cmd)
    }

    /// The next stdout line, waiting up to `timeout`.
    fn line(&self, timeout: Duration, what: &str) -> String {
        self.lines
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("no output line ({e}) waiting for {what}"))
    }

    /// Asserts nothing is printed for `window`.
    fn silent_for(&self, window: Duration, what: &str) {
        if let Ok(line) = self.lines.recv_timeout(window) {
            panic!("{what}: unexpected output {line:?}");
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the process to exit; returns its code and stderr.
    fn wait(mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return (status.code(), err);
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `<name>/<hex lease id>` with the id replaced, so transcripts compare across servers.
fn norm(line: &str) -> String {
    match line.rsplit_once('/') {
        Some((name, id)) if !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()) => {
            format!("{name}/<lease>")
        }
        _ => line.to_string(),
    }
}

async fn keys_under(endpoint: &str, prefix: &str) -> Vec<String> {
    let Ok(mut c) = etcd_client::Client::connect([endpoint], None).await else {
        return Vec::new();
    };
    c.get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .map(|r| {
            r.kvs()
                .iter()
                .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_keys(endpoint: &str, prefix: &str, n: usize) {
    eventually(DEADLINE, &format!("{n} keys under {prefix}"), || async {
        (keys_under(endpoint, prefix).await.len() == n).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// etcdctl lock / elect: one scenario, run against cairn and etcd, transcripts compared
// ---------------------------------------------------------------------------------------------

/// Two `etcdctl lock` contenders: the second waits until the first is interrupted (and unlocks),
/// then a third waits until the second, killed with -9, loses its 2 s lease. Returns what each
/// printed and how each ended, normalized.
async fn lock_scenario(ep: &str) -> Vec<String> {
    let mut t = Vec::new();
    let a = Proc::etcdctl(ep, &["lock", "job"]);
    let a_key = a.line(DEADLINE, "the first contender's key");
    t.push(format!("a: {}", norm(&a_key)));
    t.push(format!(
        "a: {:?}",
        a.line(DEADLINE, "the (empty) value line")
    ));
    assert!(a_key.starts_with("job/"), "{a_key}");

    let b = Proc::etcdctl(ep, &["lock", "--ttl", "2", "job"]);
    wait_keys(ep, "job/", 2).await;
    b.silent_for(MUST_WAIT, "the second contender must wait for the first");

    a.signal("INT");
    let (code, err) = a.wait(DEADLINE);
    t.push(format!("a exit: {code:?} {err:?}"));
    let b_key = b.line(DEADLINE, "the second contender's key after the first exits");
    t.push(format!("b: {}", norm(&b_key)));
    t.push(format!("b: {:?}", b.line(DEADLINE, "value line")));
    assert_ne!(a_key, b_key);

    // A third contender runs a command under the lock; the second holder dies without unlocking.
    let c = Proc::etcdctl(
        ep,
        &[
            "lock",
            "job",
            "--",
            "sh",
            "-c",
            "echo locked $ETCD_LOCK_KEY; exit 3",
        ],
    );
    wait_keys(ep, "job/", 2).await;
    c.silent_for(MUST_WAIT, "the third contender must wait for the second");
    let killed_at = Instant::now();
    b.signal("KILL");
    let line = c.line(DEADLINE, "the third contender's command output");
    let waited = killed_at.elapsed();
    t.push(format!("c: {}", norm(&line)));
    // The 2 s lease must expire first; a lock passed on at once would mean the kill unlocked it.
    assert!(
        waited >= Duration::from_millis(900),
        "lock passed on after {waited:?}"
    );
    let (code, err) = c.wait(DEADLINE);
    t.push(format!("c exit: {code:?} {err:?}"));
    // The command's lock was released when it finished.
    wait_keys(ep, "job/", 0).await;
    t
}

/// `elect -l` observes, two `elect` candidates take turns; an interrupted leader resigns.
async fn elect_scenario(ep: &str) -> Vec<String> {
    let mut t = Vec::new();
    let obs = Proc::etcdctl(ep, &["elect", "-l", "pick"]);
    let a = Proc::etcdctl(ep, &["elect", "pick", "alpha"]);
    t.push(format!("a: {}", norm(&a.line(DEADLINE, "a elected"))));
    t.push(format!("a: {}", a.line(DEADLINE, "a's value")));
    t.push(format!(
        "obs: {}",
        norm(&obs.line(DEADLINE, "observer sees a"))
    ));
    t.push(format!(
        "obs: {}",
        obs.line(DEADLINE, "observer sees alpha")
    ));

    let b = Proc::etcdctl(ep, &["elect", "pick", "beta"]);
    wait_keys(ep, "pick/", 2).await;
    b.silent_for(MUST_WAIT, "the second candidate must wait");
    obs.silent_for(Duration::from_millis(200), "no leader change yet");

    a.signal("INT");
    let (code, err) = a.wait(DEADLINE);
    t.push(format!("a exit: {code:?} {err:?}"));
    t.push(format!("b: {}", norm(&b.line(DEADLINE, "b elected"))));
    t.push(format!("b: {}", b.line(DEADLINE, "b's value")));
    t.push(format!(
        "obs: {}",
        norm(&obs.line(DEADLINE, "observer sees b"))
    ));
    t.push(format!("obs: {}", obs.line(DEADLINE, "observer sees beta")));
    b.signal("INT");
    let (code, err) = b.wait(DEADLINE);
    t.push(format!("b exit: {code:?} {err:?}"));
    wait_keys(ep, "pick/", 0).await;
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_lock_and_elect_behave_as_against_etcd() {
    if !have_etcdctl() {
        eprintln!("SKIP: etcdctl not installed");
        return;
    }
    let cluster = Cluster::start(1).await;
    let ep = cluster.members[0].endpoint();
    let cairn_lock = lock_scenario(&ep).await;
    let cairn_elect = elect_scenario(&ep).await;
    let expected_lock = [
        "a: job/<lease>",
        "a: \"\"",
        "a exit: Some(0) \"\"",
        "b: job/<lease>",
        "b: \"\"",
        "c: locked job/<lease>",
    ];
    assert_eq!(cairn_lock[..expected_lock.len()], expected_lock[..]);
    // etcdctl 3.5 exits with the command's status, 3.4 with 1; etcd's run below pins which.
    let exit = cairn_lock.last().map(String::as_str);
    assert!(
        matches!(
            exit,
            Some("c exit: Some(3) \"Error: exit status 3\\n\"")
                | Some("c exit: Some(1) \"Error: exit status 3\\n\"")
        ),
        "{exit:?}"
    );
    let expected_elect = vec![
        "a: pick/<lease>",
        "a: alpha",
        "obs: pick/<lease>",
        "obs: alpha",
        "a exit: Some(0) \"\"",
        "b: pick/<lease>",
        "b: beta",
        "obs: pick/<lease>",
        "obs: beta",
        "b exit: Some(0) \"\"",
    ];
    assert_eq!(cairn_elect, expected_elect);
    let Some(etcd) = Etcd::start().await else {
        eprintln!("SKIP (etcd half): etcd not installed");
        return;
    };
    assert_eq!(
        lock_scenario(&etcd.endpoint()).await,
        cairn_lock,
        "etcd differs"
    );
    assert_eq!(
        elect_scenario(&etcd.endpoint()).await,
        cairn_elect,
        "etcd differs"
    );
}

// ---------------------------------------------------------------------------------------------
// cairn's own lock / elect
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn cairn_lock_and_elect_cli() {
    let cluster = Cluster::start(1).await;
    let ep = cluster.members[0].endpoint();

    // lock: prints the key as get does, holds it until ^C, releases it on the way out.
    let a = Proc::cairn(&ep, &["lock", "--ttl", "2", "door"]);
    let a_key = a.line(DEADLINE, "cairn lock's key");
    assert!(a_key.starts_with("door/"), "{a_key}");
    assert_eq!(a.line(DEADLINE, "value line"), "");
    // A command under the same lock waits, then runs with the lock's key, and its status is ours.
    let b = Proc::cairn(
        &ep,
        &[
            "lock",
            "door",
            "--",
            "sh",
            "-c",
            "echo $ETCD_LOCK_KEY $ETCD_LOCK_REV; exit 4",
        ],
    );
    wait_keys(&ep, "door/", 2).await;
    b.silent_for(MUST_WAIT, "cairn lock with a command must wait");
    a.signal("INT");
    let (code, err) = a.wait(DEADLINE);
    assert_eq!((code, err.as_str()), (Some(0), ""));
    let out = b.line(DEADLINE, "command output");
    let (key, rev) = out.split_once(' ').expect("key and revision");
    assert!(key.starts_with("door/") && key != a_key, "{out}");
    assert!(rev.parse::<i64>().is_ok_and(|r| r > 1), "{out}");
    let (code, err) = b.wait(DEADLINE);
    assert_eq!((code, err.as_str()), (Some(4), "Error: exit status 4\n"));
    wait_keys(&ep, "door/", 0).await;

    // kill -9 of a holder: the lock passes on once its lease expires.
    let a = Proc::cairn(&ep, &["lock", "--ttl", "2", "door"]);
    a.line(DEADLINE, "key");
    let b = Proc::cairn(&ep, &["lock", "door", "true"]);
    wait_keys(&ep, "door/", 2).await;
    a.signal("KILL");
    let (code, _) = b.wait(DEADLINE);
    assert_eq!(code, Some(0));

    // elect: observer, two candidates, an interrupted leader resigns.
    let obs = Proc::cairn(&ep, &["elect", "-l", "boss"]);
    let x = Proc::cairn(&ep, &["elect", "boss", "x"]);
    let x_key = x.line(DEADLINE, "x elected");
    assert!(x_key.starts_with("boss/"));
    assert_eq!(x.line(DEADLINE, "x's value"), "x");
    assert_eq!(obs.line(DEADLINE, "observer: key"), x_key);
    assert_eq!(obs.line(DEADLINE, "observer: value"), "x");
    let y = Proc::cairn(&ep, &["elect", "boss", "y"]);
    wait_keys(&ep, "boss/", 2).await;
    y.silent_for(MUST_WAIT, "y must wait");
    x.signal("INT");
    assert_eq!(x.wait(DEADLINE).0, Some(0));
    let y_key = y.line(DEADLINE, "y elected");
    assert_eq!(y.line(DEADLINE, "y's value"), "y");
    assert_eq!(obs.line(DEADLINE, "observer: new key"), y_key);
    assert_eq!(obs.line(DEADLINE, "observer: new value"), "y");
    obs.signal("INT");
    assert_eq!(obs.wait(DEADLINE).0, Some(0));

    // Argument errors as etcdctl words them.
    let (code, err) = Proc::cairn(&ep, &["elect", "boss"]).wait(DEADLINE);
    assert_eq!(
        (code, err.as_str()),
        (Some(128), "Error: no proposal argument but -l not set\n")
    );
    let (code, err) = Proc::cairn(&ep, &["lock"]).wait(DEADLINE);
    assert_eq!(
        (code, err.as_str()),
        (
            Some(128),
            "Error: lock takes a lock name argument and an optional command to execute\n"
        )
    );
}

// ---------------------------------------------------------------------------------------------
// The gRPC services directly, against cairn and etcd
// ---------------------------------------------------------------------------------------------

async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_string())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

async fn grant(endpoint: &str, ttl: i64) -> i64 {
    let mut c = etcd_client::Client::connect([endpoint], None)
        .await
        .expect("connect");
    c.lease_grant(ttl, None).await.expect("grant").id()
}

async fn revoke(endpoint: &str, id: i64) {
    let mut c = etcd_client::Client::connect([endpoint], None)
        .await
        .expect("connect");
    c.lease_revoke(id).await.expect("revoke");
}

/// What a call answered: OK, or its gRPC code and message.
fn outcome<T>(r: Result<tonic::Response<T>, tonic::Status>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    }
}

/// The next leader an observer reported.
async fn next_seen(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<cairn_store::proto::mvccpb::KeyValue>,
) -> cairn_store::proto::mvccpb::KeyValue {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("observer sees a change")
        .expect("observe stream open")
}

/// Records a step (and shows it, so a hung run shows where it stopped).
fn note(t: &mut Vec<String>, step: String) {
    eprintln!("{step}");
    t.push(step);
}

/// Lock/Unlock and the election RPCs' answers and errors; returns a transcript.
async fn grpc_scenario(ep: &str) -> Vec<String> {
    let mut t = Vec::new();
    let ch = channel(ep).await;
    let mut locks = LockClient::new(ch.clone());
    let mut elections = ElectionClient::new(ch.clone());

    // Unlock of a key that does not exist is a plain delete: it succeeds.
    note(
        &mut t,
        format!(
            "unlock missing: {}",
            outcome(
                locks
                    .unlock(UnlockRequest {
                        key: b"nolock/1".to_vec()
                    })
                    .await
            )
        ),
    );
    // A lock on a lease that does not exist.
    note(
        &mut t,
        format!(
            "lock bad lease: {}",
            outcome(
                locks
                    .lock(LockRequest {
                        name: b"l".to_vec(),
                        lease: 0x1234_5678
                    })
                    .await
            )
        ),
    );

    // Two holders: the second waits; cancelling it withdraws its key; revoking the first's lease
    // passes the lock on.
    let l1 = grant(ep, 60).await;
    let l2 = grant(ep, 60).await;
    let first = locks
        .lock(LockRequest {
            name: b"l".to_vec(),
            lease: l1,
        })
        .await
        .expect("lock")
        .into_inner();
    assert_eq!(first.key, format!("l/{l1:x}").into_bytes());
    let cancelled = tokio::time::timeout(
        MUST_WAIT,
        locks.clone().lock(LockRequest {
            name: b"l".to_vec(),
            lease: l2,
        }),
    )
    .await;
    assert!(
        cancelled.is_err(),
        "the second Lock must wait for the first"
    );
    wait_keys(ep, "l/", 1).await;
    let mut waiting = locks.clone();
    let second = tokio::spawn(async move {
        waiting
            .lock(LockRequest {
                name: b"l".to_vec(),
                lease: l2,
            })
            .await
    });
    wait_keys(ep, "l/", 2).await;
    revoke(ep, l1).await;
    let second = tokio::time::timeout(DEADLINE, second)
        .await
        .expect("lock passed on")
        .expect("task");
    let second = second.expect("second lock").into_inner();
    assert_eq!(second.key, format!("l/{l2:x}").into_bytes());
    note(
        &mut t,
        format!(
            "unlock held: {}",
            outcome(locks.unlock(UnlockRequest { key: second.key }).await)
        ),
    );
    wait_keys(ep, "l/", 0).await;

    // Election: no leader yet.
    let name = b"e".to_vec();
    note(
        &mut t,
        format!(
            "leader none: {}",
            outcome(elections.leader(LeaderRequest { name: name.clone() }).await)
        ),
    );
    // etcd sends an Observe stream's headers with its first message, so the call itself only
    // returns once there is a leader: observe from a task, leaders arriving on a channel.
    let (seen_tx, mut observed) = tokio::sync::mpsc::unbounded_channel();
    let mut observer = elections.clone();
    let observed_name = name.clone();
    let observing = tokio::spawn(async move {
        let mut stream = observer
            .observe(LeaderRequest {
                name: observed_name,
            })
            .await
            .expect("observe")
            .into_inner();
        while let Ok(Some(resp)) = stream.message().await {
            if seen_tx.send(resp.kv.expect("kv")).is_err() {
                break;
            }
        }
    });
    let won = elections
        .campaign(CampaignRequest {
            name: name.clone(),
            lease: l2,
            value: b"v1".to_vec(),
        })
        .await
        .expect("campaign")
        .into_inner();
    let leader = won.leader.clone().expect("leader key");
    assert_eq!(leader.key, format!("e/{l2:x}").into_bytes());
    assert_eq!(
        (leader.name.as_slice(), leader.lease),
        (name.as_slice(), l2)
    );
    let seen = next_seen(&mut observed).await;
    assert_eq!(
        (seen.key.as_slice(), seen.value.as_slice()),
        (leader.key.as_slice(), &b"v1"[..])
    );
    assert_eq!(seen.create_revision, leader.rev);

    note(
        &mut t,
        format!(
            "proclaim: {}",
            outcome(
                elections
                    .proclaim(ProclaimRequest {
                        leader: Some(leader.clone()),
                        value: b"v2".to_vec()
                    })
                    .await
            )
        ),
    );
    let seen = next_seen(&mut observed).await;
    assert_eq!(seen.value, b"v2");
    let now = elections
        .leader(LeaderRequest { name: name.clone() })
        .await
        .expect("leader")
        .into_inner();
    assert_eq!(now.kv.map(|kv| kv.value), Some(b"v2".to_vec()));

    let stale = LeaderKey {
        rev: leader.rev + 1000,
        ..leader.clone()
    };
    note(
        &mut t,
        format!(
            "proclaim stale: {}",
            outcome(
                elections
                    .proclaim(ProclaimRequest {
                        leader: Some(stale.clone()),
                        value: b"x".to_vec()
                    })
                    .await
            )
        ),
    );
    note(
        &mut t,
        format!(
            "proclaim missing leader: {}",
            outcome(
                elections
                    .proclaim(ProclaimRequest {
                        leader: None,
                        value: b"x".to_vec()
                    })
                    .await
            )
        ),
    );
    // etcd's Resign of leadership already lost is a no-op that succeeds, and deletes nothing.
    note(
        &mut t,
        format!(
            "resign stale: {}",
            outcome(
                elections
                    .resign(ResignRequest {
                        leader: Some(stale)
                    })
                    .await
            )
        ),
    );
    note(
        &mut t,
        format!(
            "resign missing leader: {}",
            outcome(elections.resign(ResignRequest { leader: None }).await)
        ),
    );
    assert_eq!(
        keys_under(ep, "e/").await.len(),
        1,
        "a stale resign deleted the leader"
    );

    // A second candidate waits; the leader resigns; the observer follows.
    let l3 = grant(ep, 60).await;
    let mut waiting = elections.clone();
    let name2 = name.clone();
    let next = tokio::spawn(async move {
        waiting
            .campaign(CampaignRequest {
                name: name2,
                lease: l3,
                value: b"w".to_vec(),
            })
            .await
    });
    wait_keys(ep, "e/", 2).await;
    note(
        &mut t,
        format!(
            "resign: {}",
            outcome(
                elections
                    .resign(ResignRequest {
                        leader: Some(leader.clone())
                    })
                    .await
            )
        ),
    );
    let next = tokio::time::timeout(DEADLINE, next)
        .await
        .expect("elected")
        .expect("task")
        .expect("campaign");
    let next = next.into_inner().leader.expect("leader");
    assert_eq!(next.key, format!("e/{l3:x}").into_bytes());
    let seen = next_seen(&mut observed).await;
    assert_eq!((seen.key, seen.value), (next.key.clone(), b"w".to_vec()));
    // The old leader key is stale now.
    note(
        &mut t,
        format!(
            "proclaim after resign: {}",
            outcome(
                elections
                    .proclaim(ProclaimRequest {
                        leader: Some(leader),
                        value: b"y".to_vec()
                    })
                    .await
            )
        ),
    );
    // Revoking the leader's lease ends its leadership: no leader.
    revoke(ep, l3).await;
    note(
        &mut t,
        format!(
            "leader after revoke: {}",
            outcome(elections.leader(LeaderRequest { name }).await)
        ),
    );
    revoke(ep, l2).await;
    observing.abort();
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_lock_and_election_answer_as_etcd() {
    let cluster = Cluster::start(1).await;
    let cairn = grpc_scenario(&cluster.members[0].endpoint()).await;
    let expected = vec![
        "unlock missing: ok",
        // etcd's Lock and Election run on an internal client, so KV errors reach the caller
        // with their message but as Unknown.
        "lock bad lease: Unknown: etcdserver: requested lease not found",
        "unlock held: ok",
        "leader none: Unknown: election: no leader",
        "proclaim: ok",
        "proclaim stale: Unknown: election: not leader",
        "proclaim missing leader: Unknown: \"leader\" field must be provided",
        "resign stale: ok",
        "resign missing leader: Unknown: \"leader\" field must be provided",
        "resign: ok",
        "proclaim after resign: Unknown: election: not leader",
        "leader after revoke: Unknown: election: no leader",
    ];
    assert_eq!(cairn, expected);
    let Some(etcd) = Etcd::start().await else {
        eprintln!("SKIP (etcd half): etcd not installed");
        return;
    };
    assert_eq!(grpc_scenario(&etcd.endpoint()).await, cairn, "etcd differs");
}

/// A Lock waiting on a follower is woken by the leader's deletes, and a cancelled waiter leaves
/// no key behind (the server withdrew it) in a three-member cluster.
#[tokio::test(flavor = "multi_thread")]
async fn lock_through_a_follower() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(DEADLINE).await;
    let follower = (leader + 1) % 3;
    let lep = cluster.members[leader].endpoint();
    let fep = cluster.members[follower].endpoint();
    let l1 = grant(&lep, 60).await;
    let l2 = grant(&fep, 60).await;
    let mut on_leader = LockClient::new(channel(&lep).await);
    let mut on_follower = LockClient::new(channel(&fep).await);
    let held = on_leader
        .lock(LockRequest {
            name: b"f".to_vec(),
            lease: l1,
        })
        .await
        .expect("lock")
        .into_inner();
    let waiting = tokio::spawn(async move {
        on_follower
            .lock(LockRequest {
                name: b"f".to_vec(),
                lease: l2,
            })
            .await
    });
    wait_keys(&fep, "f/", 2).await;
    on_leader
        .unlock(UnlockRequest { key: held.key })
        .await
        .expect("unlock");
    let got = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("passed on")
        .expect("task");
    assert_eq!(
        got.expect("lock").into_inner().key,
        format!("f/{l2:x}").into_bytes()
    );
}
