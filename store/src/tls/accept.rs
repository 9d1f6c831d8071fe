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
