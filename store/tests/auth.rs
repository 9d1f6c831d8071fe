//! Authentication and authorization with real processes: an etcdctl transcript that must read
//! the same on cairn and on real etcd 3.4, token expiry, root-only operations, auth state across
//! restarts and leader failure, and watches on forbidden ranges.

mod support;

use std::time::Duration;

use cairn_store::client::{Client, ConnectOptions, Credentials};
use cairn_store::proto::authpb::Permission;
use cairn_store::proto::etcdserverpb::watch_request::RequestUnion;
use cairn_store::proto::etcdserverpb::*;
use support::{etcdctl, eventually, have_etcdctl, Cluster, Etcd};

const WAIT: Duration = Duration::from_secs(30);

/// (user, arguments, stdin) run in order with etcdctl.
type Step = (Option<&'static str>, &'static [&'static str], &'static str);

const ROOT: Option<&str> = Some("root:rootpw");
const ALICE: Option<&str> = Some("alice:alicepw");

const TRANSCRIPT: &[Step] = &[
    (None, &["auth", "enable"], ""),
    (
        None,
        &["user", "add", "root", "--new-user-password=rootpw"],
        "",
    ),
    (None, &["role", "add", "r1"], ""),
    (None, &["role", "add", "r1"], ""),
    (None, &["role", "add", ""], ""),
    (None, &["role", "grant-permission", "r1", "read", "foo"], ""),
    (
        None,
        &[
            "role",
            "grant-permission",
            "r1",
            "--prefix",
            "readwrite",
            "/app/",
        ],
        "",
    ),
    (
        None,
        &["role", "grant-permission", "r1", "write", "a", "c"],
        "",
    ),
    (
        None,
        &["role", "grant-permission", "r1", "--from-key", "read", "z"],
        "",
    ),
    (
        None,
        &["role", "grant-permission", "r1", "readwrite", "x"],
        "",
    ),
    (None, &["role", "grant-permission", "r1", "read", "x"], ""),
    (None, &["role", "grant-permission", "nope", "read", "x"], ""),
    (None, &["role", "get", "r1"], ""),
    (
        None,
        &["user", "add", "alice", "--interactive=false"],
        "alicepw\n",
    ),
    (None, &["user", "add", "alice", "--new-user-password=x"], ""),
    (None, &["user", "grant-role", "alice", "r1"], ""),
    (None, &["user", "grant-role", "alice", "r1"], ""),
    (None, &["user", "grant-role", "alice", "nope"], ""),
    (None, &["user", "grant-role", "nobody", "r1"], ""),
    (None, &["user", "get", "alice"], ""),
    (None, &["user", "get", "--detail", "alice"], ""),
    (None, &["user", "get", "nobody"], ""),
    (None, &["user", "list"], ""),
    (None, &["role", "list"], ""),
    (None, &["put", "foo", "before"], ""),
    // etcdctl adds the root role and grants it to root, then enables.
    (None, &["auth", "enable"], ""),
    (None, &["get", "foo"], ""),
    (None, &["put", "foo", "x"], ""),
    (None, &["user", "list"], ""),
    (Some("root:bad"), &["get", "foo"], ""),
    (Some("nobody:pw"), &["get", "foo"], ""),
    (ROOT, &["get", "foo"], ""),
    (ROOT, &["role", "get", "root"], ""),
    (ROOT, &["user", "get", "root"], ""),
    (ALICE, &["put", "foo", "x"], ""),
    (ALICE, &["get", "foo"], ""),
    (ALICE, &["put", "/app/k", "v"], ""),
    (ALICE, &["get", "--prefix", "/app/"], ""),
    (ALICE, &["get", "/app/", "/app1"], ""),
    (ALICE, &["put", "b", "v"], ""),
    (ALICE, &["get", "b"], ""),
    (ALICE, &["del", "b"], ""),
    (ALICE, &["put", "zz", "1"], ""),
    (ALICE, &["get", "zz"], ""),
    (ALICE, &["get", "z", "--from-key"], ""),
    (ALICE, &["get", "y", "--from-key"], ""),
    (
        ALICE,
        &["txn"],
        "value(\"foo\") = \"before\"\n\nput /app/t yes\n\nget foo\n\n",
    ),
    (
        ALICE,
        &["txn"],
        "value(\"foo\") = \"before\"\n\nput /app/t yes\n\nput foo no\n\n",
    ),
    (
        ALICE,
        &["txn"],
        "value(\"secret\") = \"x\"\n\nput /app/t yes\n\n\n",
    ),
    (ALICE, &["user", "list"], ""),
    (ALICE, &["user", "get", "alice"], ""),
    (ALICE, &["user", "get", "root"], ""),
    (ALICE, &["role", "get", "r1"], ""),
    (ALICE, &["role", "get", "root"], ""),
    (ALICE, &["role", "add", "r2"], ""),
    (ALICE, &["auth", "disable"], ""),
    (ALICE, &["watch", "bar"], ""),
    (ROOT, &["user", "list"], ""),
    (ROOT, &["role", "revoke-permission", "r1", "foo"], ""),
    (ROOT, &["role", "revoke-permission", "r1", "foo"], ""),
    (ROOT, &["role", "revoke-permission", "r1", "a", "c"], ""),
    (
        ROOT,
        &["role", "revoke-permission", "r1", "/app/", "--prefix"],
        "",
    ),
    (
        ROOT,
        &["role", "revoke-permission", "r1", "z", "--from-key"],
        "",
    ),
    (ROOT, &["role", "get", "r1"], ""),
    (ROOT, &["user", "revoke-role", "root", "root"], ""),
    (ROOT, &["user", "delete", "root"], ""),
    (ROOT, &["role", "delete", "root"], ""),
    (ROOT, &["user", "delete", "nobody"], ""),
    (ROOT, &["role", "get", "nobody"], ""),
    (ROOT, &["role", "delete", "nobody"], ""),
    (
        ROOT,
        &["user", "passwd", "alice", "--interactive=false"],
        "newpw\n",
    ),
    (ALICE, &["get", "foo"], ""),
    (Some("alice:newpw"), &["get", "x"], ""),
    (Some("alice:newpw"), &["get", "foo"], ""),
    (ROOT, &["user", "revoke-role", "alice", "r1"], ""),
    (ROOT, &["user", "revoke-role", "alice", "r1"], ""),
    (ROOT, &["user", "add", "--no-password", "cnuser"], ""),
    (ROOT, &["user", "get", "cnuser"], ""),
    (Some("cnuser:"), &["get", "foo"], ""),
    (ROOT, &["role", "delete", "r1"], ""),
    (ROOT, &["user", "delete", "alice"], ""),
    (ROOT, &["auth", "disable"], ""),
    (None, &["get", "foo"], ""),
    (None, &["user", "list"], ""),
    (ROOT, &["get", "foo"], ""),
];

/// Runs the transcript with etcdctl; each step's exit status, stdout and stderr (without the Go
/// client's JSON log lines).
fn transcript(endpoint: &str) -> Vec<String> {
    TRANSCRIPT
        .iter()
        .map(|(user, args, stdin)| {
            let mut full: Vec<&str> = Vec::new();
            let flag;
            if let Some(u) = user {
                flag = format!("--user={u}");
                full.push(&flag);
            }
            full.extend_from_slice(args);
            let (ok, out, err) = etcdctl(endpoint, &full, Some(stdin));
            let err: String = err
                .lines()
                .filter(|l| !l.starts_with("{\"level\""))
                .map(|l| format!("{l}\n"))
                .collect();
            format!("{user:?} {args:?} ok={ok}\n{out}{err}")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_transcript_matches_etcd() {
    if !have_etcdctl() {
        eprintln!("skipping: etcdctl not installed");
        return;
    }
    let Some(etcd) = Etcd::start().await else {
        eprintln!("skipping: etcd not installed");
        return;
    };
    let cluster = Cluster::start(1).await;
    let want = transcript(&etcd.endpoint());
    let got = transcript(&cluster.members[0].endpoint());
    let diffs: Vec<String> = want
        .iter()
        .zip(&got)
        .filter(|(w, g)| w != g)
        .map(|(w, g)| format!("etcd:  {w:?}\ncairn: {g:?}"))
        .collect();
    assert!(
        diffs.is_empty(),
        "{} of {} steps differ:\n{}",
        diffs.len(),
        want.len(),
        diffs.join("\n")
    );
}

async fn connect(endpoint: &str, creds: Option<(&str, &str)>) -> Result<Client, String> {
    let opts = ConnectOptions {
        request_timeout: Some(Duration::from_secs(10)),
        credentials: creds.map(|(u, p)| Credentials {
            user: u.into(),
            password: p.into(),
        }),
        ..Default::default()
    };
    Client::connect(&[endpoint.to_string()], &opts)
        .await
        .map_err(|e| e.to_string())
}

/// root (with the root role), role `app` with readwrite on the prefix `/app/`, user `alice`
/// holding `app`; auth enabled.
async fn set_up_auth(c: &Client) {
    let mut auth = c.auth();
    for (name, pw) in [("root", "rootpw"), ("alice", "alicepw")] {
        auth.user_add(AuthUserAddRequest {
            name: name.into(),
            password: pw.into(),
            ..Default::default()
        })
        .await
        .expect("user add");
    }
    for role in ["root", "app"] {
        auth.role_add(AuthRoleAddRequest { name: role.into() })
            .await
            .expect("role add");
    }
    auth.role_grant_permission(AuthRoleGrantPermissionRequest {
        name: "app".into(),
        perm: Some(Permission {
            perm_type: 2,
            key: b"/app/".to_vec(),
            range_end: b"/app0".to_vec(),
        }),
    })
    .await
    .expect("grant permission");
    for (user, role) in [("root", "root"), ("alice", "app")] {
        auth.user_grant_role(AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        })
        .await
        .expect("grant role");
    }
    auth.auth_enable(AuthEnableRequest {})
        .await
        .expect("auth enable");
}

fn clone_request<T: Clone>(r: &tonic::Request<T>) -> tonic::Request<T> {
    let mut out = tonic::Request::new(r.get_ref().clone());
    *out.metadata_mut() = r.metadata().clone();
    out
}

async fn get(c: &Client, key: &str) -> Result<RangeResponse, tonic::Status> {
    c.kv()
        .range(RangeRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn put(c: &Client, key: &str, value: &str) -> Result<PutResponse, tonic::Status> {
    c.kv()
        .put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

fn assert_status(r: Result<impl std::fmt::Debug, tonic::Status>, code: tonic::Code, msg: &str) {
    let s = r.expect_err("the request should be refused");
    assert_eq!((s.code(), s.message()), (code, msg), "{s:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_expires_after_ttl_without_use() {
    let cluster = Cluster::start_with(1, &["--auth-token-ttl", "2"]).await;
    let ep = cluster.members[0].endpoint();
    set_up_auth(&connect(&ep, None).await.unwrap()).await;
    let alice = connect(&ep, Some(("alice", "alicepw"))).await.unwrap();
    put(&alice, "/app/a", "1")
        .await
        .expect("put with a fresh token");
    // Used every second, the token outlives its 2s TTL: each use restarts the clock.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        get(&alice, "/app/a").await.expect("token refreshed by use");
    }
    // Idle for longer than the TTL: gone.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert_status(
        get(&alice, "/app/a").await,
        tonic::Code::Unauthenticated,
        "etcdserver: invalid auth token",
    );
    // Authenticating again gives a working token.
    let again = connect(&ep, Some(("alice", "alicepw"))).await.unwrap();
    get(&again, "/app/a").await.expect("new token");
    // A bad password and an unknown user get etcd's answer.
    for (u, p) in [("alice", "wrong"), ("nobody", "x")] {
        let err = connect(&ep, Some((u, p))).await.unwrap_err();
        assert_eq!(
            err,
            "etcdserver: authentication failed, invalid user ID or password"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn root_only_operations_are_refused_to_others() {
    let cluster = Cluster::start(1).await;
    let ep = cluster.members[0].endpoint();
    set_up_auth(&connect(&ep, None).await.unwrap()).await;
    let alice = connect(&ep, Some(("alice", "alicepw"))).await.unwrap();
    let anon = connect(&ep, None).await.unwrap();
    let root = connect(&ep, Some(("root", "rootpw"))).await.unwrap();
    const DENIED: &str = "etcdserver: permission denied";
    const EMPTY: &str = "etcdserver: user name is empty";
    use tonic::Code::{InvalidArgument, PermissionDenied};

    // Keys: alice may use /app/ only; nobody without credentials.
    put(&alice, "/app/x", "1")
        .await
        .expect("alice writes her prefix");
    assert_status(put(&alice, "/other", "1").await, PermissionDenied, DENIED);
    assert_status(get(&alice, "/other").await, PermissionDenied, DENIED);
    assert_status(get(&anon, "/app/x").await, InvalidArgument, EMPTY);
    put(&root, "/other", "1")
        .await
        .expect("root writes anywhere");

    // Admin RPCs.
    let mut m = alice.maintenance();
    assert_status(
        m.defragment(DefragmentRequest {}).await,
        PermissionDenied,
        DENIED,
    );
    assert_status(
        m.hash_kv(HashKvRequest { revision: 0 }).await,
        PermissionDenied,
        DENIED,
    );
    assert_status(m.hash(HashRequest {}).await, PermissionDenied, DENIED);
    assert_status(
        m.move_leader(MoveLeaderRequest { target_id: 1 }).await,
        PermissionDenied,
        DENIED,
    );
    assert_status(
        m.alarm(AlarmRequest::default()).await,
        PermissionDenied,
        DENIED,
    );
    let snap = m.snapshot(SnapshotRequest {}).await;
    assert_status(snap.map(|_| ()), PermissionDenied, DENIED);
    m.status(StatusRequest {})
        .await
        .expect("status is for everyone");
    assert_status(
        alice
            .cluster()
            .member_add(MemberAddRequest {
                peer_ur_ls: vec!["http://127.0.0.1:1".into()],
                is_learner: true,
            })
            .await,
        PermissionDenied,
        DENIED,
    );
    alice
        .cluster()
        .member_list(MemberListRequest::default())
        .await
        .expect("member list is for everyone");
    let mut a = alice.auth();
    assert_status(
        a.user_list(AuthUserListRequest {}).await,
        PermissionDenied,
        DENIED,
    );
    assert_status(
        a.role_add(AuthRoleAddRequest { name: "x".into() }).await,
        PermissionDenied,
        DENIED,
    );
    assert_status(
        a.auth_disable(AuthDisableRequest {}).await,
        PermissionDenied,
        DENIED,
    );
    assert_status(
        anon.auth().auth_disable(AuthDisableRequest {}).await,
        InvalidArgument,
        EMPTY,
    );
    root.maintenance()
        .hash_kv(HashKvRequest { revision: 0 })
        .await
        .expect("root may hash");
    let status = root
        .auth()
        .auth_status(AuthStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.enabled);
    assert!(status.auth_revision > 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_on_a_forbidden_range_is_refused() {
    let cluster = Cluster::start(1).await;
    let ep = cluster.members[0].endpoint();
    set_up_auth(&connect(&ep, None).await.unwrap()).await;
    let alice = connect(&ep, Some(("alice", "alicepw"))).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = alice
        .watch()
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("open watch stream")
        .into_inner();
    let create = |key: &str, end: &str| WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.into(),
            range_end: end.into(),
            ..Default::default()
        })),
    };
    // A range wider than the granted prefix is refused; the stream stays usable.
    tx.send(create("/app/", "/app1")).await.unwrap();
    let refused = stream.message().await.unwrap().expect("a response");
    assert!(refused.created && refused.canceled, "{refused:?}");
    assert_eq!(
        refused.cancel_reason,
        "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
    );
    tx.send(create("/app/", "/app0")).await.unwrap();
    let ok = stream.message().await.unwrap().expect("a response");
    assert!(ok.created && !ok.canceled, "{ok:?}");
    put(&alice, "/app/w", "1").await.unwrap();
    let event = stream.message().await.unwrap().expect("an event");
    assert_eq!(event.events.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_survives_leader_kill_and_whole_cluster_restart() {
    let mut cluster = Cluster::start(3).await;
    let eps = cluster.endpoints();
    set_up_auth(&connect(&eps[0], None).await.unwrap()).await;
    // A token issued by one member works on every member (Authenticate goes through Raft).
    let anon1 = connect(&eps[1], None).await.unwrap();
    let token = anon1
        .auth()
        .authenticate(AuthenticateRequest {
            name: "alice".into(),
            password: "alicepw".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    for ep in &eps {
        let c = connect(ep, None).await.unwrap();
        let mut req = tonic::Request::new(PutRequest {
            key: "/app/k".into(),
            value: "v1".into(),
            ..Default::default()
        });
        req.metadata_mut().insert("token", token.parse().unwrap());
        // The member may apply the Authenticate entry a moment after the issuing one did.
        eventually(WAIT, "the token to be known on every member", || {
            let (mut kv, req) = (c.kv(), clone_request(&req));
            async move { kv.put(req).await.ok() }
        })
        .await;
    }

    let leader = cluster.wait_leader(WAIT).await;
    cluster.members[leader].kill9();
    cluster.wait_leader(WAIT).await;
    let survivor = (0..3).find(|i| *i != leader).unwrap();
    let ep = cluster.members[survivor].endpoint();
    let alice = eventually(WAIT, "alice authenticates after the leader died", || {
        let ep = ep.clone();
        async move { connect(&ep, Some(("alice", "alicepw"))).await.ok() }
    })
    .await;
    put(&alice, "/app/k", "v2")
        .await
        .expect("alice writes after failover");
    assert_status(
        put(&alice, "/other", "x").await,
        tonic::Code::PermissionDenied,
        "etcdserver: permission denied",
    );
    let anon = connect(&ep, None).await.unwrap();
    assert_status(
        get(&anon, "/app/k").await,
        tonic::Code::InvalidArgument,
        "etcdserver: user name is empty",
    );

    // Whole cluster down and up again: users, roles, permissions and the flag are on disk.
    for m in &mut cluster.members {
        m.stop();
    }
    for m in &mut cluster.members {
        m.start();
    }
    cluster.wait_leader(WAIT).await;
    for ep in cluster.endpoints() {
        let alice = eventually(WAIT, "alice authenticates after the restart", || {
            let ep = ep.clone();
            async move { connect(&ep, Some(("alice", "alicepw"))).await.ok() }
        })
        .await;
        let got = get(&alice, "/app/k").await.expect("alice reads");
        assert_eq!(got.kvs[0].value, b"v2");
        assert_status(
            get(&alice, "/other").await,
            tonic::Code::PermissionDenied,
            "etcdserver: permission denied",
        );
        let anon = connect(&ep, None).await.unwrap();
        assert_status(
            get(&anon, "/app/k").await,
            tonic::Code::InvalidArgument,
            "etcdserver: user name is empty",
        );
    }
}

fn cairn(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(support::cairn_bin())
        .args(args)
        .output()
        .expect("run cairn");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Kills the restored member on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_restores_with_its_users_and_permissions() {
    let cluster = Cluster::start(1).await;
    let ep = cluster.members[0].endpoint();
    set_up_auth(&connect(&ep, None).await.unwrap()).await;
    let alice = connect(&ep, Some(("alice", "alicepw"))).await.unwrap();
    put(&alice, "/app/k", "before backup").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db").display().to_string();
    let host = ep.trim_start_matches("http://");

    // Snapshot is root-only; the CLI's token also rides on the Snapshot stream.
    let (ok, _, err) = cairn(&[
        "--endpoints",
        host,
        "--user",
        "alice:alicepw",
        "snapshot",
        "save",
        &file,
    ]);
    assert!(
        !ok && err.contains("etcdserver: permission denied"),
        "{err}"
    );
    let (ok, out, err) = cairn(&[
        "--endpoints",
        host,
        "--user",
        "root:rootpw",
        "snapshot",
        "save",
        &file,
    ]);
    assert!(ok, "snapshot save: {out} {err}");

    let (client_port, peer_port) = (support::free_port(), support::free_port());
    let peer = format!("http://127.0.0.1:{peer_port}");
    let client = format!("http://127.0.0.1:{client_port}");
    let initial = format!("r0={peer}");
    let data = dir.path().join("r0").display().to_string();
    let (ok, out, err) = cairn(&[
        "snapshot",
        "restore",
        &file,
        "--data-dir",
        &data,
        "--name",
        "r0",
        "--initial-cluster",
        &initial,
        "--initial-advertise-peer-urls",
        &peer,
    ]);
    assert!(ok, "restore: {out} {err}");
    let _restored = Child(
        std::process::Command::new(support::cairn_bin())
            .args([
                "serve",
                "--name",
                "r0",
                "--data-dir",
                &data,
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &initial,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn restored member"),
    );
    let alice = eventually(WAIT, "alice authenticates on the restored member", || {
        let client = client.clone();
        async move { connect(&client, Some(("alice", "alicepw"))).await.ok() }
    })
    .await;
    let got = get(&alice, "/app/k")
        .await
        .expect("alice reads after restore");
    assert_eq!(got.kvs[0].value, b"before backup");
    assert_status(
        put(&alice, "/other", "x").await,
        tonic::Code::PermissionDenied,
        "etcdserver: permission denied",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_header_and_recipes_are_authorized() {
    let cluster = Cluster::start(1).await;
    let ep = cluster.members[0].endpoint();
    set_up_auth(&connect(&ep, None).await.unwrap()).await;
    let anon = connect(&ep, None).await.unwrap();
    let token = anon
        .auth()
        .authenticate(AuthenticateRequest {
            name: "alice".into(),
            password: "alicepw".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    // The JSON gateway forwards the HTTP Authorization header as `authorization` metadata.
    let mut req = tonic::Request::new(PutRequest {
        key: "/app/gw".into(),
        value: "1".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", token.parse().unwrap());
    anon.kv().put(req).await.expect("token in `authorization`");
    let mut req = tonic::Request::new(RangeRequest {
        key: "/app/gw".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("token", "not-a-token".parse().unwrap());
    assert_status(
        anon.kv().range(req).await,
        tonic::Code::Unauthenticated,
        "etcdserver: invalid auth token",
    );

    // Lock runs server-side as alice: allowed under her prefix, refused elsewhere. etcd's v3lock
    // relays its inner client's errors with code Unknown (see api/concurrency.rs::passthrough).
    use cairn_store::proto::v3lockpb::{lock_client::LockClient, LockRequest, UnlockRequest};
    let alice = connect(&ep, Some(("alice", "alicepw"))).await.unwrap();
    let lease = alice
        .lease()
        .lease_grant(LeaseGrantRequest { ttl: 10, id: 0 })
        .await
        .unwrap()
        .into_inner()
        .id;
    let mut lock = LockClient::new(alice.channel());
    let held = lock
        .lock(LockRequest {
            name: b"/app/mutex".to_vec(),
            lease,
        })
        .await
        .expect("lock under /app/")
        .into_inner();
    assert_status(
        lock.lock(LockRequest {
            name: b"/elsewhere".to_vec(),
            lease,
        })
        .await,
        tonic::Code::Unknown,
        "etcdserver: permission denied",
    );
    lock.unlock(UnlockRequest { key: held.key })
        .await
        .expect("unlock");
    assert_status(
        lock.unlock(UnlockRequest {
            key: b"/elsewhere/1".to_vec(),
        })
        .await,
        tonic::Code::Unknown,
        "etcdserver: permission denied",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_etcd_client_crate_authenticates_as_with_etcd() {
    let cluster = Cluster::start(1).await;
    let ep = cluster.members[0].endpoint();
    set_up_auth(&connect(&ep, None).await.unwrap()).await;
    let opts = etcd_client::ConnectOptions::new()
        .with_user("alice", "alicepw")
        .with_timeout(Duration::from_secs(10));
    let mut c = etcd_client::Client::connect([ep.as_str()], Some(opts))
        .await
        .expect("connect with a user");
    c.put("/app/crate", "v", None)
        .await
        .expect("put under /app/");
    let got = c.get("/app/crate", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"v");
    let err = c.put("/other", "v", None).await.unwrap_err();
    assert!(
        err.to_string().contains("etcdserver: permission denied"),
        "{err}"
    );
    let bad = etcd_client::ConnectOptions::new().with_user("alice", "nope");
    let err = etcd_client::Client::connect([ep.as_str()], Some(bad))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("etcdserver: authentication failed, invalid user ID or password"),
        "{err}"
    );
}
