//! Raft snapshots by log size, next to openraft's count of entries (`--snapshot-count`).
//!
//! etcd's `--snapshot-count` counts requests, each its own log entry. cairn's leader batches
//! the writes that arrive together into one entry (`server/batch.rs`), a hundred or more under
//! load, so the same count let the WAL grow to hundreds of MiB between snapshots (and keep it on
//! disk: the log is purged only after a snapshot). Every member also snapshots once its log has
//! grown by `--snapshot-log-bytes` since the last snapshot, or by twice the last snapshot's size
//! if that is larger: a snapshot dumps the whole state machine, so this keeps that work at most
//! half the bytes written, and the log on disk within twice the state.
//!
//! The entries kept after a snapshot for slow followers (`--snapshot-catchup-entries`) are
//! likewise batches: after each snapshot the log is also purged down to at most
//! `--snapshot-log-bytes` of entries.

use std::time::Duration;

use crate::raft::log_store::LogStore;
use crate::raft::state_machine::StateMachine;
use crate::raft::Raft;

const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Whether the log grew enough since the last snapshot to take another.
pub fn due(grown: u64, last_snapshot: u64, threshold: u64) -> bool {
    threshold > 0 && grown >= threshold.max(last_snapshot.saturating_mul(2))
}

pub async fn run(raft: Raft, log: LogStore, sm: StateMachine, threshold: u64) {
    if threshold == 0 {
        return;
    }
    let mut metrics = raft.metrics();
    let mut last = metrics.borrow().snapshot;
    // Log bytes when the last snapshot was taken (or asked for).
    let mut mark = log.bytes_appended();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        let snapshot = metrics.borrow_and_update().snapshot;
        if snapshot != last {
            // One was taken, by us or by openraft's entry count.
            last = snapshot;
            mark = log.bytes_appended();
            // openraft keeps --snapshot-catchup-entries; keep no more than the byte budget of
            // them either (it never purges past the snapshot).
            let keep_from = log.tail_start(threshold);
            if let Some(upto) = keep_from.checked_sub(1) {
                if raft.trigger().purge_log(upto).await.is_err() {
                    return;
                }
            }
            continue;
        }
        let grown = log.bytes_appended().saturating_sub(mark);
        if due(grown, sm.snapshot_bytes(), threshold) {
            tracing::info!(
                grown,
                "the Raft log grew past its size limit; taking a snapshot"
            );
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            // Not again until this one is taken and the log grows again.
            mark = log.bytes_appended();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn due_once_the_log_outgrows_the_threshold_and_twice_the_last_snapshot() {
        let mib = 1 << 20;
        assert!(!due(63 * mib, 0, 64 * mib));
        assert!(due(64 * mib, 0, 64 * mib));
        // A 200 MiB snapshot: the next after 400 MiB of log, not after every 64.
        assert!(!due(399 * mib, 200 * mib, 64 * mib));
        assert!(due(400 * mib, 200 * mib, 64 * mib));
        assert!(!due(u64::MAX, 0, 0), "0 turns it off");
    }
}
