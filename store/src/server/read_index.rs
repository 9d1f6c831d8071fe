//! ReadIndex rounds on the leader: concurrent linearizable reads share one leadership check.
//!
//! openraft's `get_read_log_id` confirms leadership with a heartbeat round to a quorum every
//! time it is called, so 64 concurrent readers cost 64 rounds of messages to every follower
//! (cairn read at 0.45x etcd's rate on three members). As etcd's linearizable read loop does,
//! reads that arrive while a round is in flight wait for the *next* round, which starts after
//! they arrived, so its answer covers every write committed before each of them; everyone
//! waiting shares it. A round runs in its own task, so a reader that gives up cancels nothing.

use std::sync::{Arc, Mutex};

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::oneshot;

use crate::raft::Raft;

/// Why a round gave no read index.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadIndexError {
    /// Not the leader, or the leader could not reach a quorum: try again (elsewhere).
    #[error("leadership not confirmed: {0}")]
    NotConfirmed(String),
    #[error("raft stopped")]
    Stopped,
}

type RoundResult = Result<u64, ReadIndexError>;

#[derive(Default)]
struct Queue {
    /// Whether the rounds task is running; it exits when it finds nobody waiting.
    running: bool,
    waiting: Vec<oneshot::Sender<RoundResult>>,
}

/// The leader's ReadIndex rounds. Cheap to clone.
#[derive(Clone)]
pub struct ReadIndexRounds {
    raft: Raft,
    queue: Arc<Mutex<Queue>>,
}

impl ReadIndexRounds {
    pub fn new(raft: Raft) -> Self {
        Self {
            raft,
            queue: Arc::default(),
        }
    }

    /// The log index a linearizable read arriving now must see applied, asked of this member as
    /// leader (confirming its leadership with a quorum first).
    pub async fn read_index(&self) -> RoundResult {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.waiting.push(reply);
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            tokio::spawn(rounds(self.raft.clone(), self.queue.clone()));
        }
        answer.await.unwrap_or(Err(ReadIndexError::Stopped))
    }
}

/// Runs rounds while anyone waits; each round answers everyone who arrived before it started.
async fn rounds(raft: Raft, queue: Arc<Mutex<Queue>>) {
    loop {
        let batch = {
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.waiting.is_empty() {
                q.running = false;
                return;
            }
            std::mem::take(&mut q.waiting)
        };
        let result = round(&raft).await;
        for reply in batch {
            // A reader that gave up dropped its receiver; nothing to do for it.
            let _ = reply.send(result.clone());
        }
    }
}

/// One round. openraft's read log id is the later of this term's first entry and the leader's
/// commit index. But openraft restarts a member that held a committed vote for itself as leader
/// of that term, and the commit index is only made durable by the next fsync: a leader killed
/// right after acknowledging writes can come back with an older commit index, and a read at it
/// would miss those writes (found by cairn-torture: a read answered revision 584 after a write
/// had returned 585). Every committed entry is in the leader's log, so waiting also for the
/// last entry it held when the round started covers them; in steady state that only adds the
/// wait for writes already in flight.
async fn round(raft: &Raft) -> RoundResult {
    let last = raft.metrics().borrow().last_log_index.unwrap_or(0);
    match raft.get_read_log_id().await {
        Ok((read_log_id, _)) => Ok(read_log_id.map_or(0, |l| l.index).max(last)),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(e))) => {
            Err(ReadIndexError::NotConfirmed(e.to_string()))
        }
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
            Err(ReadIndexError::NotConfirmed(e.to_string()))
        }
        Err(RaftError::Fatal(_)) => Err(ReadIndexError::Stopped),
    }
}
