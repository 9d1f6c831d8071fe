//! The Raft peer client: openraft's RPCs, forwarded proposals and read-index requests, as gRPC
//! calls to a member's peer URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

use super::codec;
use super::{Command, CommandResult, Member, NodeId, TypeConfig};
use crate::proto::cairnpeerpb::peer_client::PeerClient;
use crate::proto::cairnpeerpb::{Payload, ReadIndexRequest};
use crate::tls::connect::TlsConnector;
use crate::tls::TlsReloader;

/// Why a forwarded proposal was not committed by the member it was sent to.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// The member is not the leader and did not append the proposal: safe to retry elsewhere.
    #[error("not leader")]
    NotLeader,
    /// Leadership changed after the proposal was submitted: its outcome is unknown.
    #[error("leader changed")]
    LeaderChanged,
    #[error("server stopped")]
    Stopped,
}

pub type ForwardResult = Result<CommandResult, ForwardError>;

/// Lease questions only the leader can answer (it alone tracks deadlines).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum LeaseQuery {
    /// Refreshes the lease; answers its granted TTL, or 0 for an unknown lease.
    KeepAlive(i64),
    /// Answers the seconds left, or -1 for an unknown lease.
    TimeToLive(i64),
}

/// Failures talking to a peer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer {url}: invalid URL: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("peer has no URL")]
    NoUrl,
    #[error("peer {url}: an https peer URL needs --peer-cert-file and --peer-key-file")]
    NoTls { url: String },
    /// The request may have reached the peer; its outcome is unknown.
    #[error("peer call failed: {0}")]
    Call(#[from] tonic::Status),
    #[error("peer answered garbage: {0}")]
    Codec(#[from] codec::CodecError),
}

/// Cached channels to peers, keyed by peer URL (channels reconnect on their own).
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// The peer side's TLS (`--peer-*` files) for `https` peer URLs. Each new connection takes
    /// the current config, so reconnects after a rotation present the new certificate.
    tls: Option<Arc<TlsReloader>>,
}

/// How long dialing a peer (TCP and, for https, the TLS handshake) may take.
const PEER_DIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Raft messages can be large (a batch of entries, a snapshot); allow anything.
const MAX_PEER_MESSAGE: usize = usize::MAX;

impl Peers {
    pub fn new(tls: Option<Arc<TlsReloader>>) -> Self {
        Self {
            channels: Arc::default(),
            tls,
        }
    }

    pub fn client(&self, member: &Member) -> Result<PeerClient<Channel>, PeerError> {
        let url = member.peer_urls.first().ok_or(PeerError::NoUrl)?;
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match map.get(url) {
            Some(c) => c.clone(),
            None => {
                let https = crate::server::config::is_https(url);
                let endpoint = Endpoint::from_shared(crate::tls::connect::plain_scheme(url))
                    .map_err(|source| PeerError::BadUrl {
                        url: url.clone(),
                        source,
                    })?
                    .connect_timeout(PEER_DIAL_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5));
                let c = if https {
                    let tls = self
                        .tls
                        .clone()
                        .ok_or_else(|| PeerError::NoTls { url: url.clone() })?;
                    endpoint.connect_with_connector_lazy(TlsConnector::reloading(
                        tls,
                        PEER_DIAL_TIMEOUT,
                    ))
                } else {
                    endpoint.connect_lazy()
                };
                map.insert(url.clone(), c.clone());
                c
            }
        };
        Ok(PeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE))
    }

    /// Sends a proposal to `leader` to commit.
    pub async fn propose(
        &self,
        leader: &Member,
        cmd: &Command,
        timeout: Duration,
    ) -> Result<ForwardResult, PeerError> {
        let mut client = self.client(leader)?;
        let mut req = tonic::Request::new(Payload {
            data: codec::encode("command", cmd)?,
        });
        req.set_timeout(timeout);
        let reply = client.propose(req).await?.into_inner();
        Ok(codec::decode("forward result", &reply.data)?)
    }

    /// Asks `leader` a lease question.
    pub async fn lease(
        &self,
        leader: &Member,
        query: LeaseQuery,
        timeout: Duration,
    ) -> Result<Result<i64, ForwardError>, PeerError> {
        let mut client = self.client(leader)?;
        let mut req = tonic::Request::new(Payload {
            data: codec::encode("lease query", &query)?,
        });
        req.set_timeout(timeout);
        let reply = client.lease(req).await?.into_inner();
        Ok(codec::decode("lease answer", &reply.data)?)
    }

    /// Asks `leader` to carry out a membership change.
    pub async fn membership(
        &self,
        leader: &Member,
        op: &crate::cluster::MembershipOp,
        timeout: Duration,
    ) -> Result<Result<NodeId, crate::cluster::MembershipError>, PeerError> {
        let mut client = self.client(leader)?;
        let mut req = tonic::Request::new(Payload {
            data: codec::encode("membership op", op)?,
        });
        req.set_timeout(timeout);
        let reply = client.membership(req).await?.into_inner();
        Ok(codec::decode("membership result", &reply.data)?)
    }

    /// Tells a member it has been removed from the cluster.
    pub async fn removed(&self, member: &Member, timeout: Duration) -> Result<(), PeerError> {
        let mut client = self.client(member)?;
        let mut req = tonic::Request::new(Payload { data: Vec::new() });
        req.set_timeout(timeout);
        client.removed(req).await?;
        Ok(())
    }

    /// Asks a member to start an election now.
    pub async fn campaign(&self, member: &Member, timeout: Duration) -> Result<bool, PeerError> {
        let mut client = self.client(member)?;
        let mut req = tonic::Request::new(Payload { data: Vec::new() });
        req.set_timeout(timeout);
        let reply = client.campaign(req).await?.into_inner();
        Ok(codec::decode("campaign result", &reply.data)?)
    }

    /// Asks a member for the cluster id and members.
    pub async fn cluster_info(
        &self,
        member: &Member,
        timeout: Duration,
    ) -> Result<crate::cluster::ClusterInfo, PeerError> {
        let mut client = self.client(member)?;
        let mut req = tonic::Request::new(Payload { data: Vec::new() });
        req.set_timeout(timeout);
        let reply = client.cluster_info(req).await?.into_inner();
        Ok(codec::decode("cluster info", &reply.data)?)
    }

    /// Asks `leader` for the log index a linearizable read must wait for.
    pub async fn read_index(&self, leader: &Member, timeout: Duration) -> Result<u64, PeerError> {
        let mut client = self.client(leader)?;
        let mut req = tonic::Request::new(ReadIndexRequest {});
        req.set_timeout(timeout);
        Ok(client.read_index(req).await?.into_inner().index)
    }
}

/// openraft's network factory over [`Peers`].
#[derive(Clone, Default)]
pub struct Network {
    pub peers: Peers,
}

impl Network {
    pub fn new(peers: Peers) -> Self {
        Self { peers }
    }
}

pub struct Connection {
    target: NodeId,
    node: Member,
    peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Self::Network {
        Connection {
            target,
            node: node.clone(),
            peers: self.peers.clone(),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, Member, E>>;

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        which: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = self
            .peers
            .client(&self.node)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let data = codec::encode("raft request", req)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(Payload { data });
        request.set_timeout(option.hard_ttl());
        let reply = match which {
            Rpc::Append => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<Resp, E> = codec::decode("raft response", &reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        self.call(Rpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}

/// Decodes a forwarded proposal on the leader side.
pub fn decode_command(data: &[u8]) -> Result<Command, codec::CodecError> {
    codec::decode("command", data)
}
