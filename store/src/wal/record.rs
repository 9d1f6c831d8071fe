//! The WAL's records: how each is laid out in a segment and how a segment's bytes are read back.
//!
//! A record is `len: u32 LE | crc: u32 LE | kind: u8 | body`, where `len` counts `kind` and
//! `body`. Segments are preallocated with zeros, so a zero `len` is where the log ends. The CRC
//! (crc32, IEEE) covers `len`, `kind` and `body` and is chained: each record's CRC starts from
//! the previous record's, and a segment's first record from a seed derived from the segment's
//! sequence number. A record left behind by an earlier, torn write (it can sit right where a
//! newer record ends) therefore never validates: its predecessor in the chain is a different
//! record.
//!
//! Everything here is pure: bytes in, records out.

/// Bytes before a record's body: length, CRC, kind.
pub const HEADER_LEN: usize = 9;

/// A Raft log id as the WAL stores it: the leader (term, node id) that proposed it, its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct LogPos {
    pub term: u64,
    pub node: u64,
    pub index: u64,
}

/// A Raft vote: the candidate or leader (term, node id) and whether a quorum granted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VoteRec {
    pub term: u64,
    pub node: u64,
    pub committed: bool,
}

/// What a segment's first record says about the log when the segment was started, so that
/// older segments can be deleted once everything in them is purged.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SegmentHeader {
    pub seq: u64,
    /// The last entry appended before this segment (or the purge point, if none was kept).
    pub base: Option<LogPos>,
    pub vote: Option<VoteRec>,
    pub committed: Option<LogPos>,
    pub purged: Option<LogPos>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Header(SegmentHeader),
    /// One log entry: its id and its payload (the encoded openraft entry).
    Entry(LogPos, Vec<u8>),
    Vote(VoteRec),
    Commit(LogPos),
    /// Entries at `index` and after are gone.
    Truncate(u64),
    /// Entries up to and including this id are gone; it is the log's new purge point.
    Purge(LogPos),
}

const KIND_HEADER: u8 = 1;
const KIND_ENTRY: u8 = 2;
const KIND_VOTE: u8 = 3;
const KIND_COMMIT: u8 = 4;
const KIND_TRUNCATE: u8 = 5;
const KIND_PURGE: u8 = 6;

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the header or the length promise: a write cut short, or garbage.
    #[error("record runs past the end of the segment")]
    Truncated,
    #[error("record checksum mismatch")]
    Checksum,
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("malformed {0} record")]
    Malformed(&'static str),
}

/// Where a segment's CRC chain starts.
pub fn chain_seed(seq: u64) -> u32 {
    crc32fast::hash(&seq.to_le_bytes())
}

/// Appends `rec` to `out`, chained to `prev_crc`; returns the record's CRC (the next seed).
pub fn encode(rec: &Record, prev_crc: u32, out: &mut Vec<u8>) -> u32 {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let kind = match rec {
        Record::Header(h) => {
            out.extend_from_slice(&h.seq.to_le_bytes());
            put_pos(out, h.base);
            match h.vote {
                Some(v) => {
                    out.push(1);
                    put_vote(out, v);
                }
                None => out.push(0),
            }
            put_pos(out, h.committed);
            put_pos(out, h.purged);
            KIND_HEADER
        }
        Record::Entry(pos, payload) => {
            put_pos_fixed(out, *pos);
            out.extend_from_slice(payload);
            KIND_ENTRY
        }
        Record::Vote(v) => {
            put_vote(out, *v);
            KIND_VOTE
        }
        Record::Commit(pos) => {
            put_pos_fixed(out, *pos);
            KIND_COMMIT
        }
        Record::Truncate(index) => {
            out.extend_from_slice(&index.to_le_bytes());
            KIND_TRUNCATE
        }
        Record::Purge(pos) => {
            put_pos_fixed(out, *pos);
            KIND_PURGE
        }
    };
    // The length counts the kind byte and the body; a record is far below 4 GiB (entries are
    // bounded by the request size limits), and `u32::MAX` would only ever fail its CRC.
    let len = u32::try_from(out.len() - start - HEADER_LEN + 1).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 8] = kind;
    let crc = checksum(prev_crc, &out[start..start + 4], &out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    crc
}

fn checksum(prev_crc: u32, len: &[u8], kind_and_body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(prev_crc);
    h.update(len);
    h.update(kind_and_body);
    h.finalize()
}

/// The record at the start of `buf`, chained to `prev_crc`: `Ok(None)` where the log ends
/// (zeros), else the record, its CRC and its encoded length.
pub fn decode(buf: &[u8], prev_crc: u32) -> Result<Option<(Record, u32, usize)>, DecodeError> {
    if buf.len() < 4 {
        return if buf.iter().all(|b| *b == 0) {
            Ok(None)
        } else {
            Err(DecodeError::Truncated)
        };
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 {
        return Ok(None);
    }
    let total = HEADER_LEN - 1 + len;
    if buf.len() < total {
        return Err(DecodeError::Truncated);
    }
    let stored = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let crc = checksum(prev_crc, &buf[..4], &buf[8..total]);
    if crc != stored {
        return Err(DecodeError::Checksum);
    }
    let kind = buf[8];
    let what = match kind {
        KIND_HEADER => "header",
        KIND_ENTRY => "entry",
        KIND_VOTE => "vote",
        KIND_COMMIT => "commit",
        KIND_TRUNCATE => "truncate",
        KIND_PURGE => "purge",
        other => return Err(DecodeError::Kind(other)),
    };
    let mut r = Reader(&buf[HEADER_LEN..total]);
    let rec = match kind {
        KIND_HEADER => {
            let seq = r.u64(what)?;
            let base = r.pos(what)?;
            let vote = match r.u8(what)? {
                0 => None,
                _ => Some(r.vote(what)?),
            };
            let committed = r.pos(what)?;
            let purged = r.pos(what)?;
            Record::Header(SegmentHeader {
                seq,
                base,
                vote,
                committed,
                purged,
            })
        }
        KIND_ENTRY => {
            let pos = r.pos_fixed(what)?;
            Record::Entry(pos, std::mem::take(&mut r.0).to_vec())
        }
        KIND_VOTE => Record::Vote(r.vote(what)?),
        KIND_COMMIT => Record::Commit(r.pos_fixed(what)?),
        KIND_TRUNCATE => Record::Truncate(r.u64(what)?),
        _ => Record::Purge(r.pos_fixed(what)?),
    };
    r.end(what)?;
    Ok(Some((rec, crc, total)))
}

/// Where an entry record's payload starts, from the record's start.
pub const ENTRY_PAYLOAD_OFFSET: usize = HEADER_LEN + 24;

fn put_pos_fixed(out: &mut Vec<u8>, p: LogPos) {
    out.extend_from_slice(&p.term.to_le_bytes());
    out.extend_from_slice(&p.node.to_le_bytes());
    out.extend_from_slice(&p.index.to_le_bytes());
}

fn put_pos(out: &mut Vec<u8>, p: Option<LogPos>) {
    match p {
        Some(p) => {
            out.push(1);
            put_pos_fixed(out, p);
        }
        None => out.push(0),
    }
}

fn put_vote(out: &mut Vec<u8>, v: VoteRec) {
    out.extend_from_slice(&v.term.to_le_bytes());
    out.extend_from_slice(&v.node.to_le_bytes());
    out.push(u8::from(v.committed));
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Malformed(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn pos_fixed(&mut self, what: &'static str) -> Result<LogPos, DecodeError> {
        Ok(LogPos {
            term: self.u64(what)?,
            node: self.u64(what)?,
            index: self.u64(what)?,
        })
    }

    fn pos(&mut self, what: &'static str) -> Result<Option<LogPos>, DecodeError> {
        match self.u8(what)? {
            0 => Ok(None),
            _ => Ok(Some(self.pos_fixed(what)?)),
        }
    }

    fn vote(&mut self, what: &'static str) -> Result<VoteRec, DecodeError> {
        Ok(VoteRec {
            term: self.u64(what)?,
            node: self.u64(what)?,
            committed: self.u8(what)? != 0,
        })
    }

    fn end(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(term: u64, index: u64) -> LogPos {
        LogPos {
            term,
            node: 7,
            index,
        }
    }

    fn samples() -> Vec<Record> {
        vec![
            Record::Header(SegmentHeader {
                seq: 3,
                base: Some(pos(2, 40)),
                vote: Some(VoteRec {
                    term: 2,
                    node: 7,
                    committed: true,
                }),
                committed: Some(pos(2, 39)),
                purged: None,
            }),
            Record::Header(SegmentHeader::default()),
            Record::Entry(pos(2, 41), b"payload".to_vec()),
            Record::Entry(pos(2, 42), Vec::new()),
            Record::Vote(VoteRec {
                term: 3,
                node: 1,
                committed: false,
            }),
            Record::Commit(pos(2, 41)),
            Record::Truncate(42),
            Record::Purge(pos(2, 40)),
        ]
    }

    /// Encodes `recs` as one chain from `seed`.
    fn chain(recs: &[Record], seed: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut crc = seed;
        for r in recs {
            crc = encode(r, crc, &mut out);
        }
        out
    }

    /// Decodes a chain until its end, or the first invalid record.
    fn read(buf: &[u8], seed: u32) -> (Vec<Record>, Result<(), DecodeError>) {
        let (mut at, mut crc, mut out) = (0, seed, Vec::new());
        loop {
            match decode(&buf[at..], crc) {
                Ok(None) => return (out, Ok(())),
                Ok(Some((rec, c, len))) => {
                    out.push(rec);
                    crc = c;
                    at += len;
                }
                Err(e) => return (out, Err(e)),
            }
        }
    }

    #[test]
    fn every_record_round_trips_in_a_chain() {
        let recs = samples();
        let mut buf = chain(&recs, chain_seed(3));
        buf.extend_from_slice(&[0; 64]); // the preallocated tail
        assert_eq!(read(&buf, chain_seed(3)), (recs, Ok(())));
    }

    #[test]
    fn an_entry_payload_sits_at_its_fixed_offset() {
        let mut buf = Vec::new();
        encode(&Record::Entry(pos(1, 1), b"abc".to_vec()), 0, &mut buf);
        assert_eq!(&buf[ENTRY_PAYLOAD_OFFSET..], b"abc");
    }

    #[test]
    fn a_torn_or_flipped_record_is_rejected_and_ends_the_chain() {
        let recs = samples();
        let buf = chain(&recs, 9);
        // Cut anywhere inside the last record: the records before it still read.
        let mut last_start = buf.len();
        for len in (1..buf.len()).rev() {
            if read(&buf[..len], 9).0.len() == recs.len() - 1 {
                last_start = len;
            }
        }
        for cut in last_start + 1..buf.len() {
            let (got, end) = read(&buf[..cut], 9);
            assert_eq!(got.len(), recs.len() - 1, "cut at {cut}");
            assert!(end.is_err(), "cut at {cut}");
        }
        // Any single flipped bit is caught.
        for byte in 0..buf.len() {
            let mut bad = buf.clone();
            bad[byte] ^= 0x10;
            let (got, _) = read(&bad, 9);
            assert_ne!(got, recs, "flip at {byte}");
        }
    }

    #[test]
    fn a_stale_record_after_a_rewritten_one_does_not_validate() {
        // An old chain A B; after a crash the log ended after A and a new record C, exactly as
        // long as B, was written over B. Another old record D that followed B is still on
        // disk right after C: it must not be read as part of the new chain.
        let a = Record::Entry(pos(1, 1), b"a".to_vec());
        let b = Record::Entry(pos(1, 2), b"bb".to_vec());
        let c = Record::Entry(pos(2, 2), b"cc".to_vec());
        let d = Record::Entry(pos(1, 3), b"d".to_vec());
        let old = chain(&[a.clone(), b, d], 5);
        let new = chain(&[a.clone(), c.clone()], 5);
        let mut disk = old.clone();
        disk[..new.len()].copy_from_slice(&new);
        let (got, end) = read(&disk, 5);
        assert_eq!(got, vec![a, c]);
        assert_eq!(end, Err(DecodeError::Checksum));
    }

    #[test]
    fn a_chain_only_validates_from_its_own_seed() {
        let buf = chain(&samples(), chain_seed(3));
        assert_eq!(read(&buf, chain_seed(4)).1, Err(DecodeError::Checksum));
    }

    #[test]
    fn zeros_end_the_log_and_a_short_nonzero_tail_is_torn() {
        assert_eq!(decode(&[0; 3], 0), Ok(None));
        assert_eq!(decode(&[], 0), Ok(None));
        assert_eq!(decode(&[0, 1], 0), Err(DecodeError::Truncated));
        // A length promising more than is there.
        assert_eq!(
            decode(&[9, 0, 0, 0, 1, 2, 3], 0),
            Err(DecodeError::Truncated)
        );
    }
}
