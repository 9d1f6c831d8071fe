//! etcdctl against real etcd and cairn serving TLS from the same files.

use std::time::Duration;

use crate::clients::*;
use crate::pki::*;
use crate::support::{self, eventually, free_port};

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
