use super::legacy::{LEGACY_COMMITTED, LEGACY_PURGED, LEGACY_VOTE};
use super::*;
use crate::storage::space;
use openraft::EntryPayload;

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Blank,
    }
}

fn dirs() -> (tempfile::TempDir, Arc<dyn Backend>) {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(crate::storage::open(&dir.path().join("db")).unwrap());
    (dir, backend)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn ids_and_votes_round_trip() {
    let id = LogId::new(CommittedLeaderId::new(7, 3), 42);
    assert_eq!(from_pos(&to_pos(&id)), id);
    let vote = Vote {
        leader_id: LeaderId::new(5, 2),
        committed: true,
    };
    assert_eq!(from_vote(&to_vote(&vote)), vote);
}

#[test]
fn a_log_kept_in_the_backend_moves_into_the_wal() {
    let (dir, backend) = dirs();
    let vote = Vote::new(4, 1);
    backend
        .insert(LEGACY_VOTE, &codec::encode("vote", &vote).unwrap())
        .unwrap();
    let purged = entry(1, 2).log_id;
    backend
        .insert(LEGACY_PURGED, &codec::encode("purged", &purged).unwrap())
        .unwrap();
    for i in 3..=5 {
        let e = entry(2, i);
        let mut key = vec![space::RAFT_LOG];
        key.extend_from_slice(&i.to_be_bytes());
        backend
            .insert(&key, &codec::encode("entry", &e).unwrap())
            .unwrap();
    }
    let committed = Some(entry(2, 4).log_id);
    backend
        .insert(LEGACY_COMMITTED, &codec::encode("c", &committed).unwrap())
        .unwrap();

    let wal_dir = wal_dir(dir.path());
    let store = LogStore::open(&wal_dir, backend.clone()).unwrap();
    let state = store.wal.log_state();
    assert_eq!(state.vote.as_ref().map(from_vote), Some(vote));
    assert_eq!(state.purged.as_ref().map(from_pos), Some(purged));
    assert_eq!(state.last.as_ref().map(from_pos), Some(entry(2, 5).log_id));
    assert_eq!(state.committed.as_ref().map(from_pos), committed);
    for space in [space::RAFT_LOG, space::RAFT_META] {
        assert_eq!(
            crate::storage::scan_prefix(backend.as_ref(), &[space]).count(),
            0,
            "the backend keeps nothing of the log"
        );
    }
    drop(store);
    // Reopening finds the WAL as it was, and moves nothing again.
    let mut store = LogStore::open(&wal_dir, backend).unwrap();
    let rt = rt();
    let entries = rt.block_on(store.try_get_log_entries(3..=5)).unwrap();
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, vec![3, 4, 5]);
    assert_eq!(rt.block_on(store.read_vote()).unwrap(), Some(vote));
}

/// openraft's calls, through a restart: what was reported durable is what a reopened log
/// holds, truncation and purge included.
#[test]
fn the_log_survives_a_reopen_as_openraft_left_it() {
    let (dir, backend) = dirs();
    let wal_dir = wal_dir(dir.path());
    let config = wal::Config {
        segment_size: 4096,
        cache_bytes: 512,
    };
    let rt = rt();
    {
        let mut store = LogStore::open_with(&wal_dir, backend.clone(), config).unwrap();
        rt.block_on(async {
            store.save_vote(&Vote::new(2, 1)).await.unwrap();
            for i in 0..200 {
                let (tx, rx) = tokio::sync::oneshot::channel();
                store
                    .wal
                    .append(
                        vec![(
                            to_pos(&entry(2, i).log_id),
                            codec::encode("e", &entry(2, i)).unwrap(),
                        )],
                        Some(Box::new(move |r| {
                            let _ = tx.send(r);
                        })),
                    )
                    .unwrap();
                rx.await.unwrap().unwrap();
            }
            store.truncate(entry(2, 150).log_id).await.unwrap();
            store.purge(entry(2, 100).log_id).await.unwrap();
            store
                .save_committed(Some(entry(2, 120).log_id))
                .await
                .unwrap();
            // The commit index is durable with the next flush.
            store.save_vote(&Vote::new(3, 1)).await.unwrap();
        });
    }
    let mut store = LogStore::open_with(&wal_dir, backend, config).unwrap();
    rt.block_on(async {
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(entry(2, 100).log_id));
        assert_eq!(state.last_log_id, Some(entry(2, 149).log_id));
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        assert_eq!(
            store.read_committed().await.unwrap(),
            Some(entry(2, 120).log_id)
        );
        let all = store.try_get_log_entries(0..1000).await.unwrap();
        let indexes: Vec<u64> = all.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, (101..150).collect::<Vec<_>>());
    });
    // 4 KiB segments: the purge deleted the ones holding only entries up to 100.
    let first = std::fs::read_dir(&wal_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".wal").map(str::to_string))
        })
        .min()
        .unwrap();
    assert_ne!(first, format!("{:016x}", 0), "segment 0 was purged");
}
