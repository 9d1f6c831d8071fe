//! The gateway's JSON on the wire, as etcd's grpc-gateway (v1, `OrigName`) writes it: bodies
//! decoded into the prost types (serde impls from pbjson: base64 bytes, 64-bit integers as
//! strings or numbers, enums by name or number, unknown fields ignored), errors as
//! `{"error":..,"message":..,"code":N}` with grpc-gateway's HTTP status for the code, and
//! stream chunks as `{"result":..}` lines.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a request body could not become a request message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("unexpected EOF")]
    UnexpectedEof,
    #[error("reading the request body: {0}")]
    Body(String),
    #[error("grpc: received message larger than max ({size} vs. {max})")]
    TooLarge { size: usize, max: usize },
}

impl DecodeError {
    /// etcd answers an undecodable unary body with InvalidArgument (400); grpc-gateway
    /// reports a failure to decode a stream's first message as Unknown (500) instead.
    pub fn into_status(self, streaming: bool) -> tonic::Status {
        match self {
            DecodeError::TooLarge { .. } => tonic::Status::resource_exhausted(self.to_string()),
            _ if streaming => tonic::Status::unknown(self.to_string()),
            _ => tonic::Status::invalid_argument(self.to_string()),
        }
    }
}

/// One unary request body as a message. An empty body (or `null`) is the default message, as
/// Go's decoder leaves the message untouched for them.
pub fn decode<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, DecodeError> {
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" {
        return Ok(T::default());
    }
    let value: serde_json::Value = serde_json::from_slice(trimmed).map_err(|e| {
        // Go's decoder words a truncated body this way; clients may match on it.
        if e.is_eof() {
            DecodeError::UnexpectedEof
        } else {
            e.into()
        }
    })?;
    from_value(value)
}

/// A parsed JSON value as a message. Fields set to `null` count as absent, as in Go's jsonpb
/// (pbjson would refuse them).
fn from_value<T: DeserializeOwned>(mut value: serde_json::Value) -> Result<T, DecodeError> {
    drop_nulls(&mut value);
    Ok(serde_json::from_value(value)?)
}

fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// grpc-gateway v1's `HTTPStatusFromCode` (the one etcd 3.4 and 3.5 ship: FailedPrecondition is
/// 412 there, not the 400 of grpc-gateway v2).
pub fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code::*;
    match code {
        Ok => StatusCode::OK,
        Cancelled => StatusCode::REQUEST_TIMEOUT,
        Unknown | Internal | DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        InvalidArgument | OutOfRange => StatusCode::BAD_REQUEST,
        DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        NotFound => StatusCode::NOT_FOUND,
        AlreadyExists | Aborted => StatusCode::CONFLICT,
        PermissionDenied => StatusCode::FORBIDDEN,
        Unauthenticated => StatusCode::UNAUTHORIZED,
        ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// grpc-gateway's error body for a failed call.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    code: i32,
}

/// The error chunk that ends a stream after its headers went out (grpc-gateway v1.9's
/// `StreamError`).
#[derive(Debug, Serialize)]
struct StreamError<'a> {
    grpc_code: i32,
    http_code: u16,
    message: &'a str,
    http_status: &'a str,
}

pub fn error_response(status: &tonic::Status) -> Response {
    let body = ErrorBody {
        error: status.message(),
        message: status.message(),
        code: status.code() as i32,
    };
    json_response(http_status(status.code()), &body)
}

pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut resp = (status, bytes).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => error_response(&tonic::Status::internal(e.to_string())),
    }
}

/// One line of a streamed response: `{"result":<message>}\n`.
pub fn result_chunk<T: Serialize>(msg: &T) -> Result<Bytes, serde_json::Error> {
    #[derive(Serialize)]
    struct Chunk<'a, T> {
        result: &'a T,
    }
    let mut out = serde_json::to_vec(&Chunk { result: msg })?;
    out.push(b'\n');
    Ok(out.into())
}

/// The chunk that reports a stream's failure (no newline after it, as grpc-gateway writes it).
pub fn error_chunk(status: &tonic::Status) -> Bytes {
    #[derive(Serialize)]
    struct Chunk<'a> {
        error: StreamError<'a>,
    }
    let http = http_status(status.code());
    let chunk = Chunk {
        error: StreamError {
            grpc_code: status.code() as i32,
            http_code: http.as_u16(),
            message: status.message(),
            http_status: http.canonical_reason().unwrap_or(""),
        },
    };
    serde_json::to_vec(&chunk)
        .map(Bytes::from)
        .unwrap_or_else(|_| Bytes::from_static(b"{\"error\":{\"grpc_code\":13}}"))
}

/// Successive JSON messages in a streaming request body (grpc-gateway reads them with Go's
/// `json.Decoder`: concatenated or whitespace-separated values).
pub struct JsonMessages {
    body: axum::body::BodyDataStream,
    buf: Vec<u8>,
    ended: bool,
    max_bytes: usize,
}

impl JsonMessages {
    pub fn new(body: axum::body::Body, max_bytes: usize) -> Self {
        Self {
            body: body.into_data_stream(),
            buf: Vec::new(),
            ended: false,
            max_bytes,
        }
    }

    /// The next message; `None` once the body ended cleanly.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Option<Result<T, DecodeError>> {
        loop {
            let start = self
                .buf
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.buf.len());
            self.buf.drain(..start);
            if !self.buf.is_empty() {
                let mut values = serde_json::Deserializer::from_slice(&self.buf)
                    .into_iter::<serde_json::Value>();
                match values.next() {
                    Some(Ok(value)) => {
                        let used = values.byte_offset();
                        self.buf.drain(..used);
                        return Some(from_value(value));
                    }
                    // An incomplete value: wait for more of the body.
                    Some(Err(e)) if e.is_eof() && !self.ended => {}
                    Some(Err(e)) if e.is_eof() => return Some(Err(DecodeError::UnexpectedEof)),
                    Some(Err(e)) => return Some(Err(e.into())),
                    None => {}
                }
                if self.buf.len() > self.max_bytes {
                    return Some(Err(DecodeError::TooLarge {
                        size: self.buf.len(),
                        max: self.max_bytes,
                    }));
                }
            }
            if self.ended {
                return None;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Some(Err(DecodeError::Body(e.to_string()))),
                None => self.ended = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{LeaseGrantResponse, RangeRequest, ResponseHeader};

    #[test]
    fn requests_take_both_field_names_and_both_number_forms() {
        let a: RangeRequest =
            decode(br#"{"key":"Zm9v","keys_only":true,"limit":"1","sort_order":"DESCEND"}"#)
                .expect("proto names, string number");
        let b: RangeRequest = decode(br#"{"key":"Zm9v","keysOnly":true,"limit":1,"sortOrder":2}"#)
            .expect("json names, plain number, enum number");
        assert_eq!(a, b);
        assert_eq!(a.key, b"foo");
        assert_eq!(a.limit, 1);
        let unknown: RangeRequest = decode(br#"{"key":"Zm9v","bogus":1}"#).expect("ignored");
        assert_eq!(unknown.key, b"foo");
        assert_eq!(
            decode::<RangeRequest>(b"").expect("empty"),
            RangeRequest::default()
        );
        assert_eq!(
            decode::<RangeRequest>(b" null ").expect("null"),
            RangeRequest::default()
        );
        let nulls: RangeRequest =
            decode(br#"{"key":"Zm9v","range_end":null,"limit":null}"#).expect("nulls are absent");
        assert_eq!((nulls.key.as_slice(), nulls.limit), (&b"foo"[..], 0));
        assert!(decode::<RangeRequest>(br#"{"key":"#).is_err());
        assert!(decode::<RangeRequest>(br#"{"key":123}"#).is_err());
    }

    #[test]
    fn responses_use_etcds_names_strings_for_64_bits_and_omit_defaults() {
        let resp = LeaseGrantResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 3,
                raft_term: 0,
            }),
            id: 7,
            ttl: 60,
            error: String::new(),
        };
        let text = serde_json::to_string(&resp).expect("serialize");
        assert_eq!(
            text,
            r#"{"header":{"cluster_id":"1","member_id":"2","revision":"3"},"ID":"7","TTL":"60"}"#
        );
    }

    #[test]
    fn status_codes_follow_grpc_gateway_v1() {
        assert_eq!(
            http_status(tonic::Code::OutOfRange),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(http_status(tonic::Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            http_status(tonic::Code::FailedPrecondition),
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(
            http_status(tonic::Code::Unimplemented),
            StatusCode::NOT_IMPLEMENTED
        );
    }

    #[tokio::test]
    async fn streamed_bodies_split_into_messages() {
        let body = axum::body::Body::from(r#"{"ID":"1"} {"ID":2}{"ID":"3"}"#);
        let mut msgs = JsonMessages::new(body, 1024);
        let mut ids = Vec::new();
        while let Some(m) = msgs
            .next::<crate::proto::etcdserverpb::LeaseKeepAliveRequest>()
            .await
        {
            ids.push(m.expect("valid").id);
        }
        assert_eq!(ids, vec![1, 2, 3]);
        let mut bad = JsonMessages::new(axum::body::Body::from(r#"{"ID":"1"}{"ID""#), 1024);
        assert!(bad
            .next::<crate::proto::etcdserverpb::LeaseKeepAliveRequest>()
            .await
            .is_some_and(|r| r.is_ok()));
        assert!(matches!(
            bad.next::<crate::proto::etcdserverpb::LeaseKeepAliveRequest>()
                .await,
            Some(Err(DecodeError::UnexpectedEof))
        ));
    }
}
