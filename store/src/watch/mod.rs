//! Watches: which events a watcher wants, and how its responses are shaped.
//!
//! Live events come from the state machine's per-revision broadcast; a watcher that starts in the
//! past, or falls behind (its stream is slow and the broadcast buffer overflowed), reads history
//! from MVCC until it has caught up ([`history`]). Writers never wait for watchers. The stream
//! loop is in [`stream`]; the gRPC glue in `api::watch`.

pub mod history;
pub mod stream;

use prost::Message;

use crate::mvcc::KeyRange;
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::WatchCreateRequest;
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::Event;

/// What one watcher asked for.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub range: KeyRange,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    pub progress_notify: bool,
    pub fragment: bool,
}

impl WatchSpec {
    pub fn from_request(req: &WatchCreateRequest) -> Self {
        let has = |f: FilterType| req.filters.contains(&(f as i32));
        Self {
            range: KeyRange::new(&req.key, &req.range_end),
            no_put: has(FilterType::Noput),
            no_delete: has(FilterType::Nodelete),
            prev_kv: req.prev_kv,
            progress_notify: req.progress_notify,
            fragment: req.fragment,
        }
    }

    /// Whether this watcher receives `event`.
    pub fn wants(&self, event: &Event) -> bool {
        let Some(kv) = &event.kv else { return false };
        let is_put = event.r#type == EventType::Put as i32;
        if (is_put && self.no_put) || (!is_put && self.no_delete) {
            return false;
        }
        self.range.contains(&kv.key)
    }

    /// The events of one revision this watcher receives, shaped as it asked.
    pub fn select(&self, events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|e| self.wants(e))
            .map(|e| {
                let mut e = e.clone();
                if !self.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }
}

/// Splits events into fragments below `limit` encoded bytes (a single event may exceed it), as
/// etcd does for watchers that opted into fragmentation: only lists of at least `limit` bytes
/// with two or more events are split.
pub fn fragments(events: Vec<Event>, limit: usize) -> Vec<Vec<Event>> {
    let total: usize = events.iter().map(|e| e.encoded_len() + 4).sum();
    if events.len() < 2 || total < limit {
        return vec![events];
    }
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for e in events {
        let len = e.encoded_len() + 4;
        if !cur.is_empty() && size + len >= limit {
            out.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += len;
        cur.push(e);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::KeyValue;

    fn ev(t: EventType, key: &str, value_len: usize) -> Event {
        Event {
            r#type: t as i32,
            kv: Some(KeyValue {
                key: key.into(),
                value: vec![b'x'; value_len],
                ..Default::default()
            }),
            prev_kv: Some(KeyValue {
                key: key.into(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn filters_and_ranges() {
        let req = WatchCreateRequest {
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            filters: vec![FilterType::Nodelete as i32],
            ..Default::default()
        };
        let spec = WatchSpec::from_request(&req);
        let got = spec.select(&[
            ev(EventType::Put, "b", 1),
            ev(EventType::Delete, "b", 0),
            ev(EventType::Put, "c", 1),
        ]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kv.as_ref().unwrap().key, b"b");
        assert!(got[0].prev_kv.is_none(), "prev_kv only when asked");
    }

    #[test]
    fn fragments_respect_the_limit_and_keep_order() {
        let events: Vec<Event> = (0..10)
            .map(|i| ev(EventType::Put, &format!("k{i}"), 100))
            .collect();
        let parts = fragments(events.clone(), 300);
        assert!(parts.len() > 1);
        assert_eq!(parts.concat(), events);
        assert_eq!(fragments(events.clone(), 1 << 20).len(), 1);
        // A single huge event is never split.
        assert_eq!(
            fragments(vec![ev(EventType::Put, "big", 10_000)], 10).len(),
            1
        );
    }
}
