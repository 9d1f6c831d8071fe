//! The value stored for one version of a key: a fixed header, then the user value.
//!
//! Layout: flags (u8: bit 0 = tombstone) | create_revision (i64 BE) | version (i64 BE) |
//! lease (i64 BE) | value bytes. Fixed offsets let scans check for tombstones without decoding.

use crate::proto::mvccpb::KeyValue;

const HEADER: usize = 1 + 8 * 3;
const TOMBSTONE: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Vec<u8>,
    pub tombstone: bool,
}

impl Version {
    pub fn tombstone() -> Self {
        Self {
            create_revision: 0,
            version: 0,
            lease: 0,
            value: Vec::new(),
            tombstone: true,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.value.len());
        out.push(if self.tombstone { TOMBSTONE } else { 0 });
        out.extend_from_slice(&self.create_revision.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.lease.to_be_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    pub fn decode(raw: &[u8]) -> Option<Self> {
        if raw.len() < HEADER {
            return None;
        }
        let int = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[at..at + 8]);
            i64::from_be_bytes(b)
        };
        Some(Self {
            tombstone: raw[0] & TOMBSTONE != 0,
            create_revision: int(1),
            version: int(9),
            lease: int(17),
            value: raw[HEADER..].to_vec(),
        })
    }

    /// Whether an encoded record is a tombstone, without decoding it.
    pub fn is_tombstone(raw: &[u8]) -> bool {
        raw.first().is_some_and(|f| f & TOMBSTONE != 0)
    }

    pub fn into_kv(self, key: Vec<u8>, mod_revision: i64) -> KeyValue {
        KeyValue {
            key,
            create_revision: self.create_revision,
            mod_revision,
            version: self.version,
            value: self.value,
            lease: self.lease,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = Version {
            create_revision: 3,
            version: 2,
            lease: -1,
            value: b"x".to_vec(),
            tombstone: false,
        };
        assert_eq!(Version::decode(&v.encode()), Some(v.clone()));
        assert!(!Version::is_tombstone(&v.encode()));
        assert!(Version::is_tombstone(&Version::tombstone().encode()));
        assert_eq!(Version::decode(b"short"), None);
    }
}
