//! Printers for KV responses, one per `-w` format, as pure functions from a response to the bytes
//! etcdctl writes to stdout.
//!
//! `simple` prints raw key and value bytes (keys need not be UTF-8); `json` is Go's encoding of
//! etcd's structs (omitempty, base64 bytes, etcdctl 3.5's snake_case oneof names in txn);
//! `fields` is etcdctl's `"Name" : value` listing; `protobuf` is the wire encoding of the response.
use std::fmt::Write as _;

use prost::Message as _;

use super::gofmt::{quote, JsonObject};
use super::{exit, CliError, OutputFormat};
use crate::proto::etcdserverpb::{
    response_op, DeleteRangeResponse, PutResponse, RangeResponse, ResponseHeader, ResponseOp,
    TxnResponse,
};
use crate::proto::mvccpb::KeyValue;

/// Formats responses the way one `-w` format of etcdctl does.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub format: OutputFormat,
    pub hex: bool,
    /// `get --print-value-only`: simple output without key lines.
    pub value_only: bool,
}

/// etcdctl's refusal of an output format a command cannot print.
pub fn unsupported(format: OutputFormat) -> CliError {
    let name = match format {
        OutputFormat::Simple => "simple",
        OutputFormat::Json => "json",
        OutputFormat::Protobuf => "protobuf",
        OutputFormat::Fields => "fields",
        OutputFormat::Table => "table",
    };
    CliError::new(
        exit::BAD_FEATURE,
        format!("{name} not supported as output format"),
    )
}

impl Printer {
    pub fn new(format: OutputFormat, hex: bool) -> Self {
        Self {
            format,
            hex,
            value_only: false,
        }
    }

    fn unsupported(&self) -> CliError {
        unsupported(self.format)
    }

    pub fn get(&self, r: &RangeResponse) -> Result<Vec<u8>, CliError> {
        match self.format {
            OutputFormat::Simple => Ok(self.simple_get(r)),
            OutputFormat::Json => Ok(line(json_range(r))),
            OutputFormat::Fields => Ok(fields_range(r).into_bytes()),
            OutputFormat::Protobuf => Ok(r.encode_to_vec()),
            OutputFormat::Table => Err(self.unsupported()),
        }
    }

    pub fn put(&self, r: &PutResponse) -> Result<Vec<u8>, CliError> {
        match self.format {
            OutputFormat::Simple => Ok(self.simple_put(r)),
            OutputFormat::Json => Ok(line(json_put(r))),
            OutputFormat::Fields => Ok(fields_put(r).into_bytes()),
            OutputFormat::Protobuf => Ok(r.encode_to_vec()),
            OutputFormat::Table => Err(self.unsupported()),
        }
    }

    pub fn del(&self, r: &DeleteRangeResponse) -> Result<Vec<u8>, CliError> {
        match self.format {
            OutputFormat::Simple => Ok(self.simple_del(r)),
            OutputFormat::Json => Ok(line(json_del(r))),
            OutputFormat::Fields => Ok(fields_del(r).into_bytes()),
            OutputFormat::Protobuf => Ok(r.encode_to_vec()),
            OutputFormat::Table => Err(self.unsupported()),
        }
    }

    pub fn txn(&self, r: &TxnResponse) -> Result<Vec<u8>, CliError> {
        match self.format {
            OutputFormat::Simple => Ok(self.simple_txn(r)),
            OutputFormat::Json => Ok(line(json_txn(r))),
            OutputFormat::Fields => Ok(fields_txn(r).into_bytes()),
            OutputFormat::Protobuf => Ok(r.encode_to_vec()),
            OutputFormat::Table => Err(self.unsupported()),
        }
    }

    /// etcdctl's `printKV`: key line (unless value-only) then value line, raw bytes or `\xNN`.
    pub(crate) fn simple_kv(&self, out: &mut Vec<u8>, kv: &KeyValue) {
        if !self.value_only {
            self.bytes_line(out, &kv.key);
        }
        self.bytes_line(out, &kv.value);
    }

    fn bytes_line(&self, out: &mut Vec<u8>, b: &[u8]) {
        if self.hex {
            for byte in b {
                out.extend_from_slice(format!("\\x{byte:02x}").as_bytes());
            }
        } else {
            out.extend_from_slice(b);
        }
        out.push(b'\n');
    }

    fn simple_get(&self, r: &RangeResponse) -> Vec<u8> {
        let mut out = Vec::new();
        for kv in &r.kvs {
            self.simple_kv(&mut out, kv);
        }
        out
    }

    fn simple_put(&self, r: &PutResponse) -> Vec<u8> {
        let mut out = b"OK\n".to_vec();
        if let Some(prev) = &r.prev_kv {
            self.simple_kv(&mut out, prev);
        }
        out
    }

    fn simple_del(&self, r: &DeleteRangeResponse) -> Vec<u8> {
        let mut out = format!("{}\n", r.deleted).into_bytes();
        for kv in &r.prev_kvs {
            self.simple_kv(&mut out, kv);
        }
        out
    }

    fn simple_txn(&self, r: &TxnResponse) -> Vec<u8> {
        let mut out = if r.succeeded {
            b"SUCCESS\n".to_vec()
        } else {
            b"FAILURE\n".to_vec()
        };
        for op in &r.responses {
            out.push(b'\n');
            match &op.response {
                Some(response_op::Response::ResponseRange(g)) => out.extend(self.simple_get(g)),
                Some(response_op::Response::ResponsePut(p)) => out.extend(self.simple_put(p)),
                Some(response_op::Response::ResponseDeleteRange(d)) => {
                    out.extend(self.simple_del(d))
                }
                // etcdctl has no simple form for nested txns; it prints the raw response.
                Some(response_op::Response::ResponseTxn(t)) => {
                    out.extend(format!("unexpected response {t:?}\n").into_bytes())
                }
                None => out.extend(b"unexpected response {}\n"),
            }
        }
        out
    }
}

fn line(mut s: String) -> Vec<u8> {
    s.push('\n');
    s.into_bytes()
}

pub fn json_header(h: &Option<ResponseHeader>) -> Option<String> {
    h.as_ref().map(|h| {
        JsonObject::new()
            .uint("cluster_id", h.cluster_id)
            .uint("member_id", h.member_id)
            .int("revision", h.revision)
            .uint("raft_term", h.raft_term)
            .finish()
    })
}

pub(crate) fn json_kv(kv: &KeyValue) -> String {
    JsonObject::new()
        .bytes("key", &kv.key)
        .int("create_revision", kv.create_revision)
        .int("mod_revision", kv.mod_revision)
        .int("version", kv.version)
        .bytes("value", &kv.value)
        .int("lease", kv.lease)
        .finish()
}

pub fn json_range(r: &RangeResponse) -> String {
    let kvs: Vec<String> = r.kvs.iter().map(json_kv).collect();
    JsonObject::new()
        .object("header", json_header(&r.header))
        .array("kvs", &kvs)
        .bool("more", r.more)
        .int("count", r.count)
        .finish()
}

pub fn json_put(r: &PutResponse) -> String {
    JsonObject::new()
        .object("header", json_header(&r.header))
        .object("prev_kv", r.prev_kv.as_ref().map(json_kv))
        .finish()
}

pub fn json_del(r: &DeleteRangeResponse) -> String {
    let prev: Vec<String> = r.prev_kvs.iter().map(json_kv).collect();
    JsonObject::new()
        .object("header", json_header(&r.header))
        .int("deleted", r.deleted)
        .array("prev_kvs", &prev)
        .finish()
}

pub fn json_txn(r: &TxnResponse) -> String {
    let responses: Vec<String> = r.responses.iter().map(json_response_op).collect();
    JsonObject::new()
        .object("header", json_header(&r.header))
        .bool("succeeded", r.succeeded)
        .array("responses", &responses)
        .finish()
}

/// Go encodes the gogoproto oneof as an untagged interface field `Response` wrapping a struct
/// whose one field carries the proto name.
fn json_response_op(op: &ResponseOp) -> String {
    let inner = match &op.response {
        Some(response_op::Response::ResponseRange(g)) => JsonObject::new()
            .raw("response_range", &json_range(g))
            .finish(),
        Some(response_op::Response::ResponsePut(p)) => {
            JsonObject::new().raw("response_put", &json_put(p)).finish()
        }
        Some(response_op::Response::ResponseDeleteRange(d)) => JsonObject::new()
            .raw("response_delete_range", &json_del(d))
            .finish(),
        Some(response_op::Response::ResponseTxn(t)) => {
            JsonObject::new().raw("response_txn", &json_txn(t)).finish()
        }
        None => "null".to_string(),
    };
    JsonObject::new().raw("Response", &inner).finish()
}

pub fn fields_header(out: &mut String, h: &Option<ResponseHeader>) {
    let h = h.unwrap_or_default();
    let _ = writeln!(out, "\"ClusterID\" : {}", h.cluster_id);
    let _ = writeln!(out, "\"MemberID\" : {}", h.member_id);
    let _ = writeln!(out, "\"Revision\" : {}", h.revision);
    let _ = writeln!(out, "\"RaftTerm\" : {}", h.raft_term);
}

pub(crate) fn fields_kv(out: &mut String, prefix: &str, kv: &KeyValue) {
    let _ = writeln!(out, "\"{prefix}Key\" : {}", quote(&kv.key));
    let _ = writeln!(out, "\"{prefix}CreateRevision\" : {}", kv.create_revision);
    let _ = writeln!(out, "\"{prefix}ModRevision\" : {}", kv.mod_revision);
    let _ = writeln!(out, "\"{prefix}Version\" : {}", kv.version);
    let _ = writeln!(out, "\"{prefix}Value\" : {}", quote(&kv.value));
    let _ = writeln!(out, "\"{prefix}Lease\" : {}", kv.lease);
}

pub fn fields_range(r: &RangeResponse) -> String {
    let mut out = String::new();
    fields_header(&mut out, &r.header);
    for kv in &r.kvs {
        fields_kv(&mut out, "", kv);
    }
    let _ = writeln!(out, "\"More\" : {}", r.more);
    let _ = writeln!(out, "\"Count\" : {}", r.count);
    out
}

pub fn fields_put(r: &PutResponse) -> String {
    let mut out = String::new();
    fields_header(&mut out, &r.header);
    if let Some(prev) = &r.prev_kv {
        fields_kv(&mut out, "Prev", prev);
    }
    out
}

pub fn fields_del(r: &DeleteRangeResponse) -> String {
    let mut out = String::new();
    fields_header(&mut out, &r.header);
    let _ = writeln!(out, "\"Deleted\" : {}", r.deleted);
    for kv in &r.prev_kvs {
        fields_kv(&mut out, "Prev", kv);
    }
    out
}

pub fn fields_txn(r: &TxnResponse) -> String {
    let mut out = String::new();
    fields_header(&mut out, &r.header);
    let _ = writeln!(out, "\"Succeeded\" : {}", r.succeeded);
    for op in &r.responses {
        match &op.response {
            Some(response_op::Response::ResponseRange(g)) => out.push_str(&fields_range(g)),
            Some(response_op::Response::ResponsePut(p)) => out.push_str(&fields_put(p)),
            Some(response_op::Response::ResponseDeleteRange(d)) => out.push_str(&fields_del(d)),
            Some(response_op::Response::ResponseTxn(t)) => {
                let _ = writeln!(out, "\"Unknown\" : {}", quote(format!("{t:?}").as_bytes()));
            }
            None => {
                let _ = writeln!(out, "\"Unknown\" : \"<nil>\"");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 324952591200643719,
            member_id: 3319814642761637952,
            revision,
            raft_term: 2,
        })
    }

    fn kv(key: &[u8], value: &[u8], create: i64, modr: i64, version: i64) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision: create,
            mod_revision: modr,
            version,
            lease: 0,
        }
    }

    fn range(kvs: Vec<KeyValue>) -> RangeResponse {
        let count = kvs.len() as i64;
        RangeResponse {
            header: header(4),
            kvs,
            more: false,
            count,
        }
    }

    fn text(b: Result<Vec<u8>, CliError>) -> String {
        String::from_utf8(b.unwrap()).unwrap()
    }

    #[test]
    fn simple_get_prints_key_then_value() {
        let p = Printer::new(OutputFormat::Simple, false);
        let r = range(vec![kv(b"foo", b"baz", 2, 3, 2), kv(b"foo2", b"", 4, 4, 1)]);
        assert_eq!(text(p.get(&r)), "foo\nbaz\nfoo2\n\n");
        let value_only = Printer {
            value_only: true,
            ..p
        };
        assert_eq!(text(value_only.get(&r)), "baz\n\n");
        let hex = Printer::new(OutputFormat::Simple, true);
        assert_eq!(
            text(hex.get(&range(vec![kv(b"k1", b"x", 1, 1, 1)]))),
            "\\x6b\\x31\n\\x78\n"
        );
    }

    #[test]
    fn get_json_matches_etcdctl() {
        let p = Printer::new(OutputFormat::Json, false);
        let r = range(vec![kv(b"foo", b"baz", 2, 3, 2)]);
        assert_eq!(
            text(p.get(&r)),
            r#"{"header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,"revision":4,"raft_term":2},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":3,"version":2,"value":"YmF6"}],"count":1}"#
                .to_string()
                + "\n"
        );
        let empty = RangeResponse {
            header: header(4),
            ..Default::default()
        };
        assert_eq!(
            text(p.get(&empty)),
            "{\"header\":{\"cluster_id\":324952591200643719,\"member_id\":3319814642761637952,\"revision\":4,\"raft_term\":2}}\n"
        );
    }

    #[test]
    fn get_fields_matches_etcdctl() {
        let p = Printer::new(OutputFormat::Fields, false);
        let r = range(vec![kv(b"k1", b"a<b>&\x01\xc3\xa9\xff \"q\"", 14, 26, 11)]);
        let expected = r#""ClusterID" : 324952591200643719
"MemberID" : 3319814642761637952
"Revision" : 4
"RaftTerm" : 2
"Key" : "k1"
"CreateRevision" : 14
"ModRevision" : 26
"Version" : 11
"Value" : "a<b>&\x01é\xff \"q\""
"Lease" : 0
"More" : false
"Count" : 1
"#;
        assert_eq!(text(p.get(&r)), expected);
    }

    #[test]
    fn put_and_del_simple_show_prev_kvs() {
        let p = Printer::new(OutputFormat::Simple, false);
        let put = PutResponse {
            header: header(5),
            prev_kv: Some(kv(b"foo", b"bar", 2, 2, 1)),
        };
        assert_eq!(text(p.put(&put)), "OK\nfoo\nbar\n");
        let del = DeleteRangeResponse {
            header: header(6),
            deleted: 1,
            prev_kvs: vec![kv(b"foo2", b"v2", 4, 4, 1)],
        };
        assert_eq!(text(p.del(&del)), "1\nfoo2\nv2\n");
        let json = Printer::new(OutputFormat::Json, false);
        assert_eq!(
            text(json.del(&DeleteRangeResponse {
                header: None,
                deleted: 0,
                prev_kvs: vec![]
            })),
            "{}\n"
        );
    }

    #[test]
    fn txn_outputs_match_etcdctl() {
        let inner = |revision| {
            Some(ResponseHeader {
                revision,
                ..Default::default()
            })
        };
        let r = TxnResponse {
            header: header(16),
            succeeded: true,
            responses: vec![
                ResponseOp {
                    response: Some(response_op::Response::ResponsePut(PutResponse {
                        header: inner(16),
                        prev_kv: None,
                    })),
                },
                ResponseOp {
                    response: Some(response_op::Response::ResponseRange(RangeResponse {
                        header: inner(16),
                        kvs: vec![kv(b"k1", b"over wrote", 14, 16, 3)],
                        more: false,
                        count: 1,
                    })),
                },
                ResponseOp {
                    response: Some(response_op::Response::ResponseDeleteRange(
                        DeleteRangeResponse {
                            header: inner(16),
                            deleted: 0,
                            prev_kvs: vec![],
                        },
                    )),
                },
            ],
        };
        let simple = Printer::new(OutputFormat::Simple, false);
        assert_eq!(
            text(simple.txn(&r)),
            "SUCCESS\n\nOK\n\nk1\nover wrote\n\n0\n"
        );
        let json = Printer::new(OutputFormat::Json, false);
        assert_eq!(
            text(json.txn(&r)),
            r#"{"header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,"revision":16,"raft_term":2},"succeeded":true,"responses":[{"Response":{"response_put":{"header":{"revision":16}}}},{"Response":{"response_range":{"header":{"revision":16},"kvs":[{"key":"azE=","create_revision":14,"mod_revision":16,"version":3,"value":"b3ZlciB3cm90ZQ=="}],"count":1}}},{"Response":{"response_delete_range":{"header":{"revision":16}}}}]}"#
                .to_string()
                + "\n"
        );
        let fields = text(Printer::new(OutputFormat::Fields, false).txn(&r));
        assert!(fields.starts_with("\"ClusterID\" : 324952591200643719\n"));
        assert!(fields.contains("\"Succeeded\" : true\n\"ClusterID\" : 0\n"));
        assert!(fields.ends_with("\"RaftTerm\" : 0\n\"Deleted\" : 0\n"));
    }

    #[test]
    fn table_is_refused_for_kv_like_etcdctl() {
        let p = Printer::new(OutputFormat::Table, false);
        let err = p.get(&RangeResponse::default()).unwrap_err();
        assert_eq!(
            err,
            CliError::new(exit::BAD_FEATURE, "table not supported as output format")
        );
    }
}
