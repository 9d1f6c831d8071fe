//! A running member: its Raft handle, state machine and the two things every API call needs —
//! getting a command committed (forwarding to the leader when this member is not it) and making
//! a read linearizable (ReadIndex, asked of the leader when this member is a follower).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batch::WriteError;
use super::read_index::ReadIndexError;
use crate::api::errors::ApiError;
use crate::mvcc::Mvcc;
use crate::proto::etcdserverpb::ResponseHeader;
use crate::raft::network::{ForwardError, LeaseQuery, PeerError, Peers};
use crate::raft::state_machine::StateMachine;
use crate::raft::{Command, CommandResult, Member, NodeId, Raft};

/// Limits from the flags that the API enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub quota_bytes: i64,
}

pub struct Node {
    pub id: NodeId,
    pub cluster_id: u64,
    pub name: String,
    pub raft: Raft,
    /// Where this member's writes go while it leads (many share one entry).
    pub batcher: super::batch::Batcher,
    /// Where this member's linearizable reads confirm its leadership while it leads.
    pub read_rounds: super::read_index::ReadIndexRounds,
    pub sm: StateMachine,
    pub peers: Peers,
    pub limits: Limits,
    /// How long a request may wait for a leader and for its commit (etcd: 5s + 2 x election).
    pub request_timeout: Duration,
    pub backend: Arc<dyn crate::storage::Backend>,
    /// The database size for the quota check (measured at most every 100 ms).
    pub db_size: crate::alarm::DbSize,
    /// The smallest lease TTL granted (1.5 election timeouts).
    pub min_lease_ttl: i64,
    pub lease_ids: LeaseIdGen,
    /// The cluster token, salted into ids of members added at runtime.
    pub cluster_token: String,
    /// Serializes membership changes on the leader.
    pub membership_lock: tokio::sync::Mutex<()>,
    /// Signalled when the cluster tells this member it was removed.
    pub removed: tokio::sync::Notify,
    /// Set while this leader hands leadership over: new proposals wait for the new leader.
    pub transferring: std::sync::atomic::AtomicBool,
}

/// Server-chosen lease ids: this member's id in the top bits, a counter seeded from the clock
/// below, so ids from different members and restarts do not collide (as etcd's request ids).
pub struct LeaseIdGen {
    prefix: i64,
    counter: std::sync::atomic::AtomicI64,
}

impl LeaseIdGen {
    pub fn new(member_id: NodeId) -> Self {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Self {
            prefix: ((member_id & 0x7fff) as i64) << 48,
            counter: std::sync::atomic::AtomicI64::new((now_ms & 0xff_ffff_ffff) << 8),
        }
    }

    pub fn next(&self) -> i64 {
        let c = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (self.prefix | (c & 0xffff_ffff_ffff)).max(1)
    }
}

/// Short pause before re-reading leadership after a member said it is not the leader.
const LEADER_RECHECK: Duration = Duration::from_millis(50);

impl Node {
    pub fn mvcc(&self) -> &Arc<Mvcc> {
        self.sm.mvcc()
    }

    pub fn current_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_transferring(&self) -> bool {
        self.transferring.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether this member is a learner (learners serve only Status and serializable reads).
    pub fn is_learner(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        membership.get_node(&self.id).is_some() && !membership.voter_ids().any(|v| v == self.id)
    }

    /// etcd refuses everything but Status and serializable reads on a learner.
    pub fn refuse_learner(&self) -> Result<(), ApiError> {
        if self.is_learner() {
            return Err(ApiError::NotSupportedForLearner);
        }
        Ok(())
    }

    pub fn current_term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// The response header every reply carries.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.id,
            revision,
            raft_term: self.current_term(),
        }
    }

    pub(crate) fn member(&self, id: NodeId) -> Option<Member> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.membership_config.membership().get_node(&id).cloned()
    }

    /// Waits until some leader is known, or the deadline passes.
    pub(crate) async fn await_leader(&self, deadline: Instant) -> Result<NodeId, ApiError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let metrics = self
            .raft
            .wait(Some(remaining))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|_| ApiError::NoLeader)?;
        metrics.current_leader.ok_or(ApiError::NoLeader)
    }

    async fn pause(&self, deadline: Instant) -> Result<(), ApiError> {
        if Instant::now() + LEADER_RECHECK >= deadline {
            return Err(ApiError::Timeout);
        }
        tokio::time::sleep(LEADER_RECHECK).await;
        Ok(())
    }

    /// Commits `cmd` through Raft and returns what applying it produced.
    ///
    /// Retries only where the command certainly was not appended (no leader yet, the target said
    /// it is not the leader, the leader could not be reached at all); any other failure leaves the
    /// outcome unknown and is reported, never retried, so a command is never applied twice.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, ApiError> {
        // Past the space quota a write is refused (raising NOSPACE) before it reaches the log.
        crate::alarm::check_quota(self, &cmd).await?;
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let leader = match self.current_leader() {
                Some(l) => l,
                None => self.await_leader(deadline).await?,
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if leader == self.id && self.is_transferring() {
                // Leadership is being handed over: wait for the new leader instead of
                // refreshing followers' leader leases with new entries.
                self.pause(deadline).await?;
                continue;
            }
            if leader == self.id {
                match tokio::time::timeout(remaining, self.batcher.write(cmd.clone())).await {
                    Err(_) => return Err(ApiError::Timeout),
                    Ok(Ok(result)) => return Ok(result),
                    // Never appended, or truncated before commit: safe to retry.
                    Ok(Err(WriteError::NotLeader)) => self.pause(deadline).await?,
                    Ok(Err(e @ (WriteError::Membership(_) | WriteError::Internal(_)))) => {
                        return Err(ApiError::Internal(e.to_string()))
                    }
                    Ok(Err(WriteError::Stopped)) => return Err(ApiError::Stopped),
                }
                continue;
            }
            let Some(member) = self.member(leader) else {
                self.pause(deadline).await?;
                continue;
            };
            match self.peers.propose(&member, &cmd, remaining).await {
                Ok(Ok(result)) => return Ok(result),
                Ok(Err(ForwardError::NotLeader)) => self.pause(deadline).await?,
                Ok(Err(ForwardError::LeaderChanged)) => return Err(ApiError::LeaderChanged),
                Ok(Err(ForwardError::Stopped)) => self.pause(deadline).await?,
                Err(PeerError::Call(status)) if not_sent(&status) => self.pause(deadline).await?,
                Err(PeerError::Call(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                    return Err(ApiError::Timeout)
                }
                Err(_) => return Err(ApiError::TimeoutDueToConnectionLost),
            }
        }
    }

    /// Asks the leader (this member or another) a lease question.
    pub async fn lease_query(&self, query: LeaseQuery) -> Result<i64, ApiError> {
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let leader = match self.current_leader() {
                Some(l) => l,
                None => self.await_leader(deadline).await?,
            };
            if leader == self.id {
                return Ok(crate::lease::answer(
                    query,
                    self.sm.leases(),
                    self.sm.lessor(),
                    Instant::now(),
                )?);
            }
            let Some(member) = self.member(leader) else {
                self.pause(deadline).await?;
                continue;
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.peers.lease(&member, query, remaining).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(_)) | Err(_) => self.pause(deadline).await?,
            }
        }
    }

    /// Returns once this member's state reflects every write committed before the call
    /// (the ReadIndex protocol).
    pub async fn read_index(&self) -> Result<(), ApiError> {
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let leader = match self.current_leader() {
                Some(l) => l,
                None => self.await_leader(deadline).await?,
            };
            if leader == self.id {
                match self.read_rounds.read_index().await {
                    Ok(index) => return self.wait_applied(index, deadline).await,
                    Err(ReadIndexError::NotConfirmed(_)) => self.pause(deadline).await?,
                    Err(ReadIndexError::Stopped) => return Err(ApiError::Stopped),
                }
                continue;
            }
            let Some(member) = self.member(leader) else {
                self.pause(deadline).await?;
                continue;
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.peers.read_index(&member, remaining).await {
                Ok(index) => return self.wait_applied(index, deadline).await,
                Err(_) => self.pause(deadline).await?,
            }
        }
    }

    /// Waits until this member applied the log up to `index` (the read index).
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ApiError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map(|_| ())
            .map_err(|_| ApiError::Timeout)
    }
}

/// Whether a failed peer call certainly never reached the peer (the connection was refused).
fn not_sent(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.message().contains("connect")
}
