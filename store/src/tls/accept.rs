//! The accept side: TCP connections from a listener, TLS handshakes done concurrently under a
//! deadline, finished sessions handed to the gRPC server as a stream.
//!
//! Handshakes run in their own tasks so one slow or silent client cannot hold up accepting
//! others, and a failed handshake (plaintext client, unknown CA, no client certificate) is logged
//! at debug and dropped: the server never sees it. Each handshake takes the reloader's current
//! config, which is how new certificates reach new connections.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use super::TlsReloader;

/// How long a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Completed handshakes waiting for the server to pick them up.
const BACKLOG: usize = 128;

/// TLS sessions accepted on `listener`, until the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<TlsReloader>,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        // Dropped with this task: pending handshakes end when the server stops.
        let mut handshakes = JoinSet::new();
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
                accepted = listener.accept() => {
                    let (tcp, addr) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: back off instead of spinning.
                            tracing::warn!(error = %e, "accepting a connection");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // Nagle off, as on plaintext listeners (see server::incoming).
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(%addr, error = %e, "setting TCP_NODELAY");
                    }
                    let acceptor = TlsAcceptor::from(tls.server_config());
                    let tx = tx.clone();
                    handshakes.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(session)) => {
                                let _ = tx.send(Ok(session)).await;
                            }
                            Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsFiles;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

    /// Writes a CA, a server leaf and a client leaf into `dir`.
    fn pki(dir: &std::path::Path) {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        for name in ["server", "client"] {
            let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
        }
    }

    /// What the server saw of the client certificate: tonic puts `TlsConnectInfo` (what
    /// `tonic::Request::peer_certs()` reads) on every request of a TLS session.
    async fn client_certs(req: axum::extract::Request) -> String {
        req.extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.peer_certs())
            .map_or("none".to_string(), |c| format!("{} cert(s)", c.len()))
    }

    #[tokio::test]
    async fn sessions_carry_the_client_certificate_and_silent_clients_block_nobody() {
        let dir = tempfile::tempdir().unwrap();
        pki(dir.path());
        let p = |n: &str| Some(dir.path().join(n));
        let tls = TlsReloader::load(
            "test",
            TlsFiles {
                cert: p("server.pem"),
                key: p("server-key.pem"),
                trusted_ca: p("ca.pem"),
                client_cert_auth: true,
            },
            false,
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes = tonic::service::Routes::from(
            axum::Router::new().route("/certs", axum::routing::get(client_certs)),
        );
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .accept_http1(true)
                .add_routes(routes)
                .serve_with_incoming(incoming(listener, tls)),
        );

        // A client that connects and never says anything.
        let _silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();

        let files = TlsFiles {
            cert: p("client.pem"),
            key: p("client-key.pem"),
            trusted_ca: p("ca.pem"),
            client_cert_auth: false,
        };
        let material = crate::tls::Material::read(&files).unwrap();
        let mut config = crate::tls::client_config(&files, &material, false).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut session = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        session
            .write_all(b"GET /certs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), session.read_to_string(&mut out))
            .await
            .expect("answered while another client stays silent")
            .unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with("1 cert(s)"), "{out}");
        server.abort();
    }
}
