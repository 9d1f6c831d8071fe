//! The server side of the peer protocol (cairn's own, on the peer URL): hands Raft messages to openraft, commits proposals
//! forwarded by followers, and answers read-index requests.

use serde::Serialize;
use tonic::{Request, Response, Status};

use std::sync::Arc;

use super::batch::WriteError;
use super::node::Node;
use crate::proto::cairnpeerpb::peer_server::Peer;
use crate::proto::cairnpeerpb::{Payload, ReadIndexRequest, ReadIndexResponse};
use crate::raft::codec;
use crate::raft::network::{decode_command, ForwardError, ForwardResult};

pub struct PeerService {
    node: Arc<Node>,
}

impl PeerService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    fn is_leader(&self) -> bool {
        self.node.current_leader() == Some(self.node.id)
    }
}

fn reply<T: Serialize>(value: &T) -> Result<Response<Payload>, Status> {
    let data = codec::encode("peer reply", value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(Payload { data }))
}

fn decode<T: serde::de::DeserializeOwned>(req: &Payload) -> Result<T, Status> {
    codec::decode("peer request", &req.data).map_err(|e| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req = decode(request.get_ref())?;
        reply(&self.node.raft.append_entries(req).await)
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req = decode(request.get_ref())?;
        reply(&self.node.raft.vote(req).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Payload>,
    ) -> Result<Response<Payload>, Status> {
        let req = decode(request.get_ref())?;
        reply(&self.node.raft.install_snapshot(req).await)
    }

    async fn propose(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let cmd = decode_command(&request.get_ref().data)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Never forward again: a follower with stale leader information retries itself.
        let result: ForwardResult = if !self.is_leader() || self.node.is_transferring() {
            Err(ForwardError::NotLeader)
        } else {
            match self.node.batcher.write(cmd).await {
                Ok(result) => Ok(result),
                // openraft answers ForwardToLeader only for entries it never appended or truncated
                // (which can never commit), so the follower may safely retry.
                Err(WriteError::NotLeader) => Err(ForwardError::NotLeader),
                Err(WriteError::Membership(_) | WriteError::Internal(_)) => {
                    Err(ForwardError::LeaderChanged)
                }
                Err(WriteError::Stopped) => Err(ForwardError::Stopped),
            }
        };
        reply(&result)
    }

    async fn removed(&self, _request: Request<Payload>) -> Result<Response<Payload>, Status> {
        tracing::warn!("the cluster says this member was removed");
        self.node.removed.notify_one();
        reply(&true)
    }

    async fn campaign(&self, _request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let started = self.node.raft.trigger().elect().await.is_ok();
        reply(&started)
    }

    async fn lease(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let query: crate::raft::network::LeaseQuery = decode(request.get_ref())?;
        let answer: Result<i64, ForwardError> = if !self.is_leader() {
            Err(ForwardError::NotLeader)
        } else {
            let now = std::time::Instant::now();
            crate::lease::answer(query, self.node.sm.leases(), self.node.sm.lessor(), now)
                .map_err(|_| ForwardError::Stopped)
        };
        reply(&answer)
    }

    async fn membership(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let op: crate::cluster::MembershipOp = decode(request.get_ref())?;
        reply(&self.node.change_membership_as_leader(&op).await)
    }

    async fn cluster_info(&self, _request: Request<Payload>) -> Result<Response<Payload>, Status> {
        reply(&self.node.cluster_info())
    }

    async fn read_index(
        &self,
        _request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        if !self.is_leader() {
            return Err(Status::failed_precondition("not leader"));
        }
        match self.node.read_rounds.read_index().await {
            Ok(index) => Ok(Response::new(ReadIndexResponse { index })),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }
}
