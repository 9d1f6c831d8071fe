//! Member and cluster ids: derived deterministically from the bootstrap configuration (as etcd
//! derives them from peer URLs and the cluster token), and recorded in the data dir so a restarted
//! member keeps its identity whatever flags it is given.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::raft::codec;
use crate::storage::{Backend, StorageError};

const IDENTITY: &[u8] = b"Ridentity";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub member_id: u64,
    pub cluster_id: u64,
    pub name: String,
}

fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    // 0 means "no member" in etcd's API; never hand it out.
    u64::from_be_bytes(b).max(1)
}

/// A member's id from its peer URLs and the cluster token (and, for members added at runtime, a
/// unique salt so a re-added member never gets an old id back).
pub fn member_id(peer_urls: &[String], token: &str, salt: Option<u64>) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let joined = urls.join(",");
    let salt = salt.map(|s| s.to_be_bytes().to_vec()).unwrap_or_default();
    hash64(&[joined.as_bytes(), token.as_bytes(), &salt])
}

/// The cluster id from the initial members' ids and the token.
pub fn cluster_id(member_ids: &[u64], token: &str) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_be_bytes()).collect();
    hash64(&[&bytes, token.as_bytes()])
}

pub fn load(backend: &dyn Backend) -> Result<Option<Identity>, StorageError> {
    match backend.get(IDENTITY)? {
        None => Ok(None),
        Some(raw) => codec::decode("identity", &raw)
            .map(Some)
            .map_err(|e| StorageError::Corrupt {
                what: "identity",
                detail: e.to_string(),
            }),
    }
}

pub fn save(backend: &dyn Backend, id: &Identity) -> Result<(), StorageError> {
    let raw = codec::encode("identity", id).map_err(|e| StorageError::Corrupt {
        what: "identity",
        detail: e.to_string(),
    })?;
    backend.insert(IDENTITY, &raw)?;
    backend.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = member_id(&["http://a:2380".into()], "t", None);
        assert_eq!(a, member_id(&["http://a:2380".into()], "t", None));
        assert_ne!(a, member_id(&["http://a:2380".into()], "other", None));
        assert_ne!(a, member_id(&["http://a:2380".into()], "t", Some(1)));
        let urls = vec!["http://b:1".to_string(), "http://a:1".to_string()];
        let mut rev = urls.clone();
        rev.reverse();
        assert_eq!(member_id(&urls, "t", None), member_id(&rev, "t", None));
        assert_eq!(cluster_id(&[1, 2, 3], "t"), cluster_id(&[3, 1, 2], "t"));
    }
}
