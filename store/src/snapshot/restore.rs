//! `cairn snapshot restore`: a new data dir from a backup, from which a NEW cluster starts (as
//! etcdutl's restore).
//!
//! The new data dir holds the backup's keyspace (every key version, the revision index, leases
//! and their keys, the revision and compact revision) but none of the old cluster's membership,
//! member attributes or alarms. Its identity (member id, and a cluster id derived from the new
//! initial cluster and token) is recorded, together with a bootstrap marker holding the new
//! initial membership: `cairn serve` consumes the marker on its first start and initializes Raft
//! with that membership exactly once ([`pending_bootstrap`], [`bootstrap_done`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{SnapshotError, SnapshotFile};
use crate::raft::{codec, Member};
use crate::server::config::{parse_initial_cluster, ConfigError};
use crate::server::identity::{self, Identity};
use crate::storage::{space, Backend, Batch, StorageError};

/// Raft-meta key of the bootstrap marker a restored data dir carries until its first start.
const BOOTSTRAP: &[u8] = b"Rrestored-bootstrap";

/// The keyspaces a restore keeps: the data, not the old cluster's metadata (`M`), except the
/// auth state (users, roles, permissions), which belongs to the data as in etcd's backups.
const RESTORED: [u8; 4] = [
    space::KV,
    space::REVISIONS,
    space::LEASES,
    space::LEASE_KEYS,
];

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("data-dir {0:?} not empty or could not be read")]
    DataDirNotEmpty(PathBuf),
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("encoding: {0}")]
    Codec(#[from] codec::CodecError),
}

pub struct RestoreOptions {
    pub snapshot: PathBuf,
    pub data_dir: PathBuf,
    pub name: String,
    pub initial_cluster: String,
    pub initial_advertise_peer_urls: Vec<String>,
    pub initial_cluster_token: String,
    pub skip_hash_check: bool,
}

/// What a restore produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub member_id: u64,
    pub cluster_id: u64,
    pub revision: i64,
    pub compact_revision: i64,
    pub pairs: u64,
}

/// The new cluster's members with the ids `cairn serve` derives for them, and this member's id
/// (a pure function of the flags, so every restored member agrees).
pub fn new_membership(
    name: &str,
    initial_cluster: &str,
    advertise_peer_urls: &[String],
    token: &str,
) -> Result<(u64, BTreeMap<u64, Member>), ConfigError> {
    let members = parse_initial_cluster(initial_cluster)?;
    let mine = members
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, urls)| urls.clone())
        .ok_or_else(|| ConfigError::NotInInitialCluster {
            name: name.to_string(),
        })?;
    let (mut a, mut b) = (mine.clone(), advertise_peer_urls.to_vec());
    a.sort();
    b.sort();
    if a != b {
        return Err(ConfigError::PeerUrlMismatch {
            name: name.to_string(),
            listed: mine,
            advertised: advertise_peer_urls.to_vec(),
        });
    }
    let all: BTreeMap<u64, Member> = members
        .into_iter()
        .map(|(name, peer_urls)| {
            (
                identity::member_id(&peer_urls, token, None),
                Member { name, peer_urls },
            )
        })
        .collect();
    let me = identity::member_id(&mine, token, None);
    Ok((me, all))
}

fn dir_is_empty(dir: &Path) -> Result<bool, std::io::Error> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// Restores `opts.snapshot` into a new data dir. Refuses a data dir that exists and is not empty.
pub fn restore(opts: &RestoreOptions) -> Result<Restored, RestoreError> {
    if !dir_is_empty(&opts.data_dir).unwrap_or(false) {
        return Err(RestoreError::DataDirNotEmpty(opts.data_dir.clone()));
    }
    let (member_id, members) = new_membership(
        &opts.name,
        &opts.initial_cluster,
        &opts.initial_advertise_peer_urls,
        &opts.initial_cluster_token,
    )?;
    let ids: Vec<u64> = members.keys().copied().collect();
    let cluster_id = identity::cluster_id(&ids, &opts.initial_cluster_token);
    let mut file = SnapshotFile::open(&opts.snapshot, opts.skip_hash_check)?;

    // Build under a temporary name and rename at the end, so an interrupted restore never
    // leaves a data dir that looks usable.
    let building = opts.data_dir.join("member.restoring");
    if building.exists() {
        std::fs::remove_dir_all(&building)?;
    }
    std::fs::create_dir_all(&building)?;
    let mut pairs = 0u64;
    {
        let backend = crate::storage::open(&building.join("db"))?;
        let mut batch = Batch::default();
        file.for_each_pair(|k, v| {
            if !k.first().is_some_and(|p| RESTORED.contains(p)) && k != crate::auth::STATE_KEY {
                return Ok(());
            }
            batch.put(k.to_vec(), v.to_vec());
            pairs += 1;
            if batch.len() >= 10_000 {
                backend.write(std::mem::take(&mut batch))?;
            }
            Ok(())
        })?;
        backend.write(batch)?;
        let header = &file.header;
        let (state_key, state) = crate::raft::state_machine::restored_state_record(
            header.revision,
            header.compact_revision,
        )?;
        backend.insert(&state_key, &state)?;
        backend.insert(BOOTSTRAP, &codec::encode("bootstrap membership", &members)?)?;
        identity::save(
            &backend,
            &Identity {
                member_id,
                cluster_id,
                name: opts.name.clone(),
            },
        )?;
        backend.flush()?;
    }
    std::fs::rename(&building, opts.data_dir.join("member"))?;
    std::fs::File::open(&opts.data_dir)?.sync_all()?;
    Ok(Restored {
        member_id,
        cluster_id,
        revision: file.header.revision,
        compact_revision: file.header.compact_revision,
        pairs,
    })
}

/// The initial membership a restored data dir still has to bootstrap with, if any.
pub fn pending_bootstrap(
    backend: &dyn Backend,
) -> Result<Option<BTreeMap<u64, Member>>, StorageError> {
    match backend.get(BOOTSTRAP)? {
        None => Ok(None),
        Some(raw) => codec::decode("bootstrap membership", &raw)
            .map(Some)
            .map_err(|e| StorageError::Corrupt {
                what: "bootstrap membership",
                detail: e.to_string(),
            }),
    }
}

/// Records that Raft was initialized with the restored membership (durably: a second
/// initialization would be refused by openraft anyway, this just stops asking).
pub fn bootstrap_done(backend: &dyn Backend) -> Result<(), StorageError> {
    backend.remove(BOOTSTRAP)?;
    backend.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_matches_what_serve_derives() {
        let ic = "a=http://127.0.0.1:1,b=http://127.0.0.1:2";
        let (me, all) = new_membership("b", ic, &["http://127.0.0.1:2".into()], "t").unwrap();
        assert_eq!(
            me,
            identity::member_id(&["http://127.0.0.1:2".into()], "t", None)
        );
        assert_eq!(all.len(), 2);
        assert!(all.contains_key(&me));
        assert!(new_membership("c", ic, &["http://127.0.0.1:2".into()], "t").is_err());
        assert!(new_membership("b", ic, &["http://127.0.0.1:9".into()], "t").is_err());
    }
}
