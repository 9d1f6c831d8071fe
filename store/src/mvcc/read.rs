//! Reads at a revision: single keys, ranges with every etcd option, and counting.
//!
//! The key index (`index.rs`) says which version of each key a revision sees; only the versions
//! a response returns are read from the engine. A key-ordered range with a limit reads `limit`
//! values and counts the rest in memory; a range sorted by another field keeps at most `limit`
//! entries in a heap instead of loading the whole range (etcd's memory trap).

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::ops::Bound;

use super::index::Visible;
use super::keys;
use super::record::Version;
use super::{Mvcc, MvccError, Result};
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::RangeRequest;
use crate::proto::mvccpb::KeyValue;

/// A user-key interval with etcd's `range_end` conventions resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    Single(Vec<u8>),
    /// `[start, end)`; `end == None` means to the end of the keyspace.
    Span {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
}

impl KeyRange {
    /// `range_end` empty: one key; `"\0"`: every key `>= key`; otherwise `[key, range_end)`.
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        if range_end.is_empty() {
            KeyRange::Single(key.to_vec())
        } else if range_end == [0] {
            KeyRange::Span {
                start: key.to_vec(),
                end: None,
            }
        } else {
            KeyRange::Span {
                start: key.to_vec(),
                end: Some(range_end.to_vec()),
            }
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => k == key,
            KeyRange::Span { start, end } => {
                key >= start.as_slice() && end.as_ref().is_none_or(|e| key < e.as_slice())
            }
        }
    }

    /// Whether two ranges share a key (for duplicate detection in a Txn).
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        match (self, other) {
            (KeyRange::Single(a), r) | (r, KeyRange::Single(a)) => r.contains(a),
            (KeyRange::Span { start: s1, end: e1 }, KeyRange::Span { start: s2, end: e2 }) => {
                let before = |end: &Option<Vec<u8>>, start: &Vec<u8>| {
                    end.as_ref().is_some_and(|e| e <= start)
                };
                !(before(e1, s2) || before(e2, s1) || self.is_empty() || other.is_empty())
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, KeyRange::Span { start, end: Some(end) } if end <= start)
    }
}

/// The outcome of a range read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    pub count: i64,
    pub revision: i64,
}

/// Ordering key for non-default sorts.
fn sort_cmp(target: SortTarget, a: &KeyValue, b: &KeyValue) -> CmpOrdering {
    match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    }
}

/// A heap entry ordered so that the heap's top is the entry to evict first.
struct Ranked {
    kv: KeyValue,
    seq: usize,
    target: SortTarget,
    descending: bool,
}

impl Ranked {
    /// Total order of the final output: by target, ties in key (scan) order.
    fn output_cmp(&self, other: &Self) -> CmpOrdering {
        let by_target = sort_cmp(self.target, &self.kv, &other.kv);
        let by_target = if self.descending {
            by_target.reverse()
        } else {
            by_target
        };
        by_target.then(self.seq.cmp(&other.seq))
    }
}
impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.output_cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.output_cmp(other)
    }
}

/// Below this many versions, point reads cost less than setting up a scan.
const SCAN_FROM: usize = 8;

/// A stored version record of `key` at `revision` as the API returns it.
fn decode(key: Vec<u8>, revision: i64, raw: &[u8]) -> Result<KeyValue> {
    let v = Version::decode(raw).ok_or_else(|| {
        MvccError::Storage(format!("corrupt record of {key:?} at revision {revision}"))
    })?;
    Ok(v.into_kv(key, revision))
}

fn passes_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
        && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
        && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
}

impl Mvcc {
    /// The stored version of `key` at exactly `revision`.
    fn fetch(&self, key: Vec<u8>, revision: i64) -> Result<KeyValue> {
        // The index named this version, so only the compactor can have removed it since, and it
        // only removes what no read at or after the compact revision sees: the read's revision
        // was compacted while it ran.
        let raw = self
            .backend
            .get(&keys::version(&key, revision))?
            .ok_or(MvccError::Compacted)?;
        decode(key, revision, &raw)
    }

    /// The version of `key` visible at `revision`, if the key is live there.
    pub fn get(&self, key: &[u8], revision: i64) -> Result<Option<KeyValue>> {
        match self.index.get(key, revision) {
            Some(at) => self.fetch(key.to_vec(), at).map(Some),
            None => Ok(None),
        }
    }

    /// The stored versions the index named, in its (key) order.
    ///
    /// Many are read with one engine scan from the first to the last: a scan steps through the
    /// engine's leaf nodes, where a point read descends the tree and touches the page cache's
    /// LRU for every key (about a third of a 500-key page's CPU time in profiles). Versions the
    /// read does not want (history not yet compacted, newer writes) are stepped over; when there
    /// are more of them than wanted ones, the rest are read point by point instead.
    fn fetch_all(&self, visible: Visible) -> Result<Vec<KeyValue>> {
        let (Some(first), Some(last)) = (visible.first(), visible.last()) else {
            return Ok(Vec::new());
        };
        if visible.len() < SCAN_FROM {
            return visible
                .into_iter()
                .map(|(key, at)| self.fetch(key, at))
                .collect();
        }
        let from = keys::version(&first.0, first.1);
        let to = keys::after(&last.0);
        let mut scan = self
            .backend
            .scan(Bound::Included(&from), Bound::Excluded(&to), false);
        let mut unwanted_left = visible.len();
        let mut out = Vec::with_capacity(visible.len());
        let mut wanted = visible.into_iter();
        while let Some((key, at)) = wanted.next() {
            let target = keys::version(&key, at);
            loop {
                let Some(entry) = scan.next() else {
                    return Err(MvccError::Compacted);
                };
                let (k, raw) = entry?;
                match k[..].cmp(&target[..]) {
                    CmpOrdering::Equal => {
                        out.push(decode(key, at, &raw)?);
                        break;
                    }
                    CmpOrdering::Less if unwanted_left > 0 => unwanted_left -= 1,
                    CmpOrdering::Less => {
                        out.push(self.fetch(key, at)?);
                        for (key, at) in wanted {
                            out.push(self.fetch(key, at)?);
                        }
                        return Ok(out);
                    }
                    // Past it: the compactor removed it since the index named it (see `fetch`).
                    CmpOrdering::Greater => return Err(MvccError::Compacted),
                }
            }
        }
        Ok(out)
    }

    /// Every live key-value in `range` at `revision`, in key order.
    pub fn scan(&self, range: &KeyRange, revision: i64) -> Result<Vec<KeyValue>> {
        self.fetch_all(self.index.range(range, revision, usize::MAX).0)
    }

    /// Serves a RangeRequest at `revision` (already checked against compaction and the future).
    pub fn range(&self, req: &RangeRequest, revision: i64) -> Result<RangeResult> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let mut result = RangeResult {
            revision,
            ..Default::default()
        };
        if range.is_empty() {
            return Ok(result);
        }
        let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
        let requested = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
        let mut order = requested;
        if target != SortTarget::Key && order == SortOrder::None {
            order = SortOrder::Ascend;
        }
        let limit = usize::try_from(req.limit).unwrap_or(0);

        if req.count_only {
            result.count = self.index.range(&range, revision, 0).1 as i64;
            return Ok(result);
        }

        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;

        // etcd pushes `limit` down to its key-ordered scan whenever the requested order is NONE
        // and no filter is set, and sorts afterwards: a non-KEY target with order NONE and a
        // limit sorts only the first limit+1 keys (etcdserver/txn/range.go). Clients see that.
        let sort_after_limit =
            target != SortTarget::Key && requested == SortOrder::None && limit > 0 && !filtered;
        let key_order = target == SortTarget::Key && order != SortOrder::Descend;

        if (key_order || sort_after_limit) && !filtered {
            // Only the values returned are read; the rest of the range is counted in the index.
            let keep = match limit {
                0 => usize::MAX,
                _ if sort_after_limit => limit + 1,
                _ => limit,
            };
            let (visible, count) = self.index.range(&range, revision, keep);
            result.count = count as i64;
            result.more = limit > 0 && count > limit;
            result.kvs = self.fetch_all(visible)?;
            if sort_after_limit {
                result.kvs.sort_by(|a, b| sort_cmp(target, a, b));
                result.kvs.truncate(limit);
            }
        } else {
            // Filters need each version's record, and other orders see every match: read them
            // one at a time, keeping the first `limit` in key order or the best `limit` in a heap.
            let (visible, count) = self.index.range(&range, revision, usize::MAX);
            result.count = count as i64;
            let descending = order == SortOrder::Descend;
            let mut heap: BinaryHeap<Ranked> = BinaryHeap::new();
            let mut matched = 0usize;
            for (key, at) in visible {
                let kv = self.fetch(key, at)?;
                if !passes_filters(req, &kv) {
                    continue;
                }
                matched += 1;
                if key_order {
                    if limit == 0 || result.kvs.len() < limit {
                        result.kvs.push(kv);
                    }
                    continue;
                }
                // Key-descending ties cannot happen; for other targets equal values keep scan order.
                heap.push(Ranked {
                    kv,
                    seq: matched,
                    target,
                    descending,
                });
                if limit > 0 && heap.len() > limit {
                    heap.pop();
                }
            }
            if !key_order {
                result.kvs = heap.into_sorted_vec().into_iter().map(|r| r.kv).collect();
            }
            result.more = limit > 0 && matched > limit;
        }
        if req.keys_only {
            for kv in &mut result.kvs {
                kv.value.clear();
            }
        }
        Ok(result)
    }
}
