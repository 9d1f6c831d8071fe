//! Carrying out membership changes on the leader (one at a time), forwarding them from
//! followers, and discovering this member's identity when it joins a running cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::ChangeMembers;

use super::node::Node;
use crate::cluster::{self, ClusterInfo, Configuration, MembershipError, MembershipOp, Plan};
use crate::raft::network::PeerError;
use crate::raft::{Member, NodeId};

/// etcd's `--max-learners` default.
pub const MAX_LEARNERS: usize = 1;

impl Node {
    /// The Raft configuration and replication progress, as the leader sees them.
    pub fn configuration(&self) -> Configuration {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let mut matched: BTreeMap<NodeId, u64> = BTreeMap::new();
        let last = metrics.last_log_index.unwrap_or(0);
        matched.insert(self.id, last);
        if let Some(repl) = &metrics.replication {
            for (id, m) in repl {
                if let Some(m) = m {
                    matched.insert(*id, m.index);
                }
            }
        }
        Configuration {
            voters: membership.voter_ids().collect::<BTreeSet<_>>(),
            nodes: membership.nodes().map(|(id, m)| (*id, m.clone())).collect(),
            leader_last_index: last,
            matched,
        }
    }

    /// Runs a membership change; only on the leader.
    pub async fn change_membership_as_leader(
        &self,
        op: &MembershipOp,
    ) -> Result<NodeId, MembershipError> {
        if self.current_leader() != Some(self.id) {
            return Err(MembershipError::NotLeader);
        }
        // Never two membership changes at once.
        let _one_at_a_time = self.membership_lock.lock().await;
        let cfg = self.configuration();
        let new_id = crate::server::identity::member_id(
            match op {
                MembershipOp::Add { peer_urls, .. } => peer_urls,
                _ => &[][..],
            },
            &self.cluster_token,
            Some(salt()),
        );
        let plan = cluster::plan(op, &cfg, new_id, MAX_LEARNERS)?;
        if plan == (Plan::RemoveVoter { id: self.id }) {
            // Leader-aware removal: hand leadership to the most caught-up voter first; the new
            // leader then carries out the removal (the caller retries there).
            if let Some(target) = self.best_transferee() {
                let max = Duration::from_millis(self.raft.config().election_timeout_max);
                if let Err(e) = self.transfer_leadership(target, max).await {
                    tracing::warn!(error = %e, "could not hand leadership over; removing the leader directly");
                } else {
                    return Err(MembershipError::NotLeader);
                }
            }
        }
        tracing::info!(?plan, "membership change");
        let raft_err = |e: openraft::error::RaftError<
            NodeId,
            openraft::error::ClientWriteError<NodeId, Member>,
        >| {
            match e.forward_to_leader::<Member>() {
                Some(_) => MembershipError::NotLeader,
                None => MembershipError::Raft(e.to_string()),
            }
        };
        let removing = match &plan {
            Plan::RemoveVoter { id } | Plan::RemoveLearner { id } => self.member(*id),
            _ => None,
        };
        let id = match plan {
            Plan::AddLearner { id, member } => {
                self.raft
                    .add_learner(id, member, false)
                    .await
                    .map_err(raft_err)?;
                id
            }
            Plan::AddVoter { id, member } => {
                self.raft
                    .add_learner(id, member, false)
                    .await
                    .map_err(raft_err)?;
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(raft_err)?;
                id
            }
            Plan::Promote { id } => {
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(raft_err)?;
                id
            }
            Plan::RemoveVoter { id } => {
                // Removing the leader itself: openraft commits the new configuration, then this
                // member steps down and the remaining voters elect a leader.
                self.raft
                    .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await
                    .map_err(raft_err)?;
                id
            }
            Plan::RemoveLearner { id } => {
                self.raft
                    .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                    .await
                    .map_err(raft_err)?;
                id
            }
            Plan::Update { id, member } => {
                self.raft
                    .change_membership(
                        ChangeMembers::SetNodes(BTreeMap::from([(id, member)])),
                        true,
                    )
                    .await
                    .map_err(raft_err)?;
                id
            }
        };
        if let Some(member) = removing {
            // The removed member stops being replicated to, so it may never see the
            // configuration without itself: tell it (best effort; it may be down already).
            if let Err(e) = self.peers.removed(&member, Duration::from_secs(1)).await {
                tracing::debug!(error = %e, "could not tell the removed member");
            }
        }
        Ok(id)
    }

    /// Runs a membership change on the leader, wherever that is.
    pub async fn change_membership(&self, op: MembershipOp) -> Result<NodeId, MembershipError> {
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let leader = match self.current_leader() {
                Some(l) => l,
                None => self
                    .await_leader(deadline)
                    .await
                    .map_err(|e| MembershipError::Raft(e.to_string()))?,
            };
            let result = if leader == self.id {
                self.change_membership_as_leader(&op).await
            } else {
                let Some(member) = self.member(leader) else {
                    return Err(MembershipError::Raft("leader unknown".into()));
                };
                let remaining = deadline.saturating_duration_since(Instant::now());
                match self.peers.membership(&member, &op, remaining).await {
                    Ok(r) => r,
                    Err(PeerError::Call(s)) if s.code() == tonic::Code::Unavailable => {
                        Err(MembershipError::NotLeader)
                    }
                    Err(e) => Err(MembershipError::Raft(e.to_string())),
                }
            };
            match result {
                Err(MembershipError::NotLeader) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// What a joining member needs: the cluster id and every member's peer URLs.
    pub fn cluster_info(&self) -> ClusterInfo {
        let cfg = self.configuration();
        ClusterInfo {
            cluster_id: self.cluster_id,
            members: cfg
                .nodes
                .into_iter()
                .map(|(id, m)| (id, m.peer_urls))
                .collect(),
        }
    }
}

fn salt() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Asks the listed peers who this member is (for `--initial-cluster-state existing`).
pub async fn discover(
    peers: &crate::raft::network::Peers,
    initial: &[(String, Vec<String>)],
    my_peer_urls: &[String],
    timeout: Duration,
) -> Result<(NodeId, u64), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no other member listed in --initial-cluster");
    while Instant::now() < deadline {
        for (name, urls) in initial {
            if urls.iter().any(|u| my_peer_urls.contains(u)) {
                continue;
            }
            let member = Member {
                name: name.clone(),
                peer_urls: urls.clone(),
            };
            match peers.cluster_info(&member, Duration::from_secs(2)).await {
                Ok(info) => match cluster::find_member(&info, my_peer_urls) {
                    Some(id) => return Ok((id, info.cluster_id)),
                    None => last = format!("{name} does not list peer URLs {my_peer_urls:?}: add this member first (member add)"),
                },
                Err(e) => last = format!("{name}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last)
}
