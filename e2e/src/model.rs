//! The sequential specification of one etcd key, and the KV history checks built on it:
//! linearizability per key (P-compositionality) and the revision rules etcd promises.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::history::{Input, OpRecord, Output};
use crate::linearizability::{self, Model, Operation, Verdict};

/// One key: its value and the lease it is attached to.
pub struct KvModel;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct KeyState {
    pub value: Option<String>,
    pub lease: Option<i64>,
}

impl Model for KvModel {
    type State = KeyState;
    type Input = Input;
    type Output = Output;

    fn init() -> KeyState {
        KeyState::default()
    }

    fn step(s: &KeyState, input: &Input, output: &Output) -> Option<KeyState> {
        let unknown = matches!(output, Output::Unknown { .. });
        match input {
            Input::Get => match output {
                Output::Get { value, .. } if *value == s.value => Some(s.clone()),
                _ if unknown => Some(s.clone()),
                _ => None,
            },
            Input::Put { value } => Some(KeyState {
                value: Some(value.clone()),
                lease: None,
            }),
            Input::PutLease { value, lease } | Input::PutExpiring { value, lease, .. } => {
                Some(KeyState {
                    value: Some(value.clone()),
                    lease: Some(*lease),
                })
            }
            Input::Cas { expect, value } => {
                let matches = s.value == *expect;
                if let Output::Cas { succeeded, .. } = output {
                    if *succeeded != matches {
                        return None;
                    }
                }
                Some(if matches {
                    KeyState {
                        value: Some(value.clone()),
                        lease: None,
                    }
                } else {
                    s.clone()
                })
            }
            Input::Delete => {
                if let Output::Delete { deleted, .. } = output {
                    if (*deleted > 0) != s.value.is_some() {
                        return None;
                    }
                }
                Some(KeyState::default())
            }
            Input::Revoke { lease } => Some(if s.lease == Some(*lease) {
                KeyState::default()
            } else {
                s.clone()
            }),
        }
    }
}

/// A key whose history is not linearizable, with a minimized history that shows it.
#[derive(Debug)]
pub struct KeyViolation {
    pub key: String,
    pub minimal: Vec<OpRecord>,
    pub longest_prefix: Vec<u64>,
}

/// The verdict on a whole KV history.
#[derive(Debug, Default)]
pub struct LinReport {
    pub keys: usize,
    pub operations: usize,
    pub violations: Vec<KeyViolation>,
    /// Keys whose search hit its deadline.
    pub undecided: Vec<String>,
}

/// Splits the history by key and checks each key (failed reads are dropped: they have no effect).
/// Each put on an expiring lease brings a synthetic operation: the lease's expiry, a revoke at
/// an unknown time after the put's call (see `expiry_ops`).
pub fn check_linearizable(history: &[OpRecord], per_key_budget: Duration) -> LinReport {
    let mut by_key: BTreeMap<&str, Vec<&OpRecord>> = BTreeMap::new();
    for op in history {
        if op.input.is_read() && matches!(op.output, Output::Unknown { .. }) {
            continue;
        }
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut report = LinReport {
        keys: by_key.len(),
        operations: by_key.values().map(Vec::len).sum(),
        ..Default::default()
    };
    for (key, ops) in by_key {
        let mut recs: Vec<OpRecord> = ops.iter().map(|o| (*o).clone()).collect();
        let mut lin: Vec<Operation<Input, Output>> = ops.iter().map(|o| to_operation(o)).collect();
        for (rec, op) in expiry_ops(&ops) {
            recs.push(rec);
            lin.push(op);
        }
        match linearizability::check::<KvModel>(&lin, Some(Instant::now() + per_key_budget)) {
            Verdict::Linearizable => {}
            Verdict::Unknown => report.undecided.push(key.to_string()),
            Verdict::Violation { longest_prefix } => {
                let kept = linearizability::minimize::<KvModel>(
                    &lin,
                    Instant::now() + Duration::from_secs(30),
                );
                report.violations.push(KeyViolation {
                    key: key.to_string(),
                    minimal: kept.iter().map(|&i| recs[i].clone()).collect(),
                    longest_prefix: longest_prefix.iter().map(|&i| recs[i].id).collect(),
                });
            }
        }
    }
    report
}

/// The expiry of each lease a `PutExpiring` attached to this key, as a revoke of that lease:
/// called with the put, returning never, unless a later operation shows the key no longer
/// carries the lease. Each lease is attached by one put only, so once an operation that
/// started after the put returned has written the key, or read a value other than the put's,
/// the key is off that lease for good and the expiry is a no-op from then on: bounding it by
/// that operation's return accepts exactly the same histories and keeps the search small.
fn expiry_ops(ops: &[&OpRecord]) -> Vec<(OpRecord, Operation<Input, Output>)> {
    let mut out = Vec::new();
    for put in ops {
        let Input::PutExpiring { value, lease, .. } = &put.input else {
            continue;
        };
        let acked = !matches!(put.output, Output::Unknown { .. });
        let off_lease = |o: &&&OpRecord| {
            o.call > put.ret
                && match &o.output {
                    Output::Get { value: v, .. } => v.as_ref() != Some(value),
                    _ => o.write_revision().is_some(),
                }
        };
        let ret = if acked {
            ops.iter().filter(off_lease).map(|o| o.ret).min()
        } else {
            None
        };
        let input = Input::Revoke { lease: *lease };
        let output = Output::Unknown {
            error: format!("lease {lease} expires (synthetic)"),
        };
        out.push((
            OpRecord {
                id: 0,
                client: usize::MAX,
                endpoint: String::new(),
                key: put.key.clone(),
                input: input.clone(),
                output: output.clone(),
                call: put.call,
                ret: ret.unwrap_or(u64::MAX),
                txn: None,
            },
            Operation {
                input,
                output,
                call: put.call,
                ret,
            },
        ));
    }
    out
}

fn to_operation(o: &OpRecord) -> Operation<Input, Output> {
    let unknown = matches!(o.output, Output::Unknown { .. });
    Operation {
        input: o.input.clone(),
        output: o.output.clone(),
        call: o.call,
        ret: if unknown { None } else { Some(o.ret) },
    }
}

/// Cross-key atomicity of the pair txns: a txn reading both keys of a pair sees the two halves
/// of one pair write (values `<v>/a` and `<v>/b`, one mod_revision), or neither key; a pair
/// write's two puts carry one revision.
pub fn check_pairs(history: &[OpRecord]) -> Vec<String> {
    let mut groups: BTreeMap<u64, Vec<&OpRecord>> = BTreeMap::new();
    for op in history {
        if let Some(t) = op.txn {
            groups.entry(t).or_default().push(op);
        }
    }
    let mut problems = Vec::new();
    for (txn, ops) in groups {
        let [a, b] = ops.as_slice() else {
            problems.push(format!(
                "txn {txn} recorded {} operations, not 2",
                ops.len()
            ));
            continue;
        };
        let ok = match (&a.output, &b.output) {
            (
                Output::Get {
                    value: va,
                    mod_revision: ma,
                    ..
                },
                Output::Get {
                    value: vb,
                    mod_revision: mb,
                    ..
                },
            ) => {
                let tag = |v: &Option<String>| {
                    v.as_deref()
                        .map(|v| v.rsplit_once('/').map_or(v, |(t, _)| t).to_string())
                };
                tag(va) == tag(vb) && ma == mb
            }
            (Output::Put { revision: ra }, Output::Put { revision: rb }) => ra == rb,
            _ => true,
        };
        if !ok {
            problems.push(format!(
                "txn {txn} on a key pair is not atomic:\n    {}\n    {}",
                serde_json::to_string(a).unwrap_or_default(),
                serde_json::to_string(b).unwrap_or_default()
            ));
        }
    }
    problems
}

/// etcd's revision rules on the acknowledged operations: every write that changed something has
/// its own revision; revisions grow with real time (a write or read that starts after a write
/// returned sees a larger revision); a read's mod_revision is the revision of the write that put
/// the value it returned.
pub fn check_revisions(history: &[OpRecord]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut by_rev: HashMap<i64, &OpRecord> = HashMap::new();
    let mut by_value: HashMap<&str, i64> = HashMap::new();
    for op in history {
        if let Some(rev) = op.write_revision() {
            // The puts of one txn share its revision.
            if let Some(other) = by_rev
                .insert(rev, op)
                .filter(|o| o.txn.is_none() || o.txn != op.txn)
            {
                problems.push(format!(
                    "revision {rev} given to two writes: op {} and op {}",
                    other.id, op.id
                ));
            }
            if let Some(v) = op.written_value() {
                by_value.insert(v, rev);
            }
        }
    }
    // Real-time order: sort the writes by return; sweep the operations by call.
    let mut writes: Vec<(u64, i64, u64)> = history
        .iter()
        .filter_map(|o| o.write_revision().map(|r| (o.ret, r, o.id)))
        .collect();
    writes.sort();
    let mut acked: Vec<&OpRecord> = history
        .iter()
        .filter(|o| !matches!(o.output, Output::Unknown { .. }))
        .collect();
    acked.sort_by_key(|o| o.call);
    let (mut w, mut max_done) = (0, (0i64, 0u64));
    for op in acked {
        while w < writes.len() && writes[w].0 < op.call {
            if writes[w].1 > max_done.0 {
                max_done = (writes[w].1, writes[w].2);
            }
            w += 1;
        }
        let seen = match &op.output {
            Output::Get { revision, .. } => Some(*revision),
            _ => op.write_revision(),
        };
        if let Some(rev) = seen {
            let stale = if op.input.is_read() {
                rev < max_done.0
            } else {
                rev <= max_done.0
            };
            if stale {
                problems.push(format!(
                    "op {} ({:?} on {}) has revision {rev}, but op {} had already returned revision {}",
                    op.id, op.input, op.key, max_done.1, max_done.0
                ));
            }
        }
        if let Output::Get {
            value: Some(v),
            mod_revision,
            ..
        } = &op.output
        {
            if let Some(&rev) = by_value.get(v.as_str()) {
                if rev != *mod_revision {
                    problems.push(format!(
                        "op {} read {v:?} at mod_revision {mod_revision}, but it was written at {rev}",
                        op.id
                    ));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, key: &str, input: Input, output: Output, call: u64, ret: u64) -> OpRecord {
        OpRecord {
            id,
            client: 0,
            endpoint: String::new(),
            key: key.into(),
            input,
            output,
            call,
            ret,
            txn: None,
        }
    }

    fn put(v: &str) -> Input {
        Input::Put { value: v.into() }
    }

    fn got(v: Option<&str>, m: i64, r: i64) -> Output {
        Output::Get {
            value: v.map(String::from),
            mod_revision: m,
            revision: r,
        }
    }

    #[test]
    fn a_lost_acknowledged_put_is_a_violation() {
        let h = [
            rec(1, "a", put("x"), Output::Put { revision: 2 }, 0, 10),
            rec(2, "a", Input::Get, got(None, 0, 2), 20, 30),
        ];
        let r = check_linearizable(&h, Duration::from_secs(5));
        assert_eq!(r.violations.len(), 1);
        assert_eq!(r.violations[0].minimal.len(), 2);
    }

    #[test]
    fn cas_must_agree_with_the_value_it_compared() {
        let h = [
            rec(1, "a", put("x"), Output::Put { revision: 2 }, 0, 10),
            rec(
                2,
                "a",
                Input::Cas {
                    expect: Some("x".into()),
                    value: "y".into(),
                },
                Output::Cas {
                    succeeded: false,
                    revision: 2,
                },
                20,
                30,
            ),
        ];
        assert_eq!(
            check_linearizable(&h, Duration::from_secs(5))
                .violations
                .len(),
            1
        );
    }

    #[test]
    fn revoke_deletes_only_the_key_still_bound_to_the_lease() {
        let h = [
            rec(
                1,
                "l",
                Input::PutLease {
                    value: "x".into(),
                    lease: 7,
                },
                Output::Put { revision: 2 },
                0,
                10,
            ),
            rec(2, "l", put("y"), Output::Put { revision: 3 }, 11, 12),
            rec(
                3,
                "l",
                Input::Revoke { lease: 7 },
                Output::Revoke { revision: 3 },
                13,
                14,
            ),
            rec(4, "l", Input::Get, got(Some("y"), 3, 3), 15, 16),
        ];
        let r = check_linearizable(&h, Duration::from_secs(5));
        assert!(r.violations.is_empty(), "{r:?}");
    }

    #[test]
    fn timed_out_write_seen_later_is_fine_and_per_key_partitions_are_independent() {
        let h = [
            rec(
                1,
                "a",
                put("x"),
                Output::Unknown {
                    error: "timeout".into(),
                },
                0,
                10,
            ),
            rec(2, "b", put("z"), Output::Put { revision: 2 }, 1, 5),
            rec(3, "a", Input::Get, got(None, 0, 2), 20, 30),
            rec(4, "a", Input::Get, got(Some("x"), 3, 3), 40, 50),
        ];
        let r = check_linearizable(&h, Duration::from_secs(5));
        assert_eq!(r.keys, 2);
        assert!(r.violations.is_empty(), "{r:?}");
    }

    fn expiring(v: &str, lease: i64) -> Input {
        Input::PutExpiring {
            value: v.into(),
            lease,
            ttl: 2,
        }
    }

    #[test]
    fn an_expired_lease_deletes_its_key_but_not_a_later_value() {
        let expired = [
            rec(1, "e", expiring("x", 9), Output::Put { revision: 2 }, 0, 10),
            rec(2, "e", Input::Get, got(Some("x"), 2, 2), 20, 30),
            rec(3, "e", Input::Get, got(None, 0, 3), 40, 50),
        ];
        let r = check_linearizable(&expired, Duration::from_secs(5));
        assert!(r.violations.is_empty(), "{r:?}");
        // Once a later put replaced the value, the old lease's expiry cannot delete the key.
        let overwritten = [
            rec(1, "e", expiring("x", 9), Output::Put { revision: 2 }, 0, 10),
            rec(2, "e", put("y"), Output::Put { revision: 3 }, 20, 30),
            rec(3, "e", Input::Get, got(None, 0, 4), 40, 50),
        ];
        let r = check_linearizable(&overwritten, Duration::from_secs(5));
        assert_eq!(r.violations.len(), 1, "{r:?}");
        // A put on a lease that is read back after it was deleted is not explained by expiry.
        let resurrected = [
            rec(1, "e", expiring("x", 9), Output::Put { revision: 2 }, 0, 10),
            rec(2, "e", Input::Get, got(None, 0, 3), 20, 30),
            rec(3, "e", Input::Get, got(Some("x"), 2, 3), 40, 50),
        ];
        let r = check_linearizable(&resurrected, Duration::from_secs(5));
        assert_eq!(r.violations.len(), 1, "{r:?}");
    }

    #[test]
    fn a_pair_read_must_see_both_halves_of_one_write() {
        let pair = |id, key: &str, out: Output, txn| OpRecord {
            txn: Some(txn),
            ..rec(id, key, Input::Get, out, 0, 10)
        };
        let atomic = [
            pair(1, "pa0", got(Some("c1-1/a"), 5, 7), 100),
            pair(2, "pb0", got(Some("c1-1/b"), 5, 7), 100),
            pair(3, "pa0", got(None, 0, 7), 101),
            pair(4, "pb0", got(None, 0, 7), 101),
        ];
        assert!(check_pairs(&atomic).is_empty());
        let torn = [
            pair(1, "pa0", got(Some("c1-1/a"), 5, 7), 100),
            pair(2, "pb0", got(Some("c2-3/b"), 6, 7), 100),
        ];
        assert_eq!(check_pairs(&torn).len(), 1);
        let half = [
            pair(1, "pa0", got(Some("c1-1/a"), 5, 7), 100),
            pair(2, "pb0", got(None, 0, 7), 100),
        ];
        assert_eq!(check_pairs(&half).len(), 1);
    }

    #[test]
    fn revisions_must_grow_with_real_time() {
        let h = [
            rec(1, "a", put("x"), Output::Put { revision: 5 }, 0, 10),
            rec(2, "b", put("y"), Output::Put { revision: 4 }, 20, 30),
        ];
        assert_eq!(check_revisions(&h).len(), 1);
        let stale_read = [
            rec(1, "a", put("x"), Output::Put { revision: 5 }, 0, 10),
            rec(2, "b", Input::Get, got(None, 0, 4), 20, 30),
        ];
        assert_eq!(check_revisions(&stale_read).len(), 1);
        let wrong_mod = [
            rec(1, "a", put("x"), Output::Put { revision: 5 }, 0, 10),
            rec(2, "a", Input::Get, got(Some("x"), 6, 6), 20, 30),
        ];
        assert_eq!(check_revisions(&wrong_mod).len(), 1);
        let fine = [
            rec(1, "a", put("x"), Output::Put { revision: 5 }, 0, 10),
            rec(2, "a", Input::Get, got(Some("x"), 5, 5), 20, 30),
            rec(
                3,
                "a",
                Input::Delete,
                Output::Delete {
                    deleted: 1,
                    revision: 6,
                },
                40,
                50,
            ),
        ];
        assert!(check_revisions(&fine).is_empty());
    }
}
