//! Membership: what a MemberAdd / Remove / Promote / Update means for the Raft configuration,
//! decided by pure functions ([`plan`]) and carried out by the leader (`server::membership`).
//!
//! Rules, as etcd has them: peer URLs are unique; at most `max_learners` learners; a learner is
//! promoted only once its log is within 90% of the leader's; ids are never reused (new ids are
//! salted with the time); one change at a time.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::raft::{Member, NodeId};

/// A membership change a client asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipOp {
    Add {
        peer_urls: Vec<String>,
        learner: bool,
    },
    Remove {
        id: NodeId,
    },
    Promote {
        id: NodeId,
    },
    Update {
        id: NodeId,
        peer_urls: Vec<String>,
    },
}

/// etcd's membership errors (codes and messages in `api::errors`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MembershipError {
    #[error("member not found")]
    MemberNotFound,
    #[error("Peer URLs already exists")]
    PeerUrlExists,
    #[error("given member URLs are invalid")]
    BadUrls,
    #[error("can only promote a learner member")]
    NotLearner,
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("too many learner members in cluster")]
    TooManyLearners,
    #[error("re-configuration failed due to not enough started members")]
    NotEnoughStarted,
    /// The member asked is not the leader (safe to retry with the leader).
    #[error("not leader")]
    NotLeader,
    #[error("{0}")]
    Raft(String),
}

/// The Raft configuration as the planner sees it.
#[derive(Debug, Clone, Default)]
pub struct Configuration {
    pub voters: BTreeSet<NodeId>,
    pub nodes: BTreeMap<NodeId, Member>,
    /// The leader's last log index and each member's matched index (leader's view).
    pub leader_last_index: u64,
    pub matched: BTreeMap<NodeId, u64>,
}

impl Configuration {
    pub fn learners(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes
            .keys()
            .copied()
            .filter(|id| !self.voters.contains(id))
    }
}

/// What the leader does for a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    AddLearner { id: NodeId, member: Member },
    AddVoter { id: NodeId, member: Member },
    Promote { id: NodeId },
    RemoveVoter { id: NodeId },
    RemoveLearner { id: NodeId },
    Update { id: NodeId, member: Member },
}

fn valid_url(u: &str) -> bool {
    url::Url::parse(u).is_ok_and(|p| {
        matches!(p.scheme(), "http" | "https") && p.host().is_some() && p.port().is_some()
    })
}

fn check_urls(
    cfg: &Configuration,
    urls: &[String],
    except: Option<NodeId>,
) -> Result<(), MembershipError> {
    if urls.is_empty() || !urls.iter().all(|u| valid_url(u)) {
        return Err(MembershipError::BadUrls);
    }
    let taken = cfg
        .nodes
        .iter()
        .filter(|(id, _)| Some(**id) != except)
        .any(|(_, m)| m.peer_urls.iter().any(|u| urls.contains(u)));
    if taken {
        return Err(MembershipError::PeerUrlExists);
    }
    Ok(())
}

/// Whether a learner's log is close enough to the leader's to be promoted (etcd: 90%).
pub fn learner_ready(matched: u64, leader_last: u64) -> bool {
    matched as f64 >= leader_last as f64 * 0.9
}

/// Decides how to carry out `op` on `cfg`; `new_id` is the id a new member gets.
pub fn plan(
    op: &MembershipOp,
    cfg: &Configuration,
    new_id: NodeId,
    max_learners: usize,
) -> Result<Plan, MembershipError> {
    match op {
        MembershipOp::Add { peer_urls, learner } => {
            check_urls(cfg, peer_urls, None)?;
            let member = Member {
                name: String::new(),
                peer_urls: peer_urls.clone(),
            };
            if *learner {
                if cfg.learners().count() >= max_learners {
                    return Err(MembershipError::TooManyLearners);
                }
                Ok(Plan::AddLearner { id: new_id, member })
            } else {
                // Strict reconfiguration check: the new voter is not started yet, so the voters
                // that are must still form a quorum of the grown configuration.
                let started = cfg
                    .voters
                    .iter()
                    .filter(|id| cfg.matched.contains_key(id))
                    .count();
                if started < cfg.voters.len().div_ceil(2) + 1 {
                    return Err(MembershipError::NotEnoughStarted);
                }
                Ok(Plan::AddVoter { id: new_id, member })
            }
        }
        MembershipOp::Remove { id } => {
            if !cfg.nodes.contains_key(id) {
                return Err(MembershipError::MemberNotFound);
            }
            if cfg.voters.contains(id) {
                Ok(Plan::RemoveVoter { id: *id })
            } else {
                Ok(Plan::RemoveLearner { id: *id })
            }
        }
        MembershipOp::Promote { id } => {
            if !cfg.nodes.contains_key(id) {
                return Err(MembershipError::MemberNotFound);
            }
            if cfg.voters.contains(id) {
                return Err(MembershipError::NotLearner);
            }
            let matched = cfg.matched.get(id).copied().unwrap_or(0);
            if !learner_ready(matched, cfg.leader_last_index) {
                return Err(MembershipError::LearnerNotReady);
            }
            Ok(Plan::Promote { id: *id })
        }
        MembershipOp::Update { id, peer_urls } => {
            let Some(current) = cfg.nodes.get(id) else {
                return Err(MembershipError::MemberNotFound);
            };
            check_urls(cfg, peer_urls, Some(*id))?;
            Ok(Plan::Update {
                id: *id,
                member: Member {
                    name: current.name.clone(),
                    peer_urls: peer_urls.clone(),
                },
            })
        }
    }
}

/// What a member needs to know to join a running cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: u64,
    pub members: Vec<(NodeId, Vec<String>)>,
}

/// Finds the id the cluster gave to the member with these peer URLs.
pub fn find_member(info: &ClusterInfo, my_peer_urls: &[String]) -> Option<NodeId> {
    let mut mine = my_peer_urls.to_vec();
    mine.sort();
    info.members.iter().find_map(|(id, urls)| {
        let mut u = urls.clone();
        u.sort();
        (u == mine).then_some(*id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(voters: &[u64], learners: &[u64]) -> Configuration {
        let mut c = Configuration::default();
        for &v in voters.iter().chain(learners) {
            c.nodes.insert(
                v,
                Member {
                    name: format!("m{v}"),
                    peer_urls: vec![format!("http://10.0.0.{v}:2380")],
                },
            );
            c.matched.insert(v, 100);
        }
        c.voters = voters.iter().copied().collect();
        c.leader_last_index = 100;
        c
    }

    #[test]
    fn add_checks_urls_and_learner_limit() {
        let c = cfg(&[1, 2, 3], &[]);
        let add = |urls: &[&str], learner| MembershipOp::Add {
            peer_urls: urls.iter().map(|s| s.to_string()).collect(),
            learner,
        };
        assert_eq!(
            plan(&add(&["http://10.0.0.1:2380"], true), &c, 9, 1),
            Err(MembershipError::PeerUrlExists)
        );
        assert_eq!(
            plan(&add(&["not a url"], true), &c, 9, 1),
            Err(MembershipError::BadUrls)
        );
        assert_eq!(
            plan(&add(&[], true), &c, 9, 1),
            Err(MembershipError::BadUrls)
        );
        assert!(matches!(
            plan(&add(&["http://10.0.0.9:2380"], true), &c, 9, 1),
            Ok(Plan::AddLearner { id: 9, .. })
        ));
        let with_learner = cfg(&[1, 2, 3], &[4]);
        assert_eq!(
            plan(&add(&["http://10.0.0.9:2380"], true), &with_learner, 9, 1),
            Err(MembershipError::TooManyLearners)
        );
        assert!(matches!(
            plan(&add(&["http://10.0.0.9:2380"], false), &c, 9, 1),
            Ok(Plan::AddVoter { .. })
        ));
    }

    #[test]
    fn adding_a_voter_needs_a_started_quorum() {
        let mut c = cfg(&[1, 2, 3], &[]);
        c.matched.remove(&3);
        c.matched.remove(&2);
        let op = MembershipOp::Add {
            peer_urls: vec!["http://10.0.0.9:2380".into()],
            learner: false,
        };
        assert_eq!(plan(&op, &c, 9, 1), Err(MembershipError::NotEnoughStarted));
    }

    #[test]
    fn promote_only_a_learner_in_sync() {
        let mut c = cfg(&[1, 2, 3], &[4]);
        assert_eq!(
            plan(&MembershipOp::Promote { id: 1 }, &c, 0, 1),
            Err(MembershipError::NotLearner)
        );
        assert_eq!(
            plan(&MembershipOp::Promote { id: 7 }, &c, 0, 1),
            Err(MembershipError::MemberNotFound)
        );
        c.matched.insert(4, 50);
        assert_eq!(
            plan(&MembershipOp::Promote { id: 4 }, &c, 0, 1),
            Err(MembershipError::LearnerNotReady)
        );
        c.matched.insert(4, 95);
        assert_eq!(
            plan(&MembershipOp::Promote { id: 4 }, &c, 0, 1),
            Ok(Plan::Promote { id: 4 })
        );
    }

    #[test]
    fn remove_and_update() {
        let c = cfg(&[1, 2, 3], &[4]);
        assert_eq!(
            plan(&MembershipOp::Remove { id: 2 }, &c, 0, 1),
            Ok(Plan::RemoveVoter { id: 2 })
        );
        assert_eq!(
            plan(&MembershipOp::Remove { id: 4 }, &c, 0, 1),
            Ok(Plan::RemoveLearner { id: 4 })
        );
        assert_eq!(
            plan(&MembershipOp::Remove { id: 8 }, &c, 0, 1),
            Err(MembershipError::MemberNotFound)
        );
        let up = MembershipOp::Update {
            id: 2,
            peer_urls: vec!["http://10.0.0.1:2380".into()],
        };
        assert_eq!(plan(&up, &c, 0, 1), Err(MembershipError::PeerUrlExists));
        let up = MembershipOp::Update {
            id: 2,
            peer_urls: vec!["http://10.0.0.2:2381".into()],
        };
        assert!(matches!(
            plan(&up, &c, 0, 1),
            Ok(Plan::Update { id: 2, .. })
        ));
    }

    #[test]
    fn joining_member_finds_its_id() {
        let info = ClusterInfo {
            cluster_id: 1,
            members: vec![(5, vec!["http://b:1".into(), "http://a:1".into()])],
        };
        assert_eq!(
            find_member(&info, &["http://a:1".into(), "http://b:1".into()]),
            Some(5)
        );
        assert_eq!(find_member(&info, &["http://c:1".into()]), None);
    }
}
