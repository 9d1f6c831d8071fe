//! A fault-injecting TCP proxy in front of one member's peer listener: members advertise the
//! proxy's port as their peer URL, so every connection *to* that member's peer server goes
//! through it. Blocking it cuts the member off from what the others send it (its own
//! outgoing requests, and their answers, still flow): an asymmetric partition, which is what a
//! proxy per member can do without per-link peer addresses (a member's id derives from the
//! peer URLs it advertises, so those must be the same for everyone).
//!
//! While blocked, existing connections are dropped and new ones are accepted and then left
//! unanswered (a blackhole: the sender waits for its timeouts, as behind a dead link).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// One proxy; dropped, it stops accepting and cuts its connections.
pub struct Proxy {
    pub port: u16,
    blocked: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    accept: AbortHandle,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target_port`.
    pub async fn start(target_port: u16) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let blocked = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (b, c, h) = (blocked.clone(), conns.clone(), held.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let _ = inbound.set_nodelay(true);
                if b.load(Ordering::SeqCst) {
                    if let Ok(mut v) = h.lock() {
                        v.push(inbound);
                    }
                    continue;
                }
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target_port)).await
                    else {
                        return;
                    };
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                if let Ok(mut v) = c.lock() {
                    v.retain(|t| !t.is_finished());
                    v.push(task.abort_handle());
                }
            }
        })
        .abort_handle();
        Ok(Proxy {
            port,
            blocked,
            conns,
            held,
            accept,
        })
    }

    /// Cuts the link: drops live connections, blackholes new ones.
    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        if let Ok(mut v) = self.conns.lock() {
            for t in v.drain(..) {
                t.abort();
            }
        }
    }

    /// Heals the link; blackholed connections are closed so their senders reconnect.
    pub fn unblock(&self) {
        self.blocked.store(false, Ordering::SeqCst);
        if let Ok(mut v) = self.held.lock() {
            v.clear();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.block();
        self.unblock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn forwards_then_blackholes_then_heals() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let echo_port = echo.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start(echo_port).await.expect("proxy");
        let roundtrip = |port: u16| async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            s.write_all(b"ping").await.ok()?;
            let mut buf = [0u8; 4];
            tokio::time::timeout(
                std::time::Duration::from_millis(300),
                s.read_exact(&mut buf),
            )
            .await
            .ok()?
            .ok()?;
            Some(buf)
        };
        assert_eq!(roundtrip(proxy.port).await, Some(*b"ping"));
        proxy.block();
        assert_eq!(roundtrip(proxy.port).await, None);
        proxy.unblock();
        assert_eq!(roundtrip(proxy.port).await, Some(*b"ping"));
    }
}
