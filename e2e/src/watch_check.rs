//! Watch guarantees, checked against the KV history: every watcher sees exactly the committed
//! events after its start revision, once each, in revision order, a revision never split across
//! responses (atomic), resumed without gaps after a broken stream, with progress notices
//! (bookmarks) that no later event contradicts, and every acknowledged write among them.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::history::{pair_partner, EventKind, Input, OpRecord, Output, WatchEvent, WatchRecord};

#[derive(Default)]
struct Seen {
    start: Option<i64>,
    /// (revision, key) -> (response number, event).
    events: BTreeMap<(i64, String), (usize, WatchEvent)>,
    last: i64,
}

/// Checks the watch records; `final_revision` is the store's revision once the run settled
/// (every watcher must have caught up to it). Returns the problems found.
pub fn check_watches(
    records: &[WatchRecord],
    history: &[OpRecord],
    final_revision: i64,
) -> Vec<String> {
    check_watches_located(records, history, final_revision)
        .into_iter()
        .map(|p| p.text)
        .collect()
}

/// A watch problem, with the key (when there is one) and revision where it shows, so the
/// report can print the history around it (`slice`).
#[derive(Debug)]
pub struct WatchProblem {
    pub text: String,
    pub key: Option<String>,
    pub revision: i64,
}

fn push(problems: &mut Vec<WatchProblem>, key: Option<&str>, revision: i64, text: String) {
    problems.push(WatchProblem {
        text,
        key: key.map(String::from),
        revision,
    });
}

/// `check_watches`, each problem with where it shows.
pub fn check_watches_located(
    records: &[WatchRecord],
    history: &[OpRecord],
    final_revision: i64,
) -> Vec<WatchProblem> {
    let mut problems = Vec::new();
    let mut watchers: BTreeMap<usize, Seen> = BTreeMap::new();
    let mut rev_response: HashMap<(usize, i64), usize> = HashMap::new();
    for (n, r) in records.iter().enumerate() {
        match r {
            WatchRecord::Created {
                watcher,
                start_revision,
                ..
            } => {
                let w = watchers.entry(*watcher).or_default();
                match w.start {
                    None => w.start = Some(*start_revision),
                    // Resuming must continue right after what was seen (the harness resumes
                    // from last + 1; anything else would hide a gap).
                    Some(_) if *start_revision > w.last + 1 => push(
                        &mut problems,
                        None,
                        *start_revision,
                        format!(
                        "watcher {watcher} resumed at {start_revision} after seeing only up to {}",
                        w.last
                    ),
                    ),
                    Some(_) => {}
                }
            }
            WatchRecord::Progress { watcher, revision } => {
                let w = watchers.entry(*watcher).or_default();
                w.last = w.last.max(*revision);
            }
            WatchRecord::Events { watcher, events } => {
                let w = watchers.entry(*watcher).or_default();
                for e in events {
                    let rev = e.mod_revision;
                    if rev <= w.last
                        && !(rev == w.last && same_response(&rev_response, *watcher, rev, n))
                    {
                        push(&mut problems, Some(&e.key), rev, format!(
                            "watcher {watcher}: event {} at revision {rev} arrived after revision {} was delivered or bookmarked",
                            e.key, w.last
                        ));
                    }
                    if let Some(prev) = rev_response.insert((*watcher, rev), n) {
                        if prev != n {
                            push(
                                &mut problems,
                                Some(&e.key),
                                rev,
                                format!(
                                    "watcher {watcher}: revision {rev} split across two responses"
                                ),
                            );
                        }
                    }
                    if w.events
                        .insert((rev, e.key.clone()), (n, e.clone()))
                        .is_some()
                    {
                        push(
                            &mut problems,
                            Some(&e.key),
                            rev,
                            format!(
                                "watcher {watcher}: event {} at revision {rev} delivered twice",
                                e.key
                            ),
                        );
                    }
                    if w.start.is_some_and(|s| rev < s) {
                        push(
                            &mut problems,
                            Some(&e.key),
                            rev,
                            format!(
                            "watcher {watcher}: event at revision {rev} before its start revision"
                        ),
                        );
                    }
                    w.last = w.last.max(rev);
                }
            }
        }
    }

    // All watchers agree on each (revision, key).
    let mut log: BTreeMap<(i64, String), WatchEvent> = BTreeMap::new();
    for (id, w) in &watchers {
        for (k, (_, e)) in &w.events {
            match log.get(k) {
                Some(other) if other != e => push(
                    &mut problems,
                    Some(&e.key),
                    e.mod_revision,
                    format!("watcher {id} saw {e:?} where another watcher saw {other:?}"),
                ),
                Some(_) => {}
                None => {
                    log.insert(k.clone(), e.clone());
                }
            }
        }
    }

    // Every watcher saw every event of the log within what it covered (reliable), and caught up.
    for (id, w) in &watchers {
        let start = w.start.unwrap_or(1);
        if w.last < final_revision {
            push(
                &mut problems,
                None,
                w.last,
                format!(
                    "watcher {id} only reached revision {} of {final_revision}",
                    w.last
                ),
            );
        }
        for (k, e) in log.range((start, String::new())..) {
            if k.0 > w.last {
                break;
            }
            if !w.events.contains_key(k) {
                push(
                    &mut problems,
                    Some(&e.key),
                    e.mod_revision,
                    format!("watcher {id} missed {e:?}"),
                );
            }
        }
    }

    // The log agrees with the KV history.
    let mut writer_of: HashMap<&str, &OpRecord> = HashMap::new();
    let mut deleters: HashSet<(&str, i64)> = HashSet::new();
    let mut maybe_deleted: HashSet<&str> = HashSet::new();
    for op in history {
        if let Some(v) = op.written_value() {
            writer_of.insert(v, op);
        }
        match (&op.input, &op.output) {
            (Input::Delete, Output::Delete { revision, .. }) => {
                deleters.insert((op.key.as_str(), *revision));
            }
            // Revokes, and expiries of the leases expiring puts attached, delete at revisions
            // no client was told.
            (Input::Delete | Input::Revoke { .. }, Output::Unknown { .. })
            | (Input::Revoke { .. } | Input::PutExpiring { .. }, _) => {
                maybe_deleted.insert(op.key.as_str());
            }
            _ => {}
        }
        if let Some(rev) = op.write_revision() {
            let covered: Vec<usize> = watchers
                .iter()
                .filter(|(_, w)| w.start.unwrap_or(1) <= rev && rev <= w.last)
                .map(|(id, _)| *id)
                .collect();
            let expected = WatchEvent {
                key: op.key.clone(),
                kind: if matches!(op.input, Input::Delete) {
                    EventKind::Delete
                } else {
                    EventKind::Put
                },
                value: op.written_value().map(String::from),
                mod_revision: rev,
            };
            match log.get(&(rev, op.key.clone())) {
                Some(e) if *e == expected => {}
                Some(e) => push(
                    &mut problems,
                    Some(&op.key),
                    rev,
                    format!("op {} wrote {expected:?} but watchers saw {e:?}", op.id),
                ),
                None if !covered.is_empty() => push(
                    &mut problems,
                    Some(&op.key),
                    rev,
                    format!(
                        "acknowledged op {} ({expected:?}) never reached watchers {covered:?}",
                        op.id
                    ),
                ),
                None => {}
            }
        }
    }
    for e in log.values() {
        match e.kind {
            EventKind::Put => {
                let known = e
                    .value
                    .as_deref()
                    .and_then(|v| writer_of.get(v))
                    .filter(|op| op.key == e.key);
                match known {
                    None => push(
                        &mut problems,
                        Some(&e.key),
                        e.mod_revision,
                        format!("watch event {e:?} was written by no client"),
                    ),
                    Some(op) => {
                        if let Some(rev) = op.write_revision() {
                            if rev != e.mod_revision {
                                push(
                                    &mut problems,
                                    Some(&e.key),
                                    e.mod_revision,
                                    format!(
                                        "watch event {e:?} but op {} was acknowledged at {rev}",
                                        op.id
                                    ),
                                );
                            }
                        }
                    }
                }
            }
            EventKind::Delete => {
                if !deleters.contains(&(e.key.as_str(), e.mod_revision))
                    && !maybe_deleted.contains(e.key.as_str())
                {
                    push(
                        &mut problems,
                        Some(&e.key),
                        e.mod_revision,
                        format!("watch event {e:?} was deleted by no client"),
                    );
                }
            }
        }
    }

    // A pair txn's two writes are one revision: each event on a pair key has its partner's
    // event at the same revision (and the split check above puts them in one response).
    for (rev, key) in log.keys() {
        if let Some(partner) = pair_partner(key) {
            if !log.contains_key(&(*rev, partner.clone())) {
                push(
                    &mut problems,
                    Some(key),
                    *rev,
                    format!("watchers saw {key} change at revision {rev} without {partner}"),
                );
            }
        }
    }

    // No revision is missing from the log: every revision the run created was a write under the
    // watched prefix, so a gap is an event every watcher lost.
    let revs: Vec<i64> = log.keys().map(|(r, _)| *r).collect();
    if let (Some(&lo), Some(&hi)) = (revs.first(), revs.last()) {
        let present: HashSet<i64> = revs.iter().copied().collect();
        let missing: Vec<i64> = (lo..=hi)
            .filter(|r| !present.contains(r))
            .take(10)
            .collect();
        if !missing.is_empty() {
            push(
                &mut problems,
                None,
                missing[0],
                format!("no watcher saw revisions {missing:?}"),
            );
        }
    }
    problems
}

/// Keys that must be gone once their leases expired: the watchers' last event on each is a
/// delete (`keys` are those the run saw absent at its end).
pub fn check_expired_seen(records: &[WatchRecord], keys: &[String]) -> Vec<String> {
    let mut last: HashMap<&str, &WatchEvent> = HashMap::new();
    for r in records {
        if let WatchRecord::Events { events, .. } = r {
            for e in events {
                let newer = last
                    .get(e.key.as_str())
                    .is_none_or(|l| l.mod_revision <= e.mod_revision);
                if newer {
                    last.insert(e.key.as_str(), e);
                }
            }
        }
    }
    keys.iter()
        .filter_map(|k| match last.get(k.as_str()) {
            Some(e) if e.kind == EventKind::Put => Some(format!(
                "{k} expired, but the watchers' last event on it is {e:?}"
            )),
            _ => None,
        })
        .collect()
}

fn same_response(map: &HashMap<(usize, i64), usize>, watcher: usize, rev: i64, n: usize) -> bool {
    map.get(&(watcher, rev)) == Some(&n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_op(id: u64, key: &str, v: &str, rev: i64) -> OpRecord {
        OpRecord {
            id,
            client: 0,
            endpoint: String::new(),
            key: key.into(),
            input: Input::Put { value: v.into() },
            output: Output::Put { revision: rev },
            call: id * 10,
            ret: id * 10 + 5,
            txn: None,
        }
    }

    fn ev(key: &str, v: &str, rev: i64) -> WatchEvent {
        WatchEvent {
            key: key.into(),
            kind: EventKind::Put,
            value: Some(v.into()),
            mod_revision: rev,
        }
    }

    fn created(w: usize, start: i64) -> WatchRecord {
        WatchRecord::Created {
            watcher: w,
            start_revision: start,
            endpoint: "e".into(),
        }
    }

    fn events(w: usize, e: Vec<WatchEvent>) -> WatchRecord {
        WatchRecord::Events {
            watcher: w,
            events: e,
        }
    }

    fn history() -> Vec<OpRecord> {
        vec![
            put_op(1, "a", "x", 2),
            put_op(2, "b", "y", 3),
            put_op(3, "a", "z", 4),
        ]
    }

    #[test]
    fn a_complete_resumed_watch_passes() {
        let recs = vec![
            created(0, 1),
            events(0, vec![ev("a", "x", 2)]),
            created(0, 3),
            events(0, vec![ev("b", "y", 3)]),
            WatchRecord::Progress {
                watcher: 0,
                revision: 3,
            },
            events(0, vec![ev("a", "z", 4)]),
        ];
        assert_eq!(check_watches(&recs, &history(), 4), Vec::<String>::new());
    }

    #[test]
    fn missing_duplicate_and_reordered_events_are_caught() {
        let missed = vec![
            created(0, 1),
            events(0, vec![ev("a", "x", 2), ev("a", "z", 4)]),
        ];
        assert!(!check_watches(&missed, &history(), 4).is_empty());
        let dup = vec![
            created(0, 1),
            events(0, vec![ev("a", "x", 2)]),
            events(0, vec![ev("a", "x", 2)]),
            events(0, vec![ev("b", "y", 3), ev("a", "z", 4)]),
        ];
        assert!(!check_watches(&dup, &history(), 4).is_empty());
        let reordered = vec![
            created(0, 1),
            events(0, vec![ev("b", "y", 3)]),
            events(0, vec![ev("a", "x", 2)]),
            events(0, vec![ev("a", "z", 4)]),
        ];
        assert!(!check_watches(&reordered, &history(), 4).is_empty());
    }

    #[test]
    fn an_event_before_a_bookmark_it_postdates_is_caught() {
        let recs = vec![
            created(0, 1),
            events(0, vec![ev("a", "x", 2)]),
            WatchRecord::Progress {
                watcher: 0,
                revision: 3,
            },
            events(0, vec![ev("b", "y", 3), ev("a", "z", 4)]),
        ];
        assert!(!check_watches(&recs, &history(), 4).is_empty());
    }

    #[test]
    fn a_watcher_that_never_caught_up_or_saw_a_phantom_write_is_caught() {
        let behind = vec![
            created(0, 1),
            events(0, vec![ev("a", "x", 2), ev("b", "y", 3)]),
        ];
        assert!(!check_watches(&behind, &history(), 4).is_empty());
        let phantom = vec![
            created(0, 1),
            events(0, vec![ev("a", "x", 2)]),
            events(0, vec![ev("b", "y", 3)]),
            events(0, vec![ev("a", "q", 4)]),
        ];
        assert!(!check_watches(&phantom, &history(), 4).is_empty());
    }

    #[test]
    fn a_pair_write_is_seen_whole_and_an_expiry_is_seen() {
        let h = vec![
            OpRecord {
                txn: Some(9),
                ..put_op(1, "/t/pa0", "v/a", 2)
            },
            OpRecord {
                txn: Some(9),
                ..put_op(2, "/t/pb0", "v/b", 2)
            },
        ];
        let whole = vec![
            created(0, 1),
            events(0, vec![ev("/t/pa0", "v/a", 2), ev("/t/pb0", "v/b", 2)]),
        ];
        assert_eq!(check_watches(&whole, &h, 2), Vec::<String>::new());
        let torn = vec![created(0, 1), events(0, vec![ev("/t/pa0", "v/a", 2)])];
        assert!(!check_watches(&torn, &h, 2).is_empty());

        let keys = vec!["/t/e0".to_string()];
        let put_only = vec![created(0, 1), events(0, vec![ev("/t/e0", "x", 2)])];
        assert_eq!(check_expired_seen(&put_only, &keys).len(), 1);
        let deleted = vec![
            created(0, 1),
            events(0, vec![ev("/t/e0", "x", 2)]),
            events(
                0,
                vec![WatchEvent {
                    key: "/t/e0".into(),
                    kind: EventKind::Delete,
                    value: None,
                    mod_revision: 3,
                }],
            ),
        ];
        assert!(check_expired_seen(&deleted, &keys).is_empty());
    }

    #[test]
    fn watchers_must_agree() {
        let recs = vec![
            created(0, 1),
            created(1, 1),
            events(0, vec![ev("a", "x", 2)]),
            events(1, vec![ev("a", "x", 2)]),
            events(0, vec![ev("b", "y", 3)]),
            events(1, vec![ev("b", "q", 3)]),
            events(0, vec![ev("a", "z", 4)]),
            events(1, vec![ev("a", "z", 4)]),
        ];
        assert!(!check_watches(&recs, &history(), 4).is_empty());
    }
}
