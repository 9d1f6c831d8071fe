//! Reads at a revision: single keys, ranges with every etcd option, and counting.
//!
//! Scans are lazy: a range with a key-ordered limit stops collecting values at `limit + 1` and
//! only counts the rest; a range sorted by another field keeps at most `limit` entries in a heap
//! instead of loading the whole range (etcd's memory trap).

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::ops::Bound;

use super::keys;
use super::record::Version;
use super::{Mvcc, MvccError, Result};
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::RangeRequest;
use crate::proto::mvccpb::KeyValue;
use crate::storage::{Pair, Scan};

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
                !(before(e1, s2) || before(e2, s1)) && !self.is_empty() && !other.is_empty()
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, KeyRange::Span { start, end: Some(end) } if end <= start)
    }

    fn bounds(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        match self {
            KeyRange::Single(k) => (keys::seek(k), Some(keys::after(k))),
            KeyRange::Span { start, end } => {
                (keys::seek(start), end.as_ref().map(|e| keys::seek(e)))
            }
        }
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

/// After this many versions of one key have been stepped over, seek instead of stepping.
const RESEEK_AFTER: usize = 4;

/// Yields the version of each user key visible at a revision, in key order.
pub(crate) struct Visible<'a> {
    mvcc: &'a Mvcc,
    end: Option<Vec<u8>>,
    revision: i64,
    scan: Scan,
    /// The encoded prefix (see [`keys::split_version`]) of the key whose visible version was
    /// already decided; its remaining versions are skipped. Compared encoded, so stepping over
    /// versions and counting keys decode and allocate nothing.
    done_key: Vec<u8>,
    skipped: usize,
}

impl<'a> Visible<'a> {
    pub(crate) fn new(mvcc: &'a Mvcc, range: &KeyRange, revision: i64) -> Self {
        let (start, end) = range.bounds();
        let scan = open_scan(mvcc, &start, end.as_deref());
        Self {
            mvcc,
            end,
            revision,
            scan,
            done_key: Vec::new(),
            skipped: 0,
        }
    }

    fn reseek(&mut self, from: Vec<u8>) {
        self.scan = open_scan(self.mvcc, &from, self.end.as_deref());
        self.skipped = 0;
    }

    /// Next visible (encoded version key, mod_revision, raw record); tombstones are included so
    /// callers can tell "deleted" from "absent" when they need to.
    fn next_raw(&mut self) -> Result<Option<(Box<[u8]>, i64, Box<[u8]>)>> {
        loop {
            let Some(item) = self.scan.next() else {
                return Ok(None);
            };
            let (raw_key, raw_val): Pair = item?;
            let (prefix, rev) = keys::split_version(&raw_key)
                .ok_or_else(|| MvccError::Storage(format!("corrupt version key {raw_key:?}")))?;
            if prefix == self.done_key.as_slice() {
                self.skipped += 1;
                if self.skipped > RESEEK_AFTER {
                    self.reseek(keys::after_prefix(prefix));
                }
                continue;
            }
            if rev > self.revision {
                self.skipped += 1;
                if self.skipped > RESEEK_AFTER {
                    self.reseek(keys::version_at_prefix(prefix, self.revision));
                }
                continue;
            }
            self.skipped = 0;
            self.done_key.clear();
            self.done_key.extend_from_slice(prefix);
            return Ok(Some((raw_key, rev, raw_val)));
        }
    }

    /// Next live key-value (tombstones skipped).
    pub(crate) fn next_kv(&mut self) -> Result<Option<KeyValue>> {
        while let Some((raw_key, rev, raw)) = self.next_raw()? {
            if Version::is_tombstone(&raw) {
                continue;
            }
            let corrupt = || MvccError::Storage(format!("corrupt record {raw_key:?}"));
            let (key, _) = keys::decode_version(&raw_key).ok_or_else(corrupt)?;
            let v = Version::decode(&raw).ok_or_else(corrupt)?;
            return Ok(Some(v.into_kv(key, rev)));
        }
        Ok(None)
    }

    /// Steps to the next live key without decoding it or its value; false at the end.
    fn next_live(&mut self) -> Result<bool> {
        while let Some((_, _, raw)) = self.next_raw()? {
            if !Version::is_tombstone(&raw) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn open_scan(mvcc: &Mvcc, from: &[u8], to: Option<&[u8]>) -> Scan {
    let to = match to {
        Some(t) => Bound::Excluded(t),
        None => Bound::Excluded(&[crate::storage::space::KV + 1][..]),
    };
    mvcc.backend().scan(Bound::Included(from), to, false)
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

fn passes_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
        && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
        && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
}

impl Mvcc {
    /// The version of `key` visible at `revision`, if the key is live there.
    pub fn get(&self, key: &[u8], revision: i64) -> Result<Option<KeyValue>> {
        Visible::new(self, &KeyRange::Single(key.to_vec()), revision).next_kv()
    }

    /// Every live key-value in `range` at `revision`, in key order.
    pub fn scan(&self, range: &KeyRange, revision: i64) -> Result<Vec<KeyValue>> {
        let mut it = Visible::new(self, range, revision);
        let mut out = Vec::new();
        while let Some(kv) = it.next_kv()? {
            out.push(kv);
        }
        Ok(out)
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
        let mut it = Visible::new(self, &range, revision);

        if req.count_only {
            while it.next_live()? {
                result.count += 1;
            }
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

        if (target == SortTarget::Key && order != SortOrder::Descend) || sort_after_limit {
            // Natural key order: keep the first `limit` matches, count the rest without values.
            let keep = if sort_after_limit { limit + 1 } else { limit };
            let mut matched = 0usize;
            loop {
                if keep > 0 && result.kvs.len() >= keep && !filtered {
                    while it.next_live()? {
                        result.count += 1;
                        result.more = true;
                    }
                    break;
                }
                let Some(kv) = it.next_kv()? else { break };
                result.count += 1;
                if !passes_filters(req, &kv) {
                    continue;
                }
                matched += 1;
                if keep == 0 || result.kvs.len() < keep {
                    result.kvs.push(kv);
                }
            }
            if limit > 0 && matched > limit {
                result.more = true;
            }
            if sort_after_limit {
                result.kvs.sort_by(|a, b| sort_cmp(target, a, b));
                result.kvs.truncate(limit);
            }
        } else {
            // Any other order: a bounded heap keeps the best `limit` entries.
            let descending = order == SortOrder::Descend;
            let mut heap: BinaryHeap<Ranked> = BinaryHeap::new();
            let mut matched = 0usize;
            let mut seq = 0usize;
            while let Some(kv) = it.next_kv()? {
                result.count += 1;
                if !passes_filters(req, &kv) {
                    continue;
                }
                matched += 1;
                seq += 1;
                // Key-descending ties cannot happen; for other targets equal values keep scan order.
                heap.push(Ranked {
                    kv,
                    seq,
                    target,
                    descending,
                });
                if limit > 0 && heap.len() > limit {
                    heap.pop();
                }
            }
            result.kvs = heap.into_sorted_vec().into_iter().map(|r| r.kv).collect();
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
