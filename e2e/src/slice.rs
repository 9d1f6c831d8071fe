//! The slice of a history that shows a watch or lost-write failure: the operations on the key
//! around the revision in question, and what the watchers received there, instead of the whole
//! file (linearizability failures get a minimized history from the search instead).

use crate::history::{OpRecord, Output, WatchRecord};

/// Revisions on either side of the one in question.
const SPAN: i64 = 4;
/// At most this many lines of each kind.
const MAX_LINES: usize = 24;

/// The revision an operation observed or created, if it has one.
fn revision_of(op: &OpRecord) -> Option<i64> {
    op.write_revision().or(match &op.output {
        Output::Get { revision, .. } => Some(*revision),
        _ => None,
    })
}

/// Operations on `key` (or on any key, when `None`) whose revision lies within `SPAN` of `rev`,
/// with the operations of unknown outcome on that key that overlap them in time (one of those
/// may be the write in question); in call order.
pub fn ops_around<'a>(history: &'a [OpRecord], key: Option<&str>, rev: i64) -> Vec<&'a OpRecord> {
    let on_key = |op: &&OpRecord| key.is_none_or(|k| op.key == k);
    let near: Vec<&OpRecord> = history
        .iter()
        .filter(on_key)
        .filter(|op| revision_of(op).is_some_and(|r| (r - rev).abs() <= SPAN))
        .collect();
    let (lo, hi) = near.iter().fold((u64::MAX, 0), |(lo, hi), op| {
        (lo.min(op.call), hi.max(op.ret))
    });
    let mut out: Vec<&OpRecord> = history
        .iter()
        .filter(on_key)
        .filter(|op| {
            near.iter().any(|n| n.id == op.id && n.key == op.key)
                || (matches!(op.output, Output::Unknown { .. })
                    && !op.input.is_read()
                    && key.is_some()
                    && op.call <= hi
                    && op.ret >= lo)
        })
        .collect();
    out.sort_by_key(|op| (op.call, op.id));
    out.truncate(MAX_LINES);
    out
}

/// Watch records that touch `key` (any key when `None`) within `SPAN` revisions of `rev`: the
/// matching events of each response, (re)creations starting there, progress notices there.
pub fn watch_around(records: &[WatchRecord], key: Option<&str>, rev: i64) -> Vec<WatchRecord> {
    let near = |r: i64| (r - rev).abs() <= SPAN;
    let mut out = Vec::new();
    for r in records {
        let kept = match r {
            WatchRecord::Events { watcher, events } => {
                let events: Vec<_> = events
                    .iter()
                    .filter(|e| near(e.mod_revision) && key.is_none_or(|k| e.key == k))
                    .cloned()
                    .collect();
                (!events.is_empty()).then_some(WatchRecord::Events {
                    watcher: *watcher,
                    events,
                })
            }
            WatchRecord::Created { start_revision, .. } => near(*start_revision).then(|| r.clone()),
            WatchRecord::Progress { revision, .. } => near(*revision).then(|| r.clone()),
        };
        out.extend(kept);
        if out.len() >= MAX_LINES {
            break;
        }
    }
    out
}

/// Both slices as indented JSON lines, to append to a problem's text.
pub fn describe(
    history: &[OpRecord],
    records: &[WatchRecord],
    key: Option<&str>,
    rev: i64,
) -> String {
    let mut s = format!(
        "\n    history around revision {rev}{}:",
        key.map(|k| format!(" on {k}")).unwrap_or_default()
    );
    for op in ops_around(history, key, rev) {
        s.push_str(&format!(
            "\n      {}",
            serde_json::to_string(op).unwrap_or_default()
        ));
    }
    let w = watch_around(records, key, rev);
    if !w.is_empty() {
        s.push_str("\n    watch responses there:");
        for r in w {
            s.push_str(&format!(
                "\n      {}",
                serde_json::to_string(&r).unwrap_or_default()
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{EventKind, Input, WatchEvent};

    fn op(id: u64, key: &str, input: Input, output: Output, call: u64) -> OpRecord {
        OpRecord {
            id,
            client: 0,
            endpoint: String::new(),
            key: key.into(),
            input,
            output,
            call,
            ret: call + 5,
            txn: None,
        }
    }

    #[test]
    fn keeps_the_key_near_the_revision_and_the_unknown_writes_overlapping_it() {
        let put = |v: &str| Input::Put { value: v.into() };
        let h = vec![
            op(1, "a", put("x"), Output::Put { revision: 2 }, 0),
            op(2, "b", put("y"), Output::Put { revision: 20 }, 10),
            op(3, "a", put("z"), Output::Put { revision: 21 }, 20),
            op(
                4,
                "a",
                put("q"),
                Output::Unknown {
                    error: "timeout".into(),
                },
                21,
            ),
            op(5, "a", put("w"), Output::Put { revision: 40 }, 60),
        ];
        let ids: Vec<u64> = ops_around(&h, Some("a"), 21).iter().map(|o| o.id).collect();
        assert_eq!(ids, vec![3, 4]);
        let recs = vec![
            WatchRecord::Events {
                watcher: 0,
                events: vec![
                    WatchEvent {
                        key: "a".into(),
                        kind: EventKind::Put,
                        value: Some("x".into()),
                        mod_revision: 2,
                    },
                    WatchEvent {
                        key: "a".into(),
                        kind: EventKind::Put,
                        value: Some("z".into()),
                        mod_revision: 21,
                    },
                ],
            },
            WatchRecord::Progress {
                watcher: 0,
                revision: 40,
            },
        ];
        let w = watch_around(&recs, Some("a"), 21);
        assert_eq!(w.len(), 1);
        let WatchRecord::Events { events, .. } = &w[0] else {
            panic!("{w:?}");
        };
        assert_eq!(events.len(), 1);
        assert!(describe(&h, &recs, Some("a"), 21).contains("\"id\":3"));
    }
}
