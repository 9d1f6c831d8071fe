//! Accepted connections, as the HTTP/2 layer should write to them.
//!
//! h2 (under tonic) keeps a DATA payload of 256 bytes or more out of its write buffer when the
//! connection takes vectored writes, and accepts no further frame until that payload is on the
//! socket. A unary reply is HEADERS, one DATA frame and trailing HEADERS, so every reply over
//! 256 bytes (a range with a 256-byte value, say) left in two `writev`s, and the client woke up
//! twice to read it: with 64 clients, 130,000 `writev`s in 3 s for 65,000 ranges, and sending
//! was about a third of the server's CPU (`perf record -e cpu-clock`).
//!
//! On a connection that says it takes no vectored writes, h2 copies payloads under 1 KiB into
//! its buffer instead, so a small reply goes out whole in one `write`. Larger payloads (list
//! pages) are still written from their own buffers, a frame header and a payload per frame.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// A connection that reports no vectored writes, so that h2 coalesces small frames.
#[derive(Debug)]
pub struct Unvectored<T>(pub T);

impl<T: AsyncRead + Unpin> AsyncRead for Unvectored<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Unvectored<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Callers that ignore `is_write_vectored` still work, one buffer at a time.
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        Pin::new(&mut self.0).poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<T: Connected> Connected for Unvectored<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, StreamBody};
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A TCP connection that counts the writes reaching its socket.
    struct Counting {
        tcp: TcpStream,
        writes: Arc<AtomicUsize>,
    }

    impl Counting {
        fn count(&self, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
            if let Poll::Ready(Ok(n)) = &written {
                if *n > 0 {
                    self.writes.fetch_add(1, Ordering::SeqCst);
                }
            }
            written
        }
    }

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.tcp).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let written = Pin::new(&mut self.tcp).poll_write(cx, buf);
            self.count(written)
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let written = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
            self.count(written)
        }

        fn is_write_vectored(&self) -> bool {
            self.tcp.is_write_vectored()
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.tcp).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.tcp).poll_shutdown(cx)
        }
    }

    /// Serves one HTTP/2 connection whose every reply is shaped like a unary gRPC reply: headers,
    /// one DATA frame of `payload` bytes, trailers. Returns how many socket writes the server made
    /// for the second reply (the first one also carries the connection's settings exchange).
    async fn writes_for_one_reply(unvectored: bool, payload: usize) -> usize {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writes = Arc::new(AtomicUsize::new(0));
        let counter = writes.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let io = Counting {
                tcp,
                writes: counter,
            };
            let reply = hyper::service::service_fn(move |_req| async move {
                let mut trailers = hyper::HeaderMap::new();
                trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
                let frames = vec![
                    Ok::<_, Infallible>(Frame::data(Bytes::from(vec![7u8; payload]))),
                    Ok(Frame::trailers(trailers)),
                ];
                let body = StreamBody::new(futures::stream::iter(frames));
                Ok::<_, Infallible>(hyper::Response::new(body))
            });
            let http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            // The client closing the connection ends it; how it ends does not matter here.
            if unvectored {
                let _ = http2
                    .serve_connection(TokioIo::new(Unvectored(io)), reply)
                    .await;
            } else {
                let _ = http2.serve_connection(TokioIo::new(io), reply).await;
            }
        });

        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut client, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        let driver = tokio::spawn(conn);
        let mut writes_for_reply = 0;
        for _ in 0..2 {
            let before = writes.load(Ordering::SeqCst);
            let req = hyper::Request::builder()
                .uri(format!("http://{addr}/"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let body = client.send_request(req).await.unwrap().into_body();
            let reply = body.collect().await.unwrap();
            assert!(reply.trailers().is_some(), "the reply ends with trailers");
            assert_eq!(reply.to_bytes().len(), payload);
            writes_for_reply = writes.load(Ordering::SeqCst) - before;
        }
        drop(client);
        let _ = driver.await;
        let _ = server.await;
        writes_for_reply
    }

    #[tokio::test]
    async fn a_small_reply_leaves_in_one_write() {
        // A range reply with a 256-byte value is about 330 bytes.
        assert_eq!(writes_for_one_reply(true, 330).await, 1);
        assert_eq!(writes_for_one_reply(true, 1000).await, 1);
    }

    #[tokio::test]
    async fn on_a_vectored_connection_h2_splits_the_same_reply() {
        // Why `Unvectored` exists. If this fails, h2 no longer holds frames back behind a
        // payload it writes from its own buffer, and the wrapper may be unnecessary.
        assert!(writes_for_one_reply(false, 330).await >= 2);
        // Payloads under 256 bytes are copied either way.
        assert_eq!(writes_for_one_reply(false, 100).await, 1);
    }
}
