//! The leader's lease duties: start every lease's clock when it becomes leader, and revoke leases
//! whose deadline passed (through Raft, so every member deletes their keys at the same revision).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batch::WriteError;
use super::node::Node;
use crate::raft::{Command, CommandResult};

/// How often the leader looks for expired leases.
const EXPIRY_CHECK: Duration = Duration::from_millis(250);
/// At most this many expired leases are revoked per second (etcd: 1000/s).
const MAX_REVOKES_PER_SECOND: usize = 1000;

/// Promotes or demotes the lessor as this member gains or loses leadership.
pub async fn track_leadership(node: Arc<Node>) {
    let mut metrics = node.raft.metrics();
    loop {
        let is_leader = metrics.borrow_and_update().current_leader == Some(node.id);
        if is_leader {
            node.sm.lessor().promote(Instant::now());
        } else {
            node.sm.lessor().demote();
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Revokes expired leases while this member is the leader.
pub async fn expire(node: Arc<Node>) {
    let mut tick = tokio::time::interval(EXPIRY_CHECK);
    loop {
        tick.tick().await;
        let lessor = node.sm.lessor();
        if !lessor.is_primary() {
            continue;
        }
        let leases = match node.sm.leases().list() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listing leases");
                continue;
            }
        };
        let budget = (MAX_REVOKES_PER_SECOND as u128 * EXPIRY_CHECK.as_millis() / 1000) as usize;
        for id in lessor
            .expired(&leases, Instant::now())
            .into_iter()
            .take(budget)
        {
            // Only as the leader, never forwarded: another leader keeps its own clocks.
            match node.batcher.write(Command::LeaseRevoke { id }).await {
                Ok(result) => {
                    if let CommandResult::Revision(rev) = result {
                        tracing::info!(lease = %format!("{id:x}"), revision = rev, "lease expired");
                    }
                }
                Err(WriteError::NotLeader) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "revoking an expired lease");
                    break;
                }
            }
        }
    }
}
