//! With `--client-cert-auth` and auth enabled, the verified client certificate's common name is
//! the user (etcd's behaviour): a request with no token and no `--user` runs as that user.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_certificate_common_name_is_the_user() {
    if !support::have_etcdctl() {
        eprintln!("SKIP: no etcdctl installed");
        return;
    }
    let ca = new_ca("cairn-cn-ca");
    let pki = pki_with(&ca); // the client leaf's CN is "root"
    pki.set_leaf("alice", &leaf(&ca, "alice", 300));
    let mut cluster = tls_cluster(1, &pki);
    cluster.members[0].start();
    wait_leader(&cluster, &[0], &pki.client_tls()).await;
    let ep = host_port(cluster.members[0].client_port);
    let as_root = pki.ctl_flags();
    let as_alice: Vec<String> = vec![
        "--cacert".into(),
        pki.flag("ca.pem"),
        "--cert".into(),
        pki.flag("alice.pem"),
        "--key".into(),
        pki.flag("alice-key.pem"),
    ];
    let ctl = |flags: &[String], args: &[&str]| {
        let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        support::etcdctl(&ep, &all, None)
    };
    for args in [
        &["role", "add", "root"][..],
        &["user", "add", "root:rootpw"],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice:alicepw"],
        &["role", "add", "reader"],
        &["role", "grant-permission", "reader", "read", "shared"],
        &["user", "grant-role", "alice", "reader"],
        &["auth", "enable"],
    ] {
        let (ok, out, err) = ctl(&as_root, args);
        assert!(ok, "etcdctl {args:?}: {out} {err}\n{}", cluster.dump_logs());
    }
    // CN=root, no --user: root may write anything.
    let (ok, out, err) = ctl(&as_root, &["put", "shared", "by-root"]);
    assert!(ok && out == "OK\n", "root by certificate: {out} {err}");
    // CN=alice may read "shared" but not write it: etcd's permission error, not an auth failure.
    let (ok, out, err) = ctl(&as_alice, &["get", "shared", "--print-value-only"]);
    assert!(
        ok && out == "by-root\n",
        "alice reads by certificate: {out} {err}"
    );
    let (ok, _, err) = ctl(&as_alice, &["put", "shared", "by-alice"]);
    assert!(!ok, "alice must not write");
    assert!(err.contains("etcdserver: permission denied"), "{err}");
    // An explicit user still wins over the certificate, as in etcd (token first).
    let (ok, out, err) = ctl(&as_alice, &["--user", "root:rootpw", "put", "shared", "x"]);
    assert!(
        ok && out == "OK\n",
        "--user over the certificate: {out} {err}"
    );
}
