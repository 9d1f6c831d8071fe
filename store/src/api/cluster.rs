//! `etcdserverpb.Cluster`: MemberList today; membership changes arrive with the membership work.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::errors::ApiError;
use crate::cluster::MembershipOp;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{
    Member as PbMember, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
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

impl ClusterService {
    async fn change(&self, op: MembershipOp) -> Result<(u64, Vec<PbMember>), Status> {
        let id = self
            .node
            .change_membership(op)
            .await
            .map_err(ApiError::from)?;
        Ok((id, members(&self.node)))
    }

    fn header(&self) -> Option<crate::proto::etcdserverpb::ResponseHeader> {
        Some(self.node.header(self.node.mvcc().current_revision()))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        super::auth::require_admin(&self.node, &request).await?;
        let req = request.into_inner();
        let (id, members) = self
            .change(MembershipOp::Add {
                peer_urls: req.peer_ur_ls.clone(),
                learner: req.is_learner,
            })
            .await?;
        let member = members
            .iter()
            .find(|m| m.id == id)
            .cloned()
            .unwrap_or(PbMember {
                id,
                peer_ur_ls: req.peer_ur_ls,
                is_learner: req.is_learner,
                ..Default::default()
            });
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: Some(member),
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        super::auth::require_admin(&self.node, &request).await?;
        let (_, members) = self
            .change(MembershipOp::Remove {
                id: request.into_inner().id,
            })
            .await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members,
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        super::auth::require_admin(&self.node, &request).await?;
        let req = request.into_inner();
        let (_, members) = self
            .change(MembershipOp::Update {
                id: req.id,
                peer_urls: req.peer_ur_ls,
            })
            .await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(),
            members,
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        super::auth::require_admin(&self.node, &request).await?;
        let (_, members) = self
            .change(MembershipOp::Promote {
                id: request.into_inner().id,
            })
            .await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members,
        }))
    }

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
