//! Handing leadership to another voter (MoveLeader, and before the leader removes itself).
//!
//! openraft 0.9 has no TimeoutNow message, and followers refuse to vote while their leader lease
//! (the maximum election timeout since the leader's last message) runs. So the leader goes quiet:
//! it stops heartbeats and elections of its own and holds new proposals (they wait, they do not
//! fail), the target is asked to campaign until the leases have run out and it wins, and then the
//! old leader resumes as a follower. Clients see a pause of about one maximum election timeout.

use std::time::{Duration, Instant};

use super::node::Node;
use crate::raft::NodeId;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransferError {
    #[error("not leader")]
    NotLeader,
    #[error("bad leader transferee")]
    BadTransferee,
    #[error("leadership transfer to {0:x} timed out")]
    TimedOut(NodeId),
}

/// Restores heartbeats, elections and proposals however the transfer ends.
struct Quiet<'a>(&'a Node);

impl Drop for Quiet<'_> {
    fn drop(&mut self) {
        self.0.raft.runtime_config().heartbeat(true);
        self.0.raft.runtime_config().elect(true);
        self.0
            .transferring
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

impl Node {
    /// The voter most caught up with this leader, other than itself.
    pub fn best_transferee(&self) -> Option<NodeId> {
        let cfg = self.configuration();
        cfg.voters
            .iter()
            .filter(|id| **id != self.id)
            .max_by_key(|id| cfg.matched.get(id).copied().unwrap_or(0))
            .copied()
    }

    /// Makes `target` the leader; only on the leader.
    pub async fn transfer_leadership(
        &self,
        target: NodeId,
        max_election_timeout: Duration,
    ) -> Result<(), TransferError> {
        if self.current_leader() != Some(self.id) {
            return Err(TransferError::NotLeader);
        }
        if target == self.id {
            return Ok(());
        }
        let cfg = self.configuration();
        if !cfg.voters.contains(&target) {
            return Err(TransferError::BadTransferee);
        }
        let member = self.member(target).ok_or(TransferError::BadTransferee)?;
        tracing::info!(target = %format!("{target:x}"), "transferring leadership");
        self.transferring
            .store(true, std::sync::atomic::Ordering::Release);
        let _quiet = Quiet(self);
        self.raft.runtime_config().heartbeat(false);
        self.raft.runtime_config().elect(false);
        let deadline = Instant::now() + 4 * max_election_timeout;
        while Instant::now() < deadline {
            match self.current_leader() {
                Some(l) if l == target => {
                    tracing::info!(target = %format!("{target:x}"), "leadership transferred");
                    return Ok(());
                }
                // Another voter won the election: leadership moved away all the same.
                Some(l) if l != self.id => return Ok(()),
                _ => {}
            }
            let _ = self
                .peers
                .campaign(&member, Duration::from_millis(500))
                .await;
            tokio::time::sleep(max_election_timeout / 10).await;
        }
        Err(TransferError::TimedOut(target))
    }
}
