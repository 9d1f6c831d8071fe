//! Leaf rotation and a full CA rollover under a continuous writer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_store::client::{Client, ClientTls};
use cairn_store::proto::etcdserverpb::PutRequest;

use crate::clients::*;
use crate::pki::*;
use crate::support::eventually;

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
