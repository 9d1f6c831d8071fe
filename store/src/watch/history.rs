//! Reading past events from MVCC's revision index, for watchers that start in the past or fell
//! behind.

use std::ops::Bound;

use crate::mvcc::{Mvcc, MvccError, Version};
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::{Event, KeyValue};
use crate::storage::space;

/// Events of revisions `from..=to`, whole revisions only, stopping after the revision in which
/// `max_events` is reached. Returns the events (with their revision) and the next revision to read.
pub fn read(
    mvcc: &Mvcc,
    from: i64,
    to: i64,
    max_events: usize,
) -> Result<(Vec<(i64, Event)>, i64), MvccError> {
    let start = crate::mvcc::revision_key(from, 0);
    let end = crate::mvcc::revision_key(to + 1, 0);
    let mut out: Vec<(i64, Event)> = Vec::new();
    let mut next = to + 1;
    for item in mvcc.backend_scan(Bound::Included(&start), Bound::Excluded(&end)) {
        let (raw_key, user_key) = item?;
        if raw_key.first() != Some(&space::REVISIONS) {
            break;
        }
        let (rev, _) = crate::mvcc::decode_revision_key(&raw_key)
            .ok_or_else(|| MvccError::Storage(format!("corrupt revision entry {raw_key:?}")))?;
        if out.len() >= max_events && out.last().is_some_and(|(r, _)| *r != rev) {
            next = rev;
            break;
        }
        let Some(raw) = mvcc.raw_version(&user_key, rev)? else {
            // Removed by a compaction that ran while we read: the caller re-checks compaction.
            continue;
        };
        let v = Version::decode(&raw)
            .ok_or_else(|| MvccError::Storage(format!("corrupt record for {user_key:?}")))?;
        let prev_kv = mvcc.get(&user_key, rev - 1)?;
        let event = if v.tombstone {
            Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: user_key.to_vec(),
                    mod_revision: rev,
                    ..Default::default()
                }),
                prev_kv,
            }
        } else {
            Event {
                r#type: EventType::Put as i32,
                kv: Some(v.into_kv(user_key.to_vec(), rev)),
                prev_kv,
            }
        };
        out.push((rev, event));
    }
    Ok((out, next))
}
