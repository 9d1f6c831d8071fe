//! TLS everywhere: a cluster of real processes with TLS on client and peer URLs and client
//! certificate authentication on both, driven by Debian's etcdctl and cairn's own client;
//! plaintext clients, clients and peers with certificates from another CA rejected while the
//! cluster keeps serving; leaf rotation and a full CA rollover under a continuous writer with zero
//! failed requests. Certificates are made at test time with rcgen.

#[path = "../support/mod.rs"]
mod support;

mod cert_user;
mod clients;
mod pki;
mod rotation;
mod vs_etcd;

use std::time::Duration;

use cairn_store::client::{Client, ClientTls};
use cairn_store::proto::etcdserverpb::{MemberAddRequest, MemberPromoteRequest, RangeRequest};
use clients::*;
use pki::*;
use support::{eventually, free_port};

/// Debian's etcdctl with --cacert/--cert/--key against a 3-member TLS cluster of real
/// processes (client and peer TLS, certificate authentication on both), and cairn's CLI with the
/// same flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_with_certificates_against_a_tls_cluster() {
    let ca = new_ca("cairn-test-ca");
    let pki = pki_with(&ca);
    let mut cluster = tls_cluster(3, &pki);
    for m in &mut cluster.members {
        m.start();
    }
    wait_leader(&cluster, &[0, 1, 2], &pki.client_tls()).await;

    let mut flags = pki.ctl_flags();
    let ctl = |endpoint: &str, args: &[&str], flags: &[String]| {
        let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        support::etcdctl(endpoint, &all, None)
    };
    if support::have_etcdctl() {
        let ep0 = host_port(cluster.members[0].client_port);
        let (ok, out, err) = ctl(&ep0, &["put", "tls-key", "over-tls"], &flags);
        assert!(
            ok,
            "etcdctl put over TLS: {out} {err}\n{}",
            cluster.dump_logs()
        );
        assert_eq!(out, "OK\n");
        // Read back through another member, with an https:// endpoint this time.
        let ep1 = cluster.members[1].endpoint();
        let (ok, out, err) = ctl(&ep1, &["get", "tls-key"], &flags);
        assert!(ok, "etcdctl get over TLS: {err}");
        assert_eq!(out, "tls-key\nover-tls\n");
        let all = cluster
            .members
            .iter()
            .map(|m| host_port(m.client_port))
            .collect::<Vec<_>>()
            .join(",");
        let (ok, out, err) = ctl(&all, &["endpoint", "status", "-w", "json"], &flags);
        assert!(ok, "etcdctl endpoint status over TLS: {err}");
        assert_eq!(out.matches("\"leader\":").count(), 3, "{out}");
        let (ok, out, err) = ctl(&all, &["endpoint", "health"], &flags);
        assert!(ok, "etcdctl endpoint health over TLS: {out} {err}");
        // --insecure-skip-tls-verify instead of --cacert: still needs the client certificate.
        flags.splice(0..2, ["--insecure-skip-tls-verify".to_string()]);
        let (ok, out, err) = ctl(&ep0, &["get", "tls-key", "--print-value-only"], &flags);
        assert!(ok, "etcdctl --insecure-skip-tls-verify: {err}");
        assert_eq!(out, "over-tls\n");
    } else {
        eprintln!("SKIP etcdctl part: no etcdctl installed");
    }

    // cairn's own CLI, same flags.
    let out = std::process::Command::new(support::cairn_bin())
        .args(["--endpoints", &host_port(cluster.members[2].client_port)])
        .args(pki.ctl_flags())
        .args(["put", "cairn-cli", "too"])
        .output()
        .expect("run cairn put");
    assert!(out.status.success(), "cairn put over TLS: {out:?}");
    let out = std::process::Command::new(support::cairn_bin())
        .args(["--endpoints", &cluster.members[0].endpoint()])
        .args(pki.ctl_flags())
        .args(["get", "cairn-cli"])
        .output()
        .expect("run cairn get");
    assert!(out.status.success(), "cairn get over TLS: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cairn-cli\ntoo\n");
    // A raw TLS session with the client identity gets an HTTP/2 answer on the client port.
    let served = probe(
        cluster.members[0].client_port,
        &pki.path("ca.pem"),
        Some((pki.path("client.pem"), pki.path("client-key.pem"))),
    )
    .await;
    assert!(served.is_ok(), "{served:?}");
    // /health over HTTPS/1.1 on the client port, as etcd serves it.
    let health = https_get(cluster.members[0].client_port, &pki, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        health.contains(r#"{"health":"true","reason":""}"#),
        "{health}"
    );
}

/// Plaintext clients, clients without or with another CA's certificate, and a member whose peer
/// certificate comes from another CA are all turned away; the others keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_clients_and_peers_are_rejected_and_the_cluster_keeps_serving() {
    let ca = new_ca("cairn-test-ca");
    let other = new_ca("someone-else");
    let pki = pki_with(&ca);
    pki.set_leaf("intruder", &leaf(&other, "root", 900));
    pki.set_leaf("bad-peer", &leaf(&other, "peer", 901));
    let mut cluster = tls_cluster(3, &pki);
    // m2 presents a peer certificate the others do not trust.
    let bad = pki.path("bad-peer.pem").display().to_string();
    let bad_key = pki.path("bad-peer-key.pem").display().to_string();
    for v in cluster.members[2].extra.iter_mut() {
        if v.ends_with("/peer.pem") {
            *v = bad.clone();
        } else if v.ends_with("/peer-key.pem") {
            *v = bad_key.clone();
        }
    }
    for m in &mut cluster.members {
        m.start();
    }
    let tls = pki.client_tls();
    wait_leader(&cluster, &[0, 1], &tls).await;
    let ep0 = cluster.members[0].endpoint();
    let ep2 = cluster.members[2].endpoint();
    let keeps_serving = |n: u32| {
        let ep0 = ep0.clone();
        let tls = tls.clone();
        async move {
            put(&ep0, &tls, "still", &format!("serving-{n}"))
                .await
                .expect("the trusted members keep serving");
        }
    };
    keeps_serving(0).await;

    // An unmodified plaintext client against the TLS port.
    let plain = etcd_client::Client::connect(
        [format!(
            "http://127.0.0.1:{}",
            cluster.members[0].client_port
        )],
        Some(
            etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(2)),
        ),
    )
    .await;
    if let Ok(mut c) = plain {
        assert!(
            c.put("plain", "text", None).await.is_err(),
            "a plaintext put succeeded"
        );
    }
    keeps_serving(1).await;

    // Clients with another CA's certificate, and with none at all.
    let intruder = ClientTls {
        cert_file: Some(pki.path("intruder.pem")),
        key_file: Some(pki.path("intruder-key.pem")),
        ..tls.clone()
    };
    let err = put(&ep0, &intruder, "intruder", "x").await;
    assert!(err.is_err(), "another CA's client certificate was accepted");
    let anonymous = ClientTls {
        cert_file: None,
        key_file: None,
        ..tls.clone()
    };
    assert!(put(&ep0, &anonymous, "anonymous", "x").await.is_err());
    // And a client that does not trust the server's CA refuses the server.
    let distrustful = ClientTls {
        ca_file: Some(pki.path("other-ca.pem")),
        ..tls.clone()
    };
    std::fs::write(pki.path("other-ca.pem"), &other.pem).expect("write other ca");
    assert!(put(&ep0, &distrustful, "distrust", "x").await.is_err());
    keeps_serving(2).await;

    if support::have_etcdctl() {
        let port = host_port(cluster.members[0].client_port);
        let (ok, _, _) = support::etcdctl(&port, &["get", "still"], None);
        assert!(!ok, "plaintext etcdctl was served");
        let f = |c: &str, k: &str| {
            vec![
                "--cacert".to_string(),
                pki.flag("ca.pem"),
                "--cert".into(),
                pki.flag(c),
                "--key".into(),
                pki.flag(k),
                "--dial-timeout".into(),
                "2s".into(),
                "get".into(),
                "still".into(),
            ]
        };
        let args = f("intruder.pem", "intruder-key.pem");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, _) = support::etcdctl(&port, &args, None);
        assert!(!ok, "etcdctl with another CA's certificate was served");
        let args = f("client.pem", "client-key.pem");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = support::etcdctl(&port, &args, None);
        assert!(ok, "{err}");
        assert!(out.starts_with("still\nserving-"), "{out}");
    }

    // The peer port: only certificates from the peer CA get through.
    let peer_port = cluster.members[0].peer_port;
    let ca_pem = pki.path("ca.pem");
    assert!(probe(
        peer_port,
        &ca_pem,
        Some((pki.path("peer.pem"), pki.path("peer-key.pem")))
    )
    .await
    .is_ok());
    assert!(probe(
        peer_port,
        &ca_pem,
        Some((pki.path("bad-peer.pem"), pki.path("bad-peer-key.pem")))
    )
    .await
    .is_err());
    assert!(probe(peer_port, &ca_pem, None).await.is_err());

    // m2 never joins: the others refuse its certificate and it cannot verify theirs.
    for n in 3..13 {
        keeps_serving(n).await;
    }
    let m2 = status(&ep2, &tls).await;
    assert!(
        matches!(m2, Some((_, 0)) | None),
        "the member with an untrusted peer certificate found a leader: {m2:?}"
    );
    let client = Client::connect(std::slice::from_ref(&ep0), &tls_options(tls.clone()))
        .await
        .expect("connect");
    let got = client
        .kv()
        .range(RangeRequest {
            key: b"still".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(got.kvs[0].value, b"serving-12");
}

/// `member add --learner` with an https peer URL, then the new member joins over TLS peer
/// connections (`--initial-cluster-state existing`: it asks the others who it is, then catches
/// up), is promoted, and takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joins_a_tls_cluster() {
    let ca = new_ca("cairn-test-ca");
    let pki = pki_with(&ca);
    let mut cluster = tls_cluster(1, &pki);
    cluster.members[0].start();
    let tls = pki.client_tls();
    wait_leader(&cluster, &[0], &tls).await;
    let ep0 = cluster.members[0].endpoint();
    put(&ep0, &tls, "before-join", "1").await.expect("put");

    let (cp, pp) = (free_port(), free_port());
    let peer_url = format!("https://127.0.0.1:{pp}");
    let client = Client::connect(std::slice::from_ref(&ep0), &tls_options(tls.clone()))
        .await
        .expect("connect");
    let added = client
        .cluster()
        .member_add(MemberAddRequest {
            peer_ur_ls: vec![peer_url.clone()],
            // A one-member cluster takes a second voter only as a learner first (etcd's rule).
            is_learner: true,
        })
        .await
        .expect("member add")
        .into_inner();
    let new_id = added.member.as_ref().expect("added member").id;
    let initial = added
        .members
        .iter()
        .flat_map(|m| {
            let name = if m.id == new_id {
                "m1"
            } else {
                m.name.as_str()
            };
            m.peer_ur_ls.iter().map(move |u| format!("{name}={u}"))
        })
        .collect::<Vec<_>>()
        .join(",");
    let mut joiner = cluster.joining_member("m1", cp, pp, initial);
    joiner.client_scheme = "https";
    joiner.peer_scheme = "https";
    joiner.extra.extend(pki.serve_flags());
    joiner.start();
    cluster.members.push(joiner);
    serves_key(&cluster.members[1].endpoint(), &tls, "before-join").await;
    eventually(Duration::from_secs(30), "the learner's promotion", || {
        let client = client.clone();
        async move {
            client
                .cluster()
                .member_promote(MemberPromoteRequest { id: new_id })
                .await
                .ok()
        }
    })
    .await;
    wait_leader(&cluster, &[0, 1], &tls).await;
    put(&cluster.members[1].endpoint(), &tls, "after-join", "2")
        .await
        .expect("put through the new member");
    serves_key(&ep0, &tls, "after-join").await;
}
