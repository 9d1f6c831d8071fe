//! Maintenance with real processes: HashKV agreement, Snapshot -> offline restore -> a new
//! cluster with the same data, etcdctl's snapshot save, and the NOSPACE quota with its recovery.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cairn_store::proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_store::proto::etcdserverpb::kv_client::KvClient;
use cairn_store::proto::etcdserverpb::lease_client::LeaseClient;
use cairn_store::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_store::proto::etcdserverpb::request_op::Request as Op;
use cairn_store::proto::etcdserverpb::{
    AlarmRequest, AlarmType, CompactionRequest, DefragmentRequest, DeleteRangeRequest,
    HashKvRequest, HashKvResponse, HashRequest, LeaseGrantRequest, LeaseTimeToLiveRequest,
    PutRequest, RangeRequest, RequestOp, SnapshotRequest, StatusRequest, StatusResponse,
    TxnRequest,
};
use sha2::{Digest, Sha256};
use support::{cairn_bin, eventually, free_port, Cluster};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);

async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_string())
        .expect("endpoint uri")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(15))
        .connect()
        .await
        .expect("connect")
}

async fn maint(endpoint: &str) -> MaintenanceClient<Channel> {
    MaintenanceClient::new(channel(endpoint).await)
}

async fn kv(endpoint: &str) -> KvClient<Channel> {
    KvClient::new(channel(endpoint).await)
}

async fn status(endpoint: &str) -> Option<StatusResponse> {
    let mut m = MaintenanceClient::new(
        Channel::from_shared(endpoint.to_string())
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .ok()?,
    );
    m.status(StatusRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &[u8]) -> Result<i64, tonic::Status> {
    let resp = kv
        .put(PutRequest {
            key: key.into(),
            value: value.to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(resp.header.map_or(0, |h| h.revision))
}

/// HashKV at `rev` on `endpoint`, once the member has applied that far.
async fn hash_kv_at(endpoint: &str, rev: i64) -> HashKvResponse {
    let mut m = maint(endpoint).await;
    eventually(WAIT, "member caught up to the revision", || {
        let mut m = m.clone();
        async move {
            m.hash_kv(HashKvRequest { revision: rev })
                .await
                .ok()
                .map(|r| r.into_inner())
        }
    })
    .await;
    m.hash_kv(HashKvRequest { revision: rev })
        .await
        .expect("hash kv")
        .into_inner()
}

fn cairn(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(cairn_bin())
        .args(args)
        .output()
        .expect("run cairn");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A member of a cluster started from restored data dirs (the shared harness starts fresh ones).
struct Restored {
    child: Child,
    client_port: u16,
    log: PathBuf,
}

impl Restored {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_restored(
    name: &str,
    data_dir: &Path,
    client_port: u16,
    peer_port: u16,
    initial_cluster: &str,
    token: &str,
    log: PathBuf,
) -> Restored {
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log handle");
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let child = Command::new(cairn_bin())
        .args([
            "serve",
            "--name",
            name,
            "--data-dir",
            &data_dir.display().to_string(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-token",
            token,
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
        ])
        .env("CAIRN_LOG", "info,openraft=error")
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn cairn");
    Restored {
        child,
        client_port,
        log,
    }
}

/// Every key with its value and revisions, read at `rev`.
async fn all_kvs(endpoint: &str, rev: i64) -> Vec<(Vec<u8>, Vec<u8>, i64, i64, i64, i64)> {
    let resp = kv(endpoint)
        .await
        .range(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    resp.kvs
        .into_iter()
        .map(|k| {
            (
                k.key,
                k.value,
                k.create_revision,
                k.mod_revision,
                k.version,
                k.lease,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hashkv_agrees_and_a_restored_snapshot_starts_a_new_cluster() {
    let cluster = Cluster::start(3).await;
    let eps = cluster.endpoints();
    let mut c = kv(&eps[0]).await;
    put(&mut c, "a", b"1").await.unwrap();
    put(&mut c, "b", b"2").await.unwrap();
    let before_compact = put(&mut c, "a", b"3").await.unwrap();
    let lease = LeaseClient::new(channel(&eps[0]).await)
        .lease_grant(LeaseGrantRequest { ttl: 600, id: 0 })
        .await
        .expect("lease grant")
        .into_inner()
        .id;
    c.put(PutRequest {
        key: "leased".into(),
        value: "x".into(),
        lease,
        ..Default::default()
    })
    .await
    .expect("leased put");
    c.delete_range(DeleteRangeRequest {
        key: "b".into(),
        ..Default::default()
    })
    .await
    .expect("delete");
    c.compact(CompactionRequest {
        revision: before_compact,
        physical: true,
    })
    .await
    .expect("compact");
    let rev = put(&mut c, "c", b"4").await.unwrap();

    // Every member hashes the same state at the same revision.
    let first = hash_kv_at(&eps[0], rev).await;
    assert_eq!(first.hash_revision, rev);
    assert_eq!(first.compact_revision, before_compact);
    for ep in &eps[1..] {
        let h = hash_kv_at(ep, rev).await;
        assert_eq!(
            (h.hash, h.compact_revision, h.hash_revision),
            (first.hash, first.compact_revision, first.hash_revision),
            "HashKV at {rev} on {ep}"
        );
    }
    // Hash (the whole state machine, per member) is stable while nothing is written and moves
    // with a write, answering at the revision it hashed.
    let mut m0 = maint(&eps[0]).await;
    let whole = |r: tonic::Response<cairn_store::proto::etcdserverpb::HashResponse>| {
        let r = r.into_inner();
        (r.hash, r.header.map_or(0, |h| h.revision))
    };
    let h1 = whole(m0.hash(HashRequest {}).await.expect("hash"));
    let h2 = whole(m0.hash(HashRequest {}).await.expect("hash"));
    assert_eq!(h1, h2);
    assert_eq!(h1.1, rev);
    let after = put(&mut c, "d", b"5").await.unwrap();
    // Hash reads this member's state machine as it is (as etcd's does): a follower may answer
    // before it has applied the write the leader acknowledged.
    let h3 = eventually(WAIT, "the member to apply the write", || {
        let mut m0 = m0.clone();
        async move {
            let h = whole(m0.hash(HashRequest {}).await.ok()?);
            (h.1 >= after).then_some(h)
        }
    })
    .await;
    assert_eq!(h3.1, after);
    assert_ne!(h3.0, h1.0, "a write changes the state machine's hash");
    // A compacted revision and a future one are refused with etcd's errors.
    let err = m0
        .hash_kv(HashKvRequest {
            revision: before_compact - 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    let err = m0
        .hash_kv(HashKvRequest {
            revision: rev + 100,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );

    // A change gives a different hash, again agreed on by every member.
    let rev2 = put(&mut c, "a", b"5").await.unwrap();
    let second = hash_kv_at(&eps[2], rev2).await;
    assert_ne!(second.hash, first.hash);
    for ep in &eps[..2] {
        assert_eq!(hash_kv_at(ep, rev2).await.hash, second.hash);
    }
    // The earlier revision still hashes as before.
    assert_eq!(hash_kv_at(&eps[1], rev).await.hash, first.hash);

    // Snapshot over raw gRPC from a member: 32 KiB chunks counting down, then the SHA-256.
    let mut stream = maint(&eps[1])
        .await
        .snapshot(SnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    let mut messages = Vec::new();
    while let Some(msg) = stream.message().await.expect("snapshot stream") {
        messages.push(msg);
    }
    let (last, chunks) = messages.split_last().expect("at least the digest");
    assert_eq!(last.remaining_bytes, 0);
    assert_eq!(last.version, "3.5.17");
    let body: Vec<u8> = chunks.iter().flat_map(|m| m.blob.clone()).collect();
    assert!(chunks.iter().all(|m| m.blob.len() <= 32 * 1024));
    let mut remaining = body.len() as u64;
    for m in chunks {
        remaining -= m.blob.len() as u64;
        assert_eq!(m.remaining_bytes, remaining);
    }
    assert_eq!(last.blob, Sha256::digest(&body).to_vec(), "sha256 trailer");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db");
    std::fs::write(&file, [body.as_slice(), last.blob.as_slice()].concat()).unwrap();
    let file_arg = file.display().to_string();

    // `cairn snapshot status` reads it offline.
    let (ok, out, err) = cairn(&["snapshot", "status", &file_arg, "-w", "json"]);
    assert!(ok, "snapshot status: {err}");
    let st: serde_json::Value = serde_json::from_str(&out).expect("status json");
    assert_eq!(st["revision"], rev2);
    assert!(st["totalKey"].as_u64().unwrap() > 5, "{out}");
    assert_eq!(
        st["totalSize"].as_u64().unwrap(),
        std::fs::metadata(&file).unwrap().len()
    );
    let (ok, out, _) = cairn(&["snapshot", "status", &file_arg, "-w", "table"]);
    assert!(ok && out.contains("| TOTAL KEYS |"), "{out}");

    // etcdctl's snapshot save (which checks the trailer) works against cairn too.
    if support::have_etcdctl() {
        let saved = dir.path().join("etcdctl.db");
        let host = eps[0].trim_start_matches("http://");
        let (ok, out, err) = support::etcdctl(
            host,
            &["snapshot", "save", &saved.display().to_string()],
            None,
        );
        assert!(ok, "etcdctl snapshot save: {out} {err}");
        let (ok, out, err) = cairn(&[
            "snapshot",
            "status",
            &saved.display().to_string(),
            "-w",
            "json",
        ]);
        assert!(ok, "status of etcdctl's file: {err}");
        let st: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(st["revision"], rev2);
    }

    // Restore into three new data dirs for a new cluster.
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial_cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("r{i}=http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let token = "restored-cluster";
    let dirs: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("r{i}"))).collect();
    for (i, d) in dirs.iter().enumerate() {
        let peer = format!("http://127.0.0.1:{}", ports[i].1);
        let (ok, out, err) = cairn(&[
            "snapshot",
            "restore",
            &file_arg,
            "--data-dir",
            &d.display().to_string(),
            "--name",
            &format!("r{i}"),
            "--initial-cluster",
            &initial_cluster,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster-token",
            token,
        ]);
        assert!(ok, "restore r{i}: {out} {err}");
    }
    // A data dir that is not empty is refused.
    let (ok, _, err) = cairn(&[
        "snapshot",
        "restore",
        &file_arg,
        "--data-dir",
        &dirs[0].display().to_string(),
        "--name",
        "r0",
        "--initial-cluster",
        &initial_cluster,
        "--initial-advertise-peer-urls",
        &format!("http://127.0.0.1:{}", ports[0].1),
    ]);
    assert!(!ok && err.contains("not empty"), "{err}");

    let restored: Vec<Restored> = (0..3)
        .map(|i| {
            serve_restored(
                &format!("r{i}"),
                &dirs[i],
                ports[i].0,
                ports[i].1,
                &initial_cluster,
                token,
                dir.path().join(format!("r{i}.log")),
            )
        })
        .collect();
    let new_eps: Vec<String> = restored.iter().map(Restored::endpoint).collect();
    let old_cluster_id = status(&eps[0]).await.unwrap().header.unwrap().cluster_id;
    let leader = eventually(WAIT, "the restored cluster to elect a leader", || {
        let new_eps = new_eps.clone();
        async move {
            let mut leaders = Vec::new();
            for ep in &new_eps {
                leaders.push(status(ep).await?.leader);
            }
            (leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0])).then_some(leaders[0])
        }
    })
    .await;
    assert_ne!(leader, 0);
    for (ep, r) in new_eps.iter().zip(&restored) {
        let s = status(ep).await.expect("status of a restored member");
        let header = s.header.unwrap();
        assert_ne!(header.cluster_id, old_cluster_id, "a NEW cluster id");
        assert_eq!(
            header.revision,
            rev2,
            "{}",
            std::fs::read_to_string(&r.log).unwrap_or_default()
        );
        // Same data: HashKV at the backup's revision matches the original cluster's.
        let h = hash_kv_at(ep, rev2).await;
        assert_eq!(
            (h.hash, h.compact_revision),
            (second.hash, second.compact_revision)
        );
        assert_eq!(all_kvs(ep, rev2).await, all_kvs(&eps[0], rev2).await);
    }
    // The lease came along with its key, and the new cluster takes writes after the backup's
    // revision.
    let ttl = LeaseClient::new(channel(&new_eps[0]).await)
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: lease,
            keys: true,
        })
        .await
        .expect("lease ttl")
        .into_inner();
    assert!(ttl.ttl > 0, "lease survives the restore: {ttl:?}");
    assert_eq!(ttl.keys, vec![b"leased".to_vec()]);
    let mut rc = kv(&new_eps[1]).await;
    assert_eq!(put(&mut rc, "after", b"restore").await.unwrap(), rev2 + 1);
    // The restored membership is the new one, and the old members are not in it.
    let (ok, out, err) = cairn(&["--endpoints", &new_eps[0], "member", "list"]);
    if ok {
        assert!(out.contains("r0") && !out.contains("m0"), "{out}");
    } else {
        eprintln!("member list not available: {err}");
    }
}

fn is_nospace(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::ResourceExhausted
        && s.message() == "etcdserver: mvcc: database space exceeded"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tiny_quota_raises_nospace_and_recovers() {
    const QUOTA: i64 = 1_500_000;
    let quota = QUOTA.to_string();
    let cluster = Cluster::start_with(
        3,
        &[
            "--quota-backend-bytes",
            &quota,
            "--snapshot-count",
            "5",
            "--snapshot-catchup-entries",
            "1",
        ],
    )
    .await;
    let eps = cluster.endpoints();
    let mut c = kv(&eps[0]).await;
    put(&mut c, "small", b"kept").await.unwrap();
    let big = vec![b'x'; 100 * 1024];
    let mut refused = None;
    for i in 0..200 {
        match put(&mut c, &format!("big/{i}"), &big).await {
            Ok(_) => {}
            Err(s) => {
                refused = Some(s);
                break;
            }
        }
    }
    let refused = refused.expect("the quota is reached");
    assert!(is_nospace(&refused), "{refused:?}");

    // The alarm is replicated: every member lists it and reports it in Status.
    let mut m0 = maint(&eps[0]).await;
    let me = status(&eps[0]).await.unwrap().header.unwrap().member_id;
    let alarms = m0
        .alarm(AlarmRequest {
            action: AlarmAction::Get as i32,
            member_id: 0,
            alarm: AlarmType::None as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .alarms;
    assert_eq!(alarms.len(), 1);
    assert_eq!(
        (alarms[0].member_id, alarms[0].alarm),
        (me, AlarmType::Nospace as i32)
    );
    let expected = format!("memberID:{me} alarm:NOSPACE ");
    for ep in &eps {
        eventually(WAIT, "NOSPACE in every member's Status errors", || {
            let expected = expected.clone();
            async move { (status(ep).await?.errors == vec![expected]).then_some(()) }
        })
        .await;
    }

    // Writes that need space fail on every member; reads, deletes and compaction work.
    let mut c2 = kv(&eps[2]).await;
    assert!(is_nospace(
        &put(&mut c2, "small", b"again").await.unwrap_err()
    ));
    let txn_put = TxnRequest {
        success: vec![RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: "t".into(),
                value: "v".into(),
                ..Default::default()
            })),
        }],
        ..Default::default()
    };
    assert!(is_nospace(&c.txn(txn_put.clone()).await.unwrap_err()));
    let grant = LeaseClient::new(channel(&eps[1]).await)
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .unwrap_err();
    assert!(is_nospace(&grant), "{grant:?}");
    assert!(
        all_kvs(&eps[1], 0).await.len() > 1,
        "reads work under NOSPACE"
    );
    let deleted = c
        .delete_range(DeleteRangeRequest {
            key: "big/".into(),
            range_end: "big0".into(),
            ..Default::default()
        })
        .await
        .expect("deletes work under NOSPACE")
        .into_inner();
    assert!(deleted.deleted > 0);
    let rev = deleted.header.unwrap().revision;
    // The delete may have been applied by the leader only so far; compact once this member has.
    eventually(
        WAIT,
        "the delete applied on the member compacting",
        || async { (status(&eps[0]).await?.header?.revision >= rev).then_some(()) },
    )
    .await;
    c.compact(CompactionRequest {
        revision: rev,
        physical: true,
    })
    .await
    .expect("compaction works under NOSPACE");

    // Defragment every member: the database shrinks.
    for ep in &eps {
        let before = status(ep).await.unwrap().db_size;
        maint(ep)
            .await
            .defragment(DefragmentRequest {})
            .await
            .expect("defragment");
        let after = status(ep).await.unwrap();
        eprintln!(
            "{ep}: dbSize before defrag {before}, after {} (in use {})",
            after.db_size, after.db_size_in_use
        );
        assert!(
            after.db_size < before,
            "{ep}: {before} -> {}",
            after.db_size
        );
        assert!(after.db_size < QUOTA, "{ep}: {} >= quota", after.db_size);
    }
    // The alarm stays until disarmed.
    assert!(is_nospace(
        &put(&mut c, "small", b"again").await.unwrap_err()
    ));
    let disarmed = m0
        .alarm(AlarmRequest {
            action: AlarmAction::Deactivate as i32,
            member_id: me,
            alarm: AlarmType::Nospace as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .alarms;
    assert_eq!(disarmed.len(), 1);
    for ep in &eps {
        eventually(WAIT, "the alarm cleared everywhere", || async move {
            status(ep).await?.errors.is_empty().then_some(())
        })
        .await;
    }
    put(&mut c, "small", b"again")
        .await
        .expect("writes work again");
    c.txn(txn_put).await.expect("txn writes work again");
    let got = all_kvs(&eps[2], 0).await;
    assert!(got.iter().any(|k| k.0 == b"small" && k.1 == b"again"));
}

/// With a snapshot count no workload reaches, a member still takes a Raft snapshot once its
/// log has grown by `--snapshot-log-bytes`, and keeps serving what was written before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_taken_when_the_log_grows_past_its_size_limit() {
    let cluster = Cluster::start_with(
        1,
        &[
            "--snapshot-count",
            "100000000",
            "--snapshot-log-bytes",
            "1048576",
        ],
    )
    .await;
    let m = &cluster.members[0];
    let snapshot = m.data_dir.join("member/snap/raft.snapshot");
    let mut kv = kv(&m.endpoint()).await;
    let value = vec![b'x'; 8 * 1024];
    // 4 MiB of puts, each its own entry: far below the count, well past the byte limit.
    for i in 0..512 {
        put(&mut kv, &format!("big/{i:04}"), &value).await.unwrap();
    }
    eventually(WAIT, "a raft snapshot file", || async {
        snapshot.exists().then_some(())
    })
    .await;
    let resp = kv
        .range(RangeRequest {
            key: b"big/".to_vec(),
            range_end: b"big0".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.count, 512);
}
