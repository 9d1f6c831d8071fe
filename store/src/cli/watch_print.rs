//! How `watch` prints one response, per `-w` format, as pure functions.
//!
//! etcdctl prints clientv3's `WatchResponse` (not the wire message): its JSON has Go field names
//! (`Header`, `Events`, `CompactRevision`, `Canceled`, `Created`) and `Events` is never null;
//! `-w protobuf` re-encodes only the header and the events.
use prost::Message as _;

use super::gofmt::JsonObject;
use super::output::{fields_header, fields_kv, json_header, json_kv, Printer};
use super::{exit, CliError, OutputFormat};
use crate::proto::etcdserverpb::WatchResponse;
use crate::proto::mvccpb::{event::EventType, Event};

/// Checked before watching: etcdctl has no table or other unknown form for watch responses.
pub fn check_format(format: OutputFormat) -> Result<(), CliError> {
    if format == OutputFormat::Table {
        return Err(CliError::new(
            exit::BAD_FEATURE,
            "table not supported as output format",
        ));
    }
    Ok(())
}

fn type_name(e: &Event) -> &'static str {
    match EventType::try_from(e.r#type) {
        Ok(EventType::Delete) => "DELETE",
        _ => "PUT",
    }
}

/// Go's `%q` of the event type, as the exec hook's `ETCD_WATCH_EVENT_TYPE` carries it.
pub fn quoted_type(e: &Event) -> String {
    format!("\"{}\"", type_name(e))
}

fn json_event(e: &Event) -> String {
    JsonObject::new()
        .int("type", i64::from(e.r#type))
        .object("kv", e.kv.as_ref().map(json_kv))
        .object("prev_kv", e.prev_kv.as_ref().map(json_kv))
        .finish()
}

/// The bytes etcdctl writes to stdout for one delivered response.
pub fn format_response(p: &Printer, r: &WatchResponse) -> Vec<u8> {
    match p.format {
        OutputFormat::Json => {
            let events: Vec<String> = r.events.iter().map(json_event).collect();
            let obj = JsonObject::new()
                .raw(
                    "Header",
                    &json_header(&r.header).unwrap_or_else(|| "{}".to_string()),
                )
                .raw("Events", &format!("[{}]", events.join(",")))
                .raw("CompactRevision", &r.compact_revision.to_string())
                .raw("Canceled", if r.canceled { "true" } else { "false" })
                .raw("Created", if r.created { "true" } else { "false" })
                .finish();
            format!("{obj}\n").into_bytes()
        }
        OutputFormat::Protobuf => WatchResponse {
            header: Some(r.header.unwrap_or_default()),
            events: r.events.clone(),
            ..Default::default()
        }
        .encode_to_vec(),
        OutputFormat::Fields => {
            let mut out = String::new();
            fields_header(&mut out, &r.header);
            for e in &r.events {
                out.push_str(&format!("\"Type\" : {}\n", type_name(e)));
                if let Some(prev) = &e.prev_kv {
                    fields_kv(&mut out, "Prev", prev);
                }
                fields_kv(&mut out, "", &e.kv.clone().unwrap_or_default());
            }
            out.into_bytes()
        }
        OutputFormat::Simple | OutputFormat::Table => {
            let mut out = Vec::new();
            for e in &r.events {
                out.extend_from_slice(type_name(e).as_bytes());
                out.push(b'\n');
                if let Some(prev) = &e.prev_kv {
                    p.simple_kv(&mut out, prev);
                }
                p.simple_kv(&mut out, &e.kv.clone().unwrap_or_default());
            }
            out
        }
    }
}

/// clientv3's `IsProgressNotify`: nothing happened, but the revision moved on.
pub fn is_progress_notify(r: &WatchResponse) -> bool {
    r.events.is_empty()
        && !r.canceled
        && !r.created
        && r.compact_revision == 0
        && r.header.map(|h| h.revision).unwrap_or(0) != 0
}

/// clientv3's `WatchResponse.Err()` for a cancelled watch, worded as etcdctl prints it.
pub fn cancel_reason(r: &WatchResponse) -> String {
    if r.compact_revision != 0 {
        return "etcdserver: mvcc: required revision has been compacted".to_string();
    }
    if r.cancel_reason.is_empty() {
        return "etcdserver: mvcc: required revision is a future revision".to_string();
    }
    if r.cancel_reason.starts_with("etcdserver: ") {
        return r.cancel_reason.clone();
    }
    format!(
        "rpc error: code = FailedPrecondition desc = {}",
        r.cancel_reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::ResponseHeader;
    use crate::proto::mvccpb::KeyValue;

    fn kv(value: &[u8], create: i64, modr: i64, version: i64) -> KeyValue {
        KeyValue {
            key: b"foo".to_vec(),
            create_revision: create,
            mod_revision: modr,
            version,
            value: value.to_vec(),
            lease: 0,
        }
    }

    fn sample() -> WatchResponse {
        WatchResponse {
            header: Some(ResponseHeader {
                cluster_id: 2037210783374497686,
                member_id: 13195394291058371180,
                revision: 7,
                raft_term: 2,
            }),
            events: vec![
                Event {
                    r#type: EventType::Put as i32,
                    kv: Some(kv(b"b2", 2, 5, 2)),
                    prev_kv: Some(kv(b"bar", 2, 2, 1)),
                },
                Event {
                    r#type: EventType::Delete as i32,
                    kv: Some(KeyValue {
                        key: b"foo".to_vec(),
                        mod_revision: 6,
                        ..Default::default()
                    }),
                    prev_kv: None,
                },
            ],
            ..Default::default()
        }
    }

    fn printer(format: OutputFormat) -> Printer {
        Printer::new(format, false)
    }

    #[test]
    fn simple_prints_type_prev_and_kv_lines() {
        let out = format_response(&printer(OutputFormat::Simple), &sample());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "PUT\nfoo\nbar\nfoo\nb2\nDELETE\nfoo\n\n"
        );
    }

    #[test]
    fn json_is_clientv3s_struct() {
        let out = format_response(&printer(OutputFormat::Json), &sample());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"Header\":{\"cluster_id\":2037210783374497686,\"member_id\":13195394291058371180,\"revision\":7,\"raft_term\":2},\"Events\":[{\"kv\":{\"key\":\"Zm9v\",\"create_revision\":2,\"mod_revision\":5,\"version\":2,\"value\":\"YjI=\"},\"prev_kv\":{\"key\":\"Zm9v\",\"create_revision\":2,\"mod_revision\":2,\"version\":1,\"value\":\"YmFy\"}},{\"type\":1,\"kv\":{\"key\":\"Zm9v\",\"mod_revision\":6}}],\"CompactRevision\":0,\"Canceled\":false,\"Created\":false}\n"
        );
        let compacted = WatchResponse {
            compact_revision: 5,
            canceled: true,
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(format_response(&printer(OutputFormat::Json), &compacted)).unwrap(),
            "{\"Header\":{},\"Events\":[],\"CompactRevision\":5,\"Canceled\":true,\"Created\":false}\n"
        );
        assert_eq!(
            cancel_reason(&compacted),
            "etcdserver: mvcc: required revision has been compacted"
        );
    }

    #[test]
    fn fields_and_progress() {
        let out =
            String::from_utf8(format_response(&printer(OutputFormat::Fields), &sample())).unwrap();
        assert!(out.starts_with("\"ClusterID\" : 2037210783374497686\n"));
        assert!(out.contains("\"Type\" : PUT\n\"PrevKey\" : \"foo\"\n"));
        assert!(out.ends_with("\"Type\" : DELETE\n\"Key\" : \"foo\"\n\"CreateRevision\" : 0\n\"ModRevision\" : 6\n\"Version\" : 0\n\"Value\" : \"\"\n\"Lease\" : 0\n"));
        let mut progress = sample();
        progress.events.clear();
        assert!(is_progress_notify(&progress));
        assert!(!is_progress_notify(&sample()));
        assert_eq!(quoted_type(&sample().events[1]), "\"DELETE\"");
    }
}
