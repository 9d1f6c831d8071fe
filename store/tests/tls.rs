//! TLS everywhere: a cluster of real processes with TLS on client and peer URLs and client
//! certificate authentication on both, driven by Debian's etcdctl and cairn's own client;
//! plaintext clients, clients and peers with certificates from another CA rejected while the
//! cluster keeps serving; leaf rotation and a full CA rollover under a continuous writer with zero
//! failed requests. Certificates are made at test time with rcgen.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_store::client::{Client, ClientTls, ConnectOptions};
use cairn_store::proto::etcdserverpb::{
    MemberAddRequest, MemberPromoteRequest, PutRequest, RangeRequest, StatusRequest,
};
use cairn_store::tls::{Material, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::ServerName;
use support::{eventually, free_port, Cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---- certificates ----

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("ca key");
    let cert = params.self_signed(&key).expect("self-sign ca");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf usable as server and client certificate (etcd's peer certificates are both), valid
/// for 127.0.0.1 and localhost.
#[derive(Clone)]
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn leaf(ca: &Ca, common_name: &str, serial: u64) -> Leaf {
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.serial_number = Some(SerialNumber::from(serial));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, &ca.issuer).expect("sign leaf");
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// Replaces a file the way Kubernetes updates a mounted Secret: write aside, rename over.
fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write pem");
    std::fs::rename(&tmp, path).expect("rename pem");
}

/// The files every member and the test's clients read: one directory, rewritten in place.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            dir: tempfile::tempdir().expect("pki dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn set_ca(&self, cas: &[&Ca]) {
        let bundle: String = cas.iter().map(|c| c.pem.clone()).collect();
        write_atomic(&self.path("ca.pem"), &bundle);
    }

    /// Writes `role.pem` and `role-key.pem` (role: server, peer, client, or a probe's name).
    fn set_leaf(&self, role: &str, l: &Leaf) {
        write_atomic(&self.path(&format!("{role}.pem")), &l.cert_pem);
        write_atomic(&self.path(&format!("{role}-key.pem")), &l.key_pem);
    }

    fn flag(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `serve` flags: TLS and certificate authentication on client and peer URLs.
    fn serve_flags(&self) -> Vec<String> {
        vec![
            "--cert-file".into(),
            self.flag("server.pem"),
            "--key-file".into(),
            self.flag("server-key.pem"),
            "--trusted-ca-file".into(),
            self.flag("ca.pem"),
            "--client-cert-auth".into(),
            "--peer-cert-file".into(),
            self.flag("peer.pem"),
            "--peer-key-file".into(),
            self.flag("peer-key.pem"),
            "--peer-trusted-ca-file".into(),
            self.flag("ca.pem"),
            "--peer-client-cert-auth".into(),
        ]
    }

    fn client_tls(&self) -> ClientTls {
        ClientTls {
            ca_file: Some(self.path("ca.pem")),
            cert_file: Some(self.path("client.pem")),
            key_file: Some(self.path("client-key.pem")),
            insecure_skip_verify: false,
        }
    }

    /// etcdctl's (and cairn's) global TLS flags for the client identity.
    fn ctl_flags(&self) -> Vec<String> {
        vec![
            "--cacert".into(),
            self.flag("ca.pem"),
            "--cert".into(),
            self.flag("client.pem"),
            "--key".into(),
            self.flag("client-key.pem"),
        ]
    }
}

/// A fresh PKI: CA `ca`, and server, peer and client ("root") leaves signed by it.
fn pki_with(ca: &Ca) -> Pki {
    let pki = Pki::new();
    pki.set_ca(&[ca]);
    pki.set_leaf("server", &leaf(ca, "server", 100));
    pki.set_leaf("peer", &leaf(ca, "peer", 101));
    pki.set_leaf("client", &leaf(ca, "root", 102));
    pki
}

// ---- clients ----

fn tls_options(tls: ClientTls) -> ConnectOptions {
    ConnectOptions {
        dial_timeout: Duration::from_secs(2),
        request_timeout: Some(Duration::from_secs(5)),
        tls: Some(tls),
    }
}

async fn status(endpoint: &str, tls: &ClientTls) -> Option<(u64, u64)> {
    let client = Client::connect(&[endpoint.to_string()], &tls_options(tls.clone()))
        .await
        .ok()?;
    let s = client
        .maintenance()
        .status(StatusRequest {})
        .await
        .ok()?
        .into_inner();
    Some((s.header?.member_id, s.leader))
}

/// Waits until the members at `idx` agree on a leader, over TLS; returns the leader's index.
async fn wait_leader(cluster: &Cluster, idx: &[usize], tls: &ClientTls) -> usize {
    eventually(
        Duration::from_secs(30),
        "a leader the TLS members agree on",
        || async {
            let mut leader = None;
            let mut leader_idx = None;
            for &i in idx {
                let (me, l) = status(&cluster.members[i].endpoint(), tls).await?;
                if l == 0 || leader.is_some_and(|x| x != l) {
                    return None;
                }
                leader = Some(l);
                if me == l {
                    leader_idx = Some(i);
                }
            }
            leader_idx
        },
    )
    .await
}

async fn put(endpoint: &str, tls: &ClientTls, key: &str, value: &str) -> Result<(), String> {
    let client = Client::connect(&[endpoint.to_string()], &tls_options(tls.clone()))
        .await
        .map_err(|e| e.to_string())?;
    client
        .kv()
        .put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Opens a TLS session to `port` trusting `ca`, presenting `identity` (cert, key) if given, and
/// sends HTTP/2's preface. Ok(the server's leaf, DER) when the server took the session and
/// answered; Err when the handshake failed or the server dropped us (a rejected client
/// certificate shows only after the handshake under TLS 1.3).
async fn probe(
    port: u16,
    ca: &Path,
    identity: Option<(PathBuf, PathBuf)>,
) -> Result<Vec<u8>, String> {
    let (cert, key) = identity.unzip();
    let files = TlsFiles {
        cert,
        key,
        trusted_ca: Some(ca.to_path_buf()),
        client_cert_auth: false,
    };
    let material = Material::read(&files).map_err(|e| e.to_string())?;
    let config =
        cairn_store::tls::client_config(&files, &material, false).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no server certificate")?;
    // Preface, then an empty SETTINGS frame; a server that accepted us answers with its SETTINGS.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    tls.write_all(&hello).await.map_err(|e| e.to_string())?;
    tls.flush().await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 9];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Ok(leaf),
        Ok(Ok(_)) => Err("server closed the session".into()),
        Ok(Err(e)) => Err(format!("rejected: {e}")),
        Err(_) => Err("no answer".into()),
    }
}

/// GET `path` over HTTPS/1.1 (ALPN http/1.1) with the client identity; the raw response.
async fn https_get(port: u16, pki: &Pki, path: &str) -> String {
    let files = TlsFiles {
        cert: Some(pki.path("client.pem")),
        key: Some(pki.path("client-key.pem")),
        trusted_ca: Some(pki.path("ca.pem")),
        client_cert_auth: false,
    };
    let material = Material::read(&files).expect("read pki");
    let mut config = cairn_store::tls::client_config(&files, &material, false).expect("config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.expect("send request");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn tls_cluster(n: usize, pki: &Pki) -> Cluster {
    let flags = pki.serve_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Cluster::prepare(n, ("https", "https"), &flags)
}

fn host_port(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

// ---- tests ----

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

/// Waits until the member at `endpoint` serves `key` from its own state.
async fn serves_key(endpoint: &str, tls: &ClientTls, key: &str) {
    eventually(
        Duration::from_secs(30),
        &format!("{endpoint} to serve {key}"),
        || async {
            let client = Client::connect(&[endpoint.to_string()], &tls_options(tls.clone()))
                .await
                .ok()?;
            let r = client
                .kv()
                .range(RangeRequest {
                    key: key.as_bytes().to_vec(),
                    serializable: true,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            (r.count == 1).then_some(())
        },
    )
    .await;
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

/// Counts of a continuous writer that opens a new TLS connection (re-reading the client
/// certificate files) every few requests.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    connections: AtomicU64,
    stop: AtomicBool,
    errors: std::sync::Mutex<Vec<String>>,
}

const PUTS_PER_CONNECTION: u64 = 5;

async fn write_continuously(
    load: Arc<Load>,
    endpoints: Vec<String>,
    tls: ClientTls,
    files: Arc<tokio::sync::Mutex<()>>,
) {
    let fail = |e: String| {
        load.failed.fetch_add(1, Ordering::SeqCst);
        load.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    };
    let mut n = 0u64;
    while !load.stop.load(Ordering::SeqCst) {
        let ep = endpoints[(n / PUTS_PER_CONNECTION) as usize % endpoints.len()].clone();
        // Never read a certificate and a key from two different rotations.
        let client = {
            let _files = files.lock().await;
            Client::connect(std::slice::from_ref(&ep), &tls_options(tls.clone())).await
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                fail(format!("connect {ep}: {e}"));
                n += PUTS_PER_CONNECTION;
                continue;
            }
        };
        load.connections.fetch_add(1, Ordering::SeqCst);
        for _ in 0..PUTS_PER_CONNECTION {
            let r = client
                .kv()
                .put(PutRequest {
                    key: format!("load/{}", n % 100).into_bytes(),
                    value: n.to_string().into_bytes(),
                    ..Default::default()
                })
                .await;
            match r {
                Ok(_) => {
                    load.ok.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => fail(format!("put via {ep}: {e}")),
            }
            n += 1;
        }
    }
}

/// Leaf rotation, then a CA rollover (bundle old+new CA, switch leaves, drop the old CA), on
/// every member's client and peer side during a continuous writer: zero failed requests, new
/// connections see each new certificate, the old CA is refused at the end, and a restarted
/// member rejoins over peer connections made with the new certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_and_ca_rollover_under_load() {
    let ca1 = new_ca("cairn-ca-1");
    let pki = pki_with(&ca1);
    let mut cluster = tls_cluster(3, &pki);
    for m in &mut cluster.members {
        m.start();
    }
    let tls = pki.client_tls();
    let leader = wait_leader(&cluster, &[0, 1, 2], &tls).await;
    // The member restarted at the end is a follower; the writer uses the other two.
    let restarted = (leader + 1) % 3;
    let writer_endpoints: Vec<String> = (0..3)
        .filter(|i| *i != restarted)
        .map(|i| cluster.members[i].endpoint())
        .collect();
    let client_ports: Vec<u16> = cluster.members.iter().map(|m| m.client_port).collect();
    let peer_ports: Vec<u16> = cluster.members.iter().map(|m| m.peer_port).collect();
    let ca_pem = pki.path("ca.pem");

    let files = Arc::new(tokio::sync::Mutex::new(()));
    let load = Arc::new(Load::default());
    let writer = tokio::spawn(write_continuously(
        load.clone(),
        writer_endpoints,
        tls.clone(),
        files.clone(),
    ));
    let started = Instant::now();
    // One connection made with the first certificates and kept to the end: established
    // sessions carry on through every step (its config can never reconnect after the old CA
    // is dropped, so a put at the end proves the session itself survived).
    let long_lived = Client::connect(
        std::slice::from_ref(&cluster.members[leader].endpoint()),
        &tls_options(tls.clone()),
    )
    .await
    .expect("long-lived connection");
    let long_put = |n: u32| {
        let c = long_lived.clone();
        async move {
            c.kv()
                .put(PutRequest {
                    key: b"long-lived".to_vec(),
                    value: n.to_string().into_bytes(),
                    ..Default::default()
                })
                .await
                .map(|_| ())
        }
    };
    long_put(0).await.expect("put on the long-lived connection");
    let progressed = |since: u64| {
        let load = load.clone();
        async move {
            eventually(
                Duration::from_secs(20),
                "the writer to make progress",
                || {
                    let load = load.clone();
                    async move { (load.ok.load(Ordering::SeqCst) >= since + 20).then_some(()) }
                },
            )
            .await
        }
    };
    progressed(0).await;

    // Every port presents `want` to new connections (trusting the current bundle).
    let presents = |ports: Vec<u16>, role: &'static str, want: Vec<u8>| {
        let ca_pem = ca_pem.clone();
        let pki_dir = pki.dir.path().to_path_buf();
        async move {
            let what = format!("every {role} port to present the new certificate");
            eventually(Duration::from_secs(15), &what, || {
                let (ports, want, ca_pem, pki_dir) =
                    (ports.clone(), want.clone(), ca_pem.clone(), pki_dir.clone());
                async move {
                    for p in ports {
                        let id = Some((pki_dir.join("probe.pem"), pki_dir.join("probe-key.pem")));
                        if probe(p, &ca_pem, id).await.ok()? != want {
                            return None;
                        }
                    }
                    Some(())
                }
            })
            .await
        }
    };

    // 1. Leaf rotation under the same CA.
    pki.set_leaf("probe", &leaf(&ca1, "probe", 199));
    let server2 = leaf(&ca1, "server", 200);
    let peer2 = leaf(&ca1, "peer", 201);
    {
        let _files = files.lock().await;
        pki.set_leaf("server", &server2);
        pki.set_leaf("peer", &peer2);
        pki.set_leaf("client", &leaf(&ca1, "root", 202));
    }
    presents(client_ports.clone(), "client", server2.der.clone()).await;
    presents(peer_ports.clone(), "peer", peer2.der.clone()).await;
    let rotated_at = load.ok.load(Ordering::SeqCst);
    progressed(rotated_at).await;

    // 2. CA rollover, step one: trust old and new CA everywhere.
    let ca2 = new_ca("cairn-ca-2");
    let probe2 = leaf(&ca2, "probe", 299);
    pki.set_ca(&[&ca1, &ca2]);
    pki.set_leaf("probe2", &probe2);
    let id2 = || Some((pki.path("probe2.pem"), pki.path("probe2-key.pem")));
    eventually(
        Duration::from_secs(15),
        "every port to trust the new CA",
        || async {
            for p in client_ports.iter().chain(&peer_ports) {
                probe(*p, &ca_pem, id2()).await.ok()?;
            }
            Some(())
        },
    )
    .await;
    progressed(load.ok.load(Ordering::SeqCst)).await;

    // Step two: leaves (server, peer, client) from the new CA.
    let server3 = leaf(&ca2, "server", 300);
    let peer3 = leaf(&ca2, "peer", 301);
    {
        let _files = files.lock().await;
        pki.set_leaf("server", &server3);
        pki.set_leaf("peer", &peer3);
        pki.set_leaf("client", &leaf(&ca2, "root", 302));
    }
    pki.set_leaf("probe", &probe2);
    presents(client_ports.clone(), "client", server3.der.clone()).await;
    presents(peer_ports.clone(), "peer", peer3.der.clone()).await;
    progressed(load.ok.load(Ordering::SeqCst)).await;

    // Step three: drop the old CA; its certificates are refused from now on.
    pki.set_ca(&[&ca2]);
    pki.set_leaf("old", &leaf(&ca1, "root", 399));
    let old_id = || Some((pki.path("old.pem"), pki.path("old-key.pem")));
    eventually(
        Duration::from_secs(15),
        "every port to refuse the old CA",
        || async {
            for p in client_ports.iter().chain(&peer_ports) {
                if probe(*p, &ca_pem, old_id()).await.is_ok() {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    progressed(load.ok.load(Ordering::SeqCst)).await;

    long_put(1)
        .await
        .expect("the connection made before the rotation still works after the old CA is gone");

    // New peer connections work with the new certificates only: a restarted follower rejoins.
    cluster.members[restarted].stop();
    cluster.members[restarted].start();
    wait_leader(&cluster, &[0, 1, 2], &tls).await;
    let key_after = format!("after-rollover-{}", load.ok.load(Ordering::SeqCst));
    put(&cluster.members[leader].endpoint(), &tls, &key_after, "x")
        .await
        .expect("put after the rollover");
    serves_key(&cluster.members[restarted].endpoint(), &tls, &key_after).await;

    load.stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer task");
    let (ok, failed, conns) = (
        load.ok.load(Ordering::SeqCst),
        load.failed.load(Ordering::SeqCst),
        load.connections.load(Ordering::SeqCst),
    );
    println!(
        "rotation + CA rollover: {ok} puts acknowledged, {failed} failed, over {conns} TLS connections in {:?}",
        started.elapsed()
    );
    let errors = load
        .errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert_eq!(
        failed,
        0,
        "failed requests: {errors:?}\n{}",
        cluster.dump_logs()
    );
    assert!(ok >= 100, "the writer made too little progress: {ok}");
    let logs = cluster.dump_logs();
    assert!(
        logs.matches("reloaded TLS certificates").count() >= 3 * 4,
        "every member reloads client and peer certificates at each step:\n{logs}"
    );
}

/// Kills a real etcd started by a test.
struct EtcdProcess(std::process::Child);

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The same etcdctl invocations against real etcd and cairn, both serving TLS with client
/// certificate authentication from the same files: the same ones succeed, with the same output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_sees_the_same_tls_behaviour_as_real_etcd() {
    let Some(etcd_bin) = support::Etcd::binary() else {
        eprintln!("SKIP: no etcd installed");
        return;
    };
    if !support::have_etcdctl() {
        eprintln!("SKIP: no etcdctl installed");
        return;
    }
    let ca = new_ca("cairn-test-ca");
    let other = new_ca("someone-else");
    let pki = pki_with(&ca);
    pki.set_leaf("intruder", &leaf(&other, "root", 900));
    std::fs::write(pki.path("other-ca.pem"), &other.pem).expect("write other ca");

    let mut cluster = tls_cluster(1, &pki);
    cluster.members[0].start();
    wait_leader(&cluster, &[0], &pki.client_tls()).await;

    let dir = tempfile::tempdir().expect("etcd dir");
    let (c, p) = (free_port(), free_port());
    let _etcd = EtcdProcess(
        std::process::Command::new(etcd_bin)
            .args(["--data-dir", &dir.path().join("data").display().to_string()])
            .args(["--listen-client-urls", &format!("https://127.0.0.1:{c}")])
            .args(["--advertise-client-urls", &format!("https://127.0.0.1:{c}")])
            .args(["--listen-peer-urls", &format!("https://127.0.0.1:{p}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("https://127.0.0.1:{p}"),
            ])
            .args([
                "--initial-cluster",
                &format!("default=https://127.0.0.1:{p}"),
            ])
            .args(pki.serve_flags())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start etcd"),
    );
    let good = pki.ctl_flags();
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let etcd_ep = host_port(c);
    eventually(Duration::from_secs(20), "etcd to serve over TLS", || {
        let mut args = good.clone();
        args.extend(["endpoint", "health"]);
        let ep = etcd_ep.clone();
        async move { support::etcdctl(&ep, &args, None).0.then_some(()) }
    })
    .await;

    let (ca_f, client, client_key) = (
        pki.flag("ca.pem"),
        pki.flag("client.pem"),
        pki.flag("client-key.pem"),
    );
    let (intruder, intruder_key, other_ca) = (
        pki.flag("intruder.pem"),
        pki.flag("intruder-key.pem"),
        pki.flag("other-ca.pem"),
    );
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "certificates",
            vec![
                "--cacert",
                &ca_f,
                "--cert",
                &client,
                "--key",
                &client_key,
                "put",
                "k",
                "v",
            ],
        ),
        (
            "certificates",
            vec![
                "--cacert",
                &ca_f,
                "--cert",
                &client,
                "--key",
                &client_key,
                "get",
                "k",
            ],
        ),
        (
            "skip verify",
            vec![
                "--insecure-skip-tls-verify",
                "--cert",
                &client,
                "--key",
                &client_key,
                "get",
                "k",
            ],
        ),
        ("plaintext", vec!["get", "k"]),
        ("no client certificate", vec!["--cacert", &ca_f, "get", "k"]),
        (
            "another CA's certificate",
            vec![
                "--cacert",
                &ca_f,
                "--cert",
                &intruder,
                "--key",
                &intruder_key,
                "get",
                "k",
            ],
        ),
        (
            "server from an untrusted CA",
            vec![
                "--cacert",
                &other_ca,
                "--cert",
                &client,
                "--key",
                &client_key,
                "get",
                "k",
            ],
        ),
    ];
    let cairn_ep = host_port(cluster.members[0].client_port);
    for (what, args) in cases {
        let mut args: Vec<&str> = args;
        args.extend(["--dial-timeout", "2s", "--command-timeout", "3s"]);
        let (etcd_ok, etcd_out, etcd_err) = support::etcdctl(&etcd_ep, &args, None);
        let (cairn_ok, cairn_out, cairn_err) = support::etcdctl(&cairn_ep, &args, None);
        assert_eq!(
            (etcd_ok, &etcd_out),
            (cairn_ok, &cairn_out),
            "{what}: etcd said {etcd_err:?}, cairn said {cairn_err:?}"
        );
        let accepted = matches!(what, "certificates" | "skip verify");
        assert_eq!(cairn_ok, accepted, "{what}: {cairn_out} {cairn_err}");
    }
}
