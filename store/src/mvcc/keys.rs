//! The on-disk layout of MVCC state under the `K` and `E` prefixes.
//!
//! A key version lives at `K | escape(user_key) | 0x00 0x00 | !revision`. Escaping (0x00 ->
//! 0x00 0xFF) and the 0x00 0x00 terminator keep encoded keys in the same order as user keys, so a
//! user-key range maps to one contiguous scan. Inverting the revision puts the newest version of a
//! key first: the version visible at revision R is the first entry at or after `!R`.

use crate::storage::space;

const TERMINATOR: [u8; 2] = [0x00, 0x00];

fn escape_into(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
}

/// Lower bound of every version of every user key `>= key`.
pub fn seek(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 12);
    out.push(space::KV);
    escape_into(&mut out, key);
    out
}

/// The position of `key` at `revision`: the first entry at or after it is the newest version of
/// `key` with a revision `<= revision` (if the entry still belongs to `key`).
pub fn version(key: &[u8], revision: i64) -> Vec<u8> {
    let mut out = seek(key);
    out.extend_from_slice(&TERMINATOR);
    out.extend_from_slice(&(!(revision as u64)).to_be_bytes());
    out
}

/// The first position after every version of `key`: where the next user key starts.
pub fn after(key: &[u8]) -> Vec<u8> {
    let mut out = seek(key);
    out.extend_from_slice(&[0x00, 0x01]);
    out
}

/// Splits an encoded version key into the user key and the revision.
pub fn decode_version(raw: &[u8]) -> Option<(Vec<u8>, i64)> {
    let body = raw.strip_prefix(&[space::KV])?;
    if body.len() < 10 {
        return None;
    }
    let (escaped, tail) = body.split_at(body.len() - 10);
    if tail[..2] != TERMINATOR {
        return None;
    }
    let mut rev = [0u8; 8];
    rev.copy_from_slice(&tail[2..]);
    let revision = !u64::from_be_bytes(rev) as i64;
    let mut key = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        let b = escaped[i];
        key.push(b);
        if b == 0 {
            if escaped.get(i + 1) != Some(&0xff) {
                return None;
            }
            i += 1;
        }
        i += 1;
    }
    Some((key, revision))
}

/// Splits an encoded version key into its key part (space byte, escaped user key, terminator;
/// equal for every version of one user key) and the revision, without decoding the user key.
pub fn split_version(raw: &[u8]) -> Option<(&[u8], i64)> {
    if raw.first() != Some(&space::KV) || raw.len() < 11 {
        return None;
    }
    let (prefix, tail) = raw.split_at(raw.len() - 8);
    if prefix[prefix.len() - 2..] != TERMINATOR {
        return None;
    }
    let mut rev = [0u8; 8];
    rev.copy_from_slice(tail);
    Some((prefix, !u64::from_be_bytes(rev) as i64))
}

/// The revision index entry of change number `sub` in `revision`.
pub fn revision_entry(revision: i64, sub: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(13);
    out.push(space::REVISIONS);
    out.extend_from_slice(&(revision as u64).to_be_bytes());
    out.extend_from_slice(&sub.to_be_bytes());
    out
}

/// The revision a stored version or revision-index entry belongs to.
pub fn revision_of(raw: &[u8]) -> Option<i64> {
    match raw.first() {
        Some(&space::KV) => split_version(raw).map(|(_, revision)| revision),
        Some(&space::REVISIONS) => decode_revision_entry(raw).map(|(revision, _)| revision),
        _ => None,
    }
}

/// Splits a revision index key into revision and sub-revision.
pub fn decode_revision_entry(raw: &[u8]) -> Option<(i64, u32)> {
    let body = raw.strip_prefix(&[space::REVISIONS])?;
    if body.len() != 12 {
        return None;
    }
    let mut rev = [0u8; 8];
    rev.copy_from_slice(&body[..8]);
    let mut sub = [0u8; 4];
    sub.copy_from_slice(&body[8..]);
    Some((u64::from_be_bytes(rev) as i64, u32::from_be_bytes(sub)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_zero_bytes() {
        for key in [&b"a"[..], b"a\0b", b"\0", b"\0\xff", b"\xff\xff"] {
            let enc = version(key, 42);
            assert_eq!(decode_version(&enc), Some((key.to_vec(), 42)));
        }
    }

    #[test]
    fn encoded_order_matches_user_key_order() {
        let mut keys: Vec<&[u8]> = vec![
            b"a", b"a\0", b"a\0\0", b"a\x01", b"ab", b"b", b"\0", b"\xff",
        ];
        keys.sort();
        let encoded: Vec<_> = keys.iter().map(|k| version(k, 7)).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
        // Every version of a key sorts before the next key's seek position and after its own.
        for w in keys.windows(2) {
            assert!(after(w[0]) <= seek(w[1]), "{:?} {:?}", w[0], w[1]);
            assert!(seek(w[0]) < version(w[0], i64::MAX));
            assert!(version(w[0], 1) < after(w[0]));
        }
    }

    #[test]
    fn split_matches_decode() {
        for key in [&b"a"[..], b"a\0b", b"\0", b"\0\xff", b"\xff\xff", b""] {
            let enc = version(key, 42);
            let (prefix, rev) = split_version(&enc).unwrap();
            assert_eq!(rev, 42);
            assert!(prefix < after(key).as_slice());
            assert_eq!(split_version(&version(key, 9)).unwrap().0, prefix);
        }
        assert_eq!(split_version(b"Kshort"), None);
        assert_eq!(split_version(&revision_entry(3, 0)), None);
    }

    #[test]
    fn newer_versions_sort_first() {
        assert!(version(b"k", 9) < version(b"k", 3));
        assert!(version(b"k", 5) <= version(b"k", 5));
    }

    #[test]
    fn revision_entries_sort_by_revision() {
        assert!(revision_entry(2, 9) < revision_entry(3, 0));
        assert_eq!(
            decode_revision_entry(&revision_entry(300, 2)),
            Some((300, 2))
        );
    }
}
