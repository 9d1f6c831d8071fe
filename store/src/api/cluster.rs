//! `etcdserverpb.Cluster`: MemberList today; membership changes arrive with the membership work.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{Member as PbMember, MemberListRequest, MemberListResponse};
use crate::server::node::Node;

pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// The members as etcd lists them: voters and learners, with published names and client URLs.
pub fn members(node: &Node) -> Vec<PbMember> {
    let metrics = node.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let mut out: Vec<PbMember> = membership
        .nodes()
        .map(|(id, m)| {
            let attrs = node.sm.member_attributes(*id);
            PbMember {
                id: *id,
                // etcd shows an empty name until a member has started and published itself.
                name: attrs.as_ref().map(|a| a.name.clone()).unwrap_or_default(),
                peer_ur_ls: m.peer_urls.clone(),
                client_ur_ls: attrs.map(|a| a.client_urls).unwrap_or_default(),
                is_learner: !voters.contains(id),
            }
        })
        .collect();
    out.sort_by_key(|m| m.id);
    out
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if request.get_ref().linearizable {
            self.node.read_index().await?;
        }
        Ok(Response::new(MemberListResponse {
            header: Some(self.node.header(self.node.mvcc().current_revision())),
            members: members(&self.node),
        }))
    }
}
