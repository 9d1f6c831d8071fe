//! Talking to TLS members from tests: cairn's client with certificates, leader waits, and raw
//! rustls sessions that show which certificate a port presents and whether it accepts ours.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_store::client::{Client, ClientTls, ConnectOptions};
use cairn_store::proto::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};
use cairn_store::tls::{Material, TlsFiles};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::pki::Pki;
use crate::support::{eventually, Cluster};

pub fn tls_options(tls: ClientTls) -> ConnectOptions {
    ConnectOptions {
        dial_timeout: Duration::from_secs(2),
        request_timeout: Some(Duration::from_secs(5)),
        tls: Some(tls),
        credentials: None,
    }
}

pub async fn status(endpoint: &str, tls: &ClientTls) -> Option<(u64, u64)> {
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
pub async fn wait_leader(cluster: &Cluster, idx: &[usize], tls: &ClientTls) -> usize {
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

pub async fn put(endpoint: &str, tls: &ClientTls, key: &str, value: &str) -> Result<(), String> {
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
pub async fn probe(
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
pub async fn https_get(port: u16, pki: &Pki, path: &str) -> String {
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

pub fn tls_cluster(n: usize, pki: &Pki) -> Cluster {
    let flags = pki.serve_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Cluster::prepare(n, ("https", "https"), &flags)
}

pub fn host_port(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Waits until the member at `endpoint` serves `key` from its own state.
pub async fn serves_key(endpoint: &str, tls: &ClientTls, key: &str) {
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
