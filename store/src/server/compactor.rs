//! Auto-compaction (`--auto-compaction-mode` / `--auto-compaction-retention`), run by the leader.
//!
//! Periodic mode samples the revision every tenth of the retention window and compacts to the
//! revision that was current one window ago; revision mode compacts to `current - retention`
//! every five minutes, as etcd does.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::AutoCompaction;
use super::node::Node;
use crate::raft::Command;

const REVISION_MODE_INTERVAL: Duration = Duration::from_secs(300);

/// Revision samples taken over time, for periodic mode.
#[derive(Debug, Default)]
pub struct Samples {
    samples: VecDeque<(Instant, i64)>,
}

impl Samples {
    /// Records `revision` at `now` and returns the revision to compact to, if one is due: the
    /// newest sample at least `retention` old, when it is beyond the current compact revision.
    pub fn record(
        &mut self,
        now: Instant,
        revision: i64,
        retention: Duration,
        compacted: i64,
    ) -> Option<i64> {
        self.samples.push_back((now, revision));
        let mut target = None;
        while let Some(&(at, rev)) = self.samples.front() {
            if now.duration_since(at) >= retention {
                target = Some(rev);
                self.samples.pop_front();
            } else {
                break;
            }
        }
        target.filter(|&t| t > compacted)
    }
}

/// The compaction target in revision mode.
pub fn revision_target(current: i64, keep: i64, compacted: i64) -> Option<i64> {
    let t = current - keep;
    (t > compacted && t > 0).then_some(t)
}

pub async fn run(node: Arc<Node>, policy: AutoCompaction) {
    let step = match policy {
        AutoCompaction::Off => return,
        AutoCompaction::Periodic(retention) => (retention / 10).max(Duration::from_secs(1)),
        AutoCompaction::Revisions(_) => REVISION_MODE_INTERVAL,
    };
    let mut samples = Samples::default();
    let mut tick = tokio::time::interval(step);
    loop {
        tick.tick().await;
        let mvcc = node.mvcc();
        let (current, compacted) = (mvcc.current_revision(), mvcc.compact_revision());
        let target = match policy {
            AutoCompaction::Off => None,
            AutoCompaction::Periodic(retention) => {
                samples.record(Instant::now(), current, retention, compacted)
            }
            AutoCompaction::Revisions(keep) => revision_target(current, keep, compacted),
        };
        if node.current_leader() != Some(node.id) {
            continue;
        }
        if let Some(revision) = target {
            match node.propose(Command::Compact { revision }).await {
                Ok(_) => tracing::info!(revision, "auto-compacted"),
                Err(e) => tracing::warn!(revision, error = %e, "auto-compaction failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_compacts_to_the_revision_one_window_ago() {
        let t0 = Instant::now();
        let w = Duration::from_secs(100);
        let mut s = Samples::default();
        assert_eq!(s.record(t0, 10, w, 0), None);
        assert_eq!(s.record(t0 + Duration::from_secs(50), 20, w, 0), None);
        assert_eq!(s.record(t0 + Duration::from_secs(100), 30, w, 0), Some(10));
        assert_eq!(s.record(t0 + Duration::from_secs(160), 40, w, 10), Some(20));
        // Nothing new to compact when the target is not beyond the compact revision.
        assert_eq!(s.record(t0 + Duration::from_secs(200), 40, w, 30), None);
    }

    #[test]
    fn revision_mode() {
        assert_eq!(revision_target(1000, 100, 0), Some(900));
        assert_eq!(revision_target(50, 100, 0), None);
        assert_eq!(revision_target(1000, 100, 900), None);
    }
}
