//! `etcdserverpb.Lease`: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases.

use std::sync::Arc;

use futures::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::errors::ApiError;
use crate::lease::MAX_TTL;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::raft::network::LeaseQuery;
use crate::raft::{Command, CommandResult};
use crate::server::node::Node;

pub struct LeaseService {
    node: Arc<Node>,
}

impl LeaseService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// The TTL a grant request gets: etcd raises short TTLs to the minimum and refuses huge ones.
pub fn granted_ttl(requested: i64, min_ttl: i64) -> Result<i64, ApiError> {
    if requested > MAX_TTL {
        return Err(ApiError::LeaseTtlTooLarge);
    }
    Ok(requested.max(min_ttl))
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        self.node.refuse_learner()?;
        let req = request.into_inner();
        let ttl = granted_ttl(req.ttl, self.node.min_lease_ttl)?;
        if req.id < 0 {
            return Err(ApiError::LeaseNotFound.into());
        }
        let id = if req.id == 0 {
            self.node.lease_ids.next()
        } else {
            req.id
        };
        match self.node.propose(Command::LeaseGrant { id, ttl }).await? {
            CommandResult::LeaseGranted { id, ttl, revision } => {
                Ok(Response::new(LeaseGrantResponse {
                    header: Some(self.node.header(revision)),
                    id,
                    ttl,
                    error: String::new(),
                }))
            }
            CommandResult::Failed(e) => Err(ApiError::from(e).into()),
            _ => Err(Status::internal(
                "etcdserver: unexpected apply result for lease grant",
            )),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        self.node.refuse_learner()?;
        let user = super::auth::caller(&self.node, &request).await?;
        let id = request.into_inner().id;
        let checked = self.node.sm.auth().checked_revision();
        if user.is_some() || self.node.sm.auth().is_enabled() {
            // Revoking deletes the lease's keys: the caller must be allowed to write each one.
            let keys = self.node.sm.leases().keys(id).map_err(ApiError::from)?;
            for key in keys {
                super::auth::check(
                    &self.node,
                    user.as_deref(),
                    &key,
                    &[],
                    crate::auth::PermKind::Write,
                )?;
            }
        }
        let cmd = super::auth::guard(checked, Command::LeaseRevoke { id });
        match self.node.propose(cmd).await? {
            CommandResult::Revision(rev) => Ok(Response::new(LeaseRevokeResponse {
                header: Some(self.node.header(rev)),
            })),
            CommandResult::Failed(e) => Err(ApiError::from(e).into()),
            CommandResult::AuthFailed(e) => Err(e.into()),
            _ => Err(Status::internal(
                "etcdserver: unexpected apply result for lease revoke",
            )),
        }
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<BoxStream<LeaseKeepAliveResponse>>, Status> {
        self.node.refuse_learner()?;
        let node = self.node.clone();
        let incoming = request.into_inner();
        let out = incoming.then(move |req| {
            let node = node.clone();
            async move {
                let req = req?;
                let ttl = node.lease_query(LeaseQuery::KeepAlive(req.id)).await?;
                Ok(LeaseKeepAliveResponse {
                    header: Some(node.header(node.mvcc().current_revision())),
                    id: req.id,
                    ttl,
                })
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.node.refuse_learner()?;
        let req = request.into_inner();
        let node = &self.node;
        let ttl = node.lease_query(LeaseQuery::TimeToLive(req.id)).await?;
        let record = node.sm.leases().get(req.id).map_err(ApiError::from)?;
        let header = Some(node.header(node.mvcc().current_revision()));
        // etcd answers an unknown lease with TTL -1 rather than an error.
        let Some(record) = record.filter(|_| ttl >= 0) else {
            return Ok(Response::new(LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            }));
        };
        let keys = if req.keys {
            node.sm.leases().keys(req.id).map_err(ApiError::from)?
        } else {
            Vec::new()
        };
        Ok(Response::new(LeaseTimeToLiveResponse {
            header,
            id: req.id,
            ttl,
            granted_ttl: record.ttl,
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let node = &self.node;
        let leases = node.sm.leases().list().map_err(ApiError::from)?;
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(node.header(node.mvcc().current_revision())),
            leases: leases
                .into_iter()
                .map(|l| LeaseStatus { id: l.id })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_bounds() {
        assert_eq!(granted_ttl(1, 2), Ok(2));
        assert_eq!(granted_ttl(60, 2), Ok(60));
        assert_eq!(granted_ttl(MAX_TTL + 1, 2), Err(ApiError::LeaseTtlTooLarge));
    }
}
