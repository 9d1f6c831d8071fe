//! Streaming RPCs over HTTP/1.1: the request body's JSON messages become the gRPC service's
//! input stream, and its responses go out as chunked `{"result":..}` lines.
//!
//! The input is handed to the services as a real `tonic::Streaming` (each message re-encoded
//! with gRPC framing), so Watch and LeaseKeepAlive run the very code gRPC clients get.

use std::future::Future;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::Streaming;

use super::json::{self, JsonMessages};

/// What happens when the request body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBodyEnd {
    /// The service sees its input end (LeaseKeepAlive then finishes, as in etcd).
    Close,
    /// The service's input stays open until the client goes away (the response body is
    /// dropped): etcd keeps a Watch streaming after `curl -d '{"create_request":..}'` has sent
    /// its whole body.
    KeepOpen,
}

/// One message with gRPC's length-prefixed framing (uncompressed).
fn grpc_frame<T: prost::Message>(msg: &T) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    // Bounded by the body limit, far below u32::MAX.
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Encoding into a buffer with enough capacity cannot fail.
    let _ = msg.encode(&mut buf);
    buf.freeze()
}

/// Runs a bidirectional-streaming RPC with the JSON messages of `body` as its input.
///
/// The first message is read before the call, as grpc-gateway does: if it does not decode, the
/// answer is a plain error (Unknown, 500). A later undecodable message ends the input.
pub async fn bidi<Req, Resp, F, Fut, S>(
    body: axum::body::Body,
    max_bytes: usize,
    on_end: OnBodyEnd,
    prepare: impl FnOnce(&mut tonic::Request<Streaming<Req>>),
    call: F,
) -> Response
where
    Req: DeserializeOwned + prost::Message + Default + Send + 'static,
    F: FnOnce(tonic::Request<Streaming<Req>>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<S>, tonic::Status>>,
    S: Stream<Item = Result<Resp, tonic::Status>> + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    let mut messages = JsonMessages::new(body, super::json_limit(max_bytes));
    let first = match messages.next::<Req>().await {
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => return super::error_response(&e.into_status(true)),
        None => None,
    };
    let rest = futures::stream::unfold(Some(messages), |state| async move {
        let mut messages = state?;
        match messages.next::<Req>().await {
            Some(Ok(m)) => Some((m, Some(messages))),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "gateway: ending a stream's input at a bad message");
                None
            }
            None => None,
        }
    });
    let input = futures::stream::iter(first).chain(rest);
    let framed = input.map(|m| Ok::<_, std::io::Error>(grpc_frame(&m)));
    // Dropped with the response body, i.e. when the client goes away: a kept-open input ends
    // then, so the service sees its stream close as it does when a gRPC client disconnects.
    let (client_gone, gone) = tokio::sync::oneshot::channel::<()>();
    let framed: futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>> = match on_end {
        OnBodyEnd::Close => framed.boxed(),
        OnBodyEnd::KeepOpen => framed
            .chain(futures::stream::once(gone).filter_map(|_| futures::future::ready(None)))
            .boxed(),
    };
    let streaming = Streaming::new_request(
        tonic_prost::ProstDecoder::<Req>::default(),
        axum::body::Body::from_stream(framed),
        None,
        Some(max_bytes),
    );
    let mut request = tonic::Request::new(streaming);
    prepare(&mut request);
    match call(request).await {
        Ok(resp) => stream_response(resp.into_inner().map(move |item| {
            let _held_until_the_body_drops = &client_gone;
            item
        })),
        Err(status) => super::error_response(&status),
    }
}

/// A server stream as chunked JSON lines; an error ends it with grpc-gateway's error chunk.
pub fn stream_response<S, T>(responses: S) -> Response
where
    S: Stream<Item = Result<T, tonic::Status>> + Send + 'static,
    T: Serialize + Send + 'static,
{
    let chunks = responses
        .scan(false, |failed, item| {
            if *failed {
                return futures::future::ready(None);
            }
            let chunk = match item.and_then(|m| {
                json::result_chunk(&m).map_err(|e| tonic::Status::internal(e.to_string()))
            }) {
                Ok(chunk) => chunk,
                Err(status) => {
                    *failed = true;
                    json::error_chunk(&status)
                }
            };
            futures::future::ready(Some(Ok::<_, std::convert::Infallible>(chunk)))
        })
        .boxed();
    let mut resp = (StatusCode::OK, axum::body::Body::from_stream(chunks)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::LeaseKeepAliveRequest;

    /// A kept-open input ends when the response is dropped (the client went away), so a watch
    /// stream's task ends then instead of lingering until its next event.
    #[tokio::test]
    async fn a_kept_open_input_ends_when_the_client_goes_away() {
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<Vec<i64>>();
        let body = axum::body::Body::from(r#"{"ID":"1"}{"ID":"2"}"#);
        let resp = bidi(
            body,
            1024,
            OnBodyEnd::KeepOpen,
            |_| {},
            |req: tonic::Request<Streaming<LeaseKeepAliveRequest>>| async move {
                let mut input = req.into_inner();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while let Ok(Some(m)) = input.message().await {
                        seen.push(m.id);
                    }
                    let _ = ended_tx.send(seen);
                });
                let out =
                    futures::stream::pending::<Result<LeaseKeepAliveRequest, tonic::Status>>();
                Ok(tonic::Response::new(out))
            },
        )
        .await;
        let mut ended_rx = ended_rx;
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(200), &mut ended_rx)
                .await
                .is_err(),
            "input ended while the client is still there"
        );
        drop(resp);
        let seen = tokio::time::timeout(std::time::Duration::from_secs(5), ended_rx)
            .await
            .expect("input ends once the response is dropped")
            .expect("the service task reports");
        assert_eq!(seen, vec![1, 2]);
    }

    #[test]
    fn frames_carry_the_length_prefix() {
        let frame = grpc_frame(&LeaseKeepAliveRequest { id: 5 });
        assert_eq!(&frame[..5], &[0, 0, 0, 0, 2]);
        assert_eq!(frame.len(), 7);
    }
}
