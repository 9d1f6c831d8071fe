//! A read of the whole state machine as of one applied state that does not hold up writes.
//!
//! Raft snapshots and backups (the Snapshot RPC) must hold exactly what their applied state says.
//! Reading every keyspace under the apply lock did that, but stalled every write for the length
//! of the scan: 274 ms for a 40 MB state machine, once every `--snapshot-count` entries, which
//! was the worst write latency under steady load.
//!
//! The key versions (`K`) and the revision index (`E`) are keyed by revision and a stored entry
//! never changes: writes applied after the state only add entries above its revision, which the
//! scan skips, and only compaction removes entries, so the scan holds compaction off instead of
//! applies (a Compact entry applied meanwhile waits, as it does for HashKV). Snapshot installs
//! take the same lock. The other keyspaces (state-machine metadata, leases and their keys) are
//! small and are read under the apply lock, together with the state.

use std::sync::MutexGuard;

use super::{AppliedState, StateMachine};
use crate::storage::{self, space, Pair, StorageError};

/// Keyspaces read with the state, under the apply lock.
const WITH_STATE: [u8; 3] = [space::SM_META, space::LEASES, space::LEASE_KEYS];
/// Keyspaces keyed by revision, read afterwards up to the state's revision.
const BY_REVISION: [u8; 2] = [space::KV, space::REVISIONS];

/// Every state-machine pair as of `state`; compaction waits until this is dropped.
pub struct StateScan<'a> {
    pub state: AppliedState,
    with_state: std::vec::IntoIter<Pair>,
    by_revision: Box<dyn Iterator<Item = storage::Result<Pair>> + 'a>,
    _compaction: MutexGuard<'a, ()>,
}

impl StateMachine {
    /// Starts a read of the whole state machine as of the current applied state. Writes go on
    /// while it runs; compaction and snapshot installs wait for it.
    pub fn scan_state(&self) -> Result<StateScan<'_>, StorageError> {
        let backend = self.inner.backend.as_ref();
        let mvcc = &self.inner.mvcc;
        // Both locks at once: with the compaction lock taken before the apply lock is released,
        // nothing at or below the state's revision can be removed in between. While something
        // else holds compaction off (HashKV, another scan), wait for it without the apply lock,
        // or every write would wait too.
        let (_apply, compaction) = loop {
            let apply = self.apply_guard();
            if let Some(compaction) = mvcc.try_compaction_guard() {
                break (apply, compaction);
            }
            drop(apply);
            drop(mvcc.compaction_guard());
        };
        let state = self.lock().clone();
        let with_state =
            storage::scan_spaces(backend, &WITH_STATE).collect::<Result<Vec<_>, _>>()?;
        Ok(StateScan {
            state,
            with_state: with_state.into_iter(),
            by_revision: Box::new(storage::scan_spaces(backend, &BY_REVISION)),
            _compaction: compaction,
        })
    }
}

impl Iterator for StateScan<'_> {
    type Item = Result<Pair, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(pair) = self.with_state.next() {
            return Some(Ok(pair));
        }
        loop {
            let (key, value) = match self.by_revision.next()? {
                Ok(pair) => pair,
                Err(e) => return Some(Err(e)),
            };
            match crate::mvcc::revision_of(&key) {
                Some(revision) if revision > self.state.revision => continue,
                Some(_) => return Some(Ok((key, value))),
                None => {
                    return Some(Err(StorageError::Corrupt {
                        what: "state machine",
                        detail: format!("key {key:?} has no revision"),
                    }))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::*;
    use crate::proto::etcdserverpb::PutRequest;
    use crate::raft::state_machine::tests::open;
    use crate::raft::{Command, Entry};

    fn put(key: &str, value: &str, lease: i64) -> Command {
        Command::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            ..Default::default()
        })
    }

    async fn apply(sm: &mut StateMachine, index: u64, cmd: Command) {
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(cmd),
        };
        sm.apply([entry]).await.unwrap();
    }

    fn pairs(scan: StateScan<'_>) -> Vec<Pair> {
        scan.map(Result::unwrap).collect()
    }

    /// Writes, deletes, lease revokes and compactions after a scan has started change nothing it
    /// returns: it reads what the state machine held at its applied state, and writes are not
    /// held up by it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scan_reads_its_applied_state_while_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        let mut index = 0;
        let mut next = || {
            index += 1;
            index
        };
        apply(&mut sm, next(), Command::LeaseGrant { id: 7, ttl: 60 }).await;
        for i in 0..40 {
            apply(&mut sm, next(), put(&format!("k{i:02}"), "one", 0)).await;
        }
        apply(&mut sm, next(), put("leased", "x", 7)).await;
        apply(&mut sm, next(), put("k05", "two", 0)).await;
        let before = pairs(sm.scan_state().unwrap());
        let revision = sm.applied_state().revision;

        let scan = sm.scan_state().unwrap();
        assert_eq!(scan.state.revision, revision);
        // Everything below happens while the scan is open, on another task: the test would hang
        // (and time out) if writes waited for the scan as they used to.
        let mut writer = sm.clone();
        let idx = index;
        let writes = tokio::spawn(async move {
            let mut index = idx;
            for i in 0..40 {
                index += 1;
                apply(&mut writer, index, put(&format!("k{i:02}"), "three", 0)).await;
            }
            index += 1;
            apply(&mut writer, index, Command::LeaseRevoke { id: 7 }).await;
            index += 1;
            let del = crate::proto::etcdserverpb::DeleteRangeRequest {
                key: "k".into(),
                range_end: "l".into(),
                ..Default::default()
            };
            apply(&mut writer, index, Command::DeleteRange(del)).await;
            index += 1;
            apply(&mut writer, index, put("new", "n", 0)).await;
            writer
        });
        let mut writer = tokio::time::timeout(Duration::from_secs(20), writes)
            .await
            .expect("writes went on while a scan was open")
            .unwrap();
        assert!(writer.applied_state().revision > revision + 40);

        // A Compact applied now waits for the scan to end, so it cannot remove what the scan
        // has yet to read.
        let compact_to = writer.applied_state().revision;
        let compacting = tokio::spawn(async move {
            apply(
                &mut writer,
                10_000,
                Command::Compact {
                    revision: compact_to,
                },
            )
            .await;
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !compacting.is_finished(),
            "a Compact was applied during a scan"
        );
        assert_eq!(pairs(scan), before);
        tokio::time::timeout(Duration::from_secs(20), compacting)
            .await
            .expect("the Compact was applied once the scan ended")
            .unwrap();
        assert_ne!(pairs(sm.scan_state().unwrap()), before);
    }

    /// A scan that has to wait for another (a backup running while a Raft snapshot starts) waits
    /// without the apply lock, so writes go on meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scan_waiting_for_another_does_not_hold_writes_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        apply(&mut sm, 1, put("a", "1", 0)).await;
        let first = sm.scan_state().unwrap();
        let second_sm = sm.clone();
        let second = std::thread::spawn(move || pairs(second_sm.scan_state().unwrap()));
        // Nothing observable tells that the second scan is waiting: give its thread a moment to
        // get there, so the writes below run while it waits.
        std::thread::sleep(Duration::from_millis(100));
        let mut writer = sm.clone();
        let writes = tokio::spawn(async move {
            for i in 2..20 {
                apply(&mut writer, i, put("a", &format!("{i}"), 0)).await;
            }
        });
        tokio::time::timeout(Duration::from_secs(20), writes)
            .await
            .expect("writes went on while a second scan waited")
            .unwrap();
        let first = pairs(first);
        let second = second.join().unwrap();
        assert_ne!(
            first, second,
            "the second scan reads the state it started at"
        );
    }

    #[test]
    fn the_two_groups_are_the_whole_state_machine() {
        let mut both: Vec<u8> = WITH_STATE.iter().chain(&BY_REVISION).copied().collect();
        let mut all = space::STATE_MACHINE.to_vec();
        both.sort_unstable();
        all.sort_unstable();
        assert_eq!(both, all);
    }
}
