//! `v3electionpb.Election`: Campaign, Proclaim, Leader, Observe, Resign — etcd's server-side
//! leader election (etcd's `v3election`, built on clientv3's `concurrency.Election`).
//!
//! A candidate is the key `<name>/<lease hex>` attached to its lease, its value the proclaimed
//! value; the leader is the key under `<name>/` with the lowest create revision. Campaign waits
//! until every key created before the candidate's is gone; leadership ends with Resign or with
//! the lease (expiry or revoke deletes the key, and the next candidate in line leads).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::concurrency::{self, Changes, Withdraw};
use crate::proto::etcdserverpb::request_op::Request as Op;
use crate::proto::etcdserverpb::{PutRequest, TxnRequest};
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use crate::server::node::Node;

/// Leader changes buffered per Observe stream before a slow observer slows its own task down.
const OBSERVE_BUFFER: usize = 16;

pub struct ElectionService {
    node: Arc<Node>,
}

impl ElectionService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// Sets the leader key's value if it is still the incarnation created at `rev` (keeping its
/// lease), returning the Txn's revision; `election: not leader` otherwise.
async fn proclaim(node: &Node, key: &[u8], rev: i64, value: &[u8]) -> Result<i64, Status> {
    let resp = concurrency::txn(
        node,
        TxnRequest {
            compare: vec![concurrency::create_rev_is(key, rev)],
            success: vec![concurrency::op(Op::RequestPut(PutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                ignore_lease: true,
                ..Default::default()
            }))],
            failure: Vec::new(),
        },
    )
    .await?;
    if !resp.succeeded {
        return Err(concurrency::not_leader());
    }
    Ok(concurrency::txn_revision(&resp))
}

/// Sends the election's leader each time it changes (a new leader key, or a new value proclaimed
/// on it), as clientv3's `Election.Observe` does; returns when the observer goes away.
async fn observe(
    node: &Node,
    prefix: &[u8],
    out: &mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Result<(), Status> {
    // Subscribe before the first read so no change between it and the wait is missed.
    let mut changes = Changes::subscribe(node);
    node.read_index().await?;
    let mvcc = node.mvcc();
    let mut at = mvcc.current_revision();
    // The leader last sent, by key and mod revision: a re-read that finds the same incarnation
    // with the same value is not a change.
    let mut last: Option<(Vec<u8>, i64)> = None;
    loop {
        // A revision just broadcast can only be compacted away if we lagged far behind.
        let read_at = at.max(mvcc.compact_revision());
        if let Some(kv) = concurrency::first_created(node, prefix, read_at)? {
            let seen = (kv.key.clone(), kv.mod_revision);
            if last.as_ref() != Some(&seen) {
                last = Some(seen);
                let resp = LeaderResponse {
                    header: Some(node.header(read_at)),
                    kv: Some(kv),
                };
                if out.send(Ok(resp)).await.is_err() {
                    return Ok(());
                }
            }
        }
        at = match changes.next_touching(prefix, |_| true).await? {
            Some(rev) => rev,
            None => mvcc.current_revision(),
        };
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        self.campaign_inner(request)
            .await
            .map_err(concurrency::passthrough)
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        self.proclaim_inner(request)
            .await
            .map_err(concurrency::passthrough)
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        self.leader_inner(request)
            .await
            .map_err(concurrency::passthrough)
    }

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<BoxStream<LeaderResponse>>, Status> {
        self.observe_inner(request)
            .await
            .map_err(concurrency::passthrough)
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        self.resign_inner(request)
            .await
            .map_err(concurrency::passthrough)
    }
}

impl ElectionService {
    async fn campaign_inner(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let node = &self.node;
        node.refuse_learner()?;
        let user = super::auth::caller(node, &request).await?;
        super::auth::check_recipe(node, user, &request.get_ref().name)?;
        let req = request.into_inner();
        let lease = concurrency::session_lease(node, req.lease).await?;
        let prefix = concurrency::name_prefix(&req.name);
        let mut changes = Changes::subscribe(node);
        let owned = concurrency::enqueue(node, &req.name, lease, &req.value).await?;
        // A campaign abandoned before it wins (cancelled, or failed) resigns, so it cannot win
        // later on behalf of nobody.
        let withdraw = Withdraw::new(node.clone(), &owned);
        if let Some(current) = &owned.existing_value {
            // Campaigning again with the same lease keeps the place in line but takes the new
            // value, as clientv3 does.
            if current != &req.value {
                proclaim(node, &owned.key, owned.rev, &req.value).await?;
            }
        }
        concurrency::wait_deletes(node, &mut changes, &prefix, owned.rev - 1).await?;
        withdraw.disarm();
        Ok(Response::new(CampaignResponse {
            header: Some(node.header(owned.txn_rev)),
            leader: Some(LeaderKey {
                name: req.name,
                key: owned.key,
                rev: owned.rev,
                lease,
            }),
        }))
    }

    async fn proclaim_inner(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        if let Some(l) = &request.get_ref().leader {
            let user = super::auth::caller(&self.node, &request).await?;
            super::auth::check_recipe_key(&self.node, user, &l.key)?;
        }
        let req = request.into_inner();
        let leader = req.leader.ok_or_else(concurrency::missing_leader_key)?;
        let rev = proclaim(&self.node, &leader.key, leader.rev, &req.value).await?;
        Ok(Response::new(ProclaimResponse {
            header: Some(self.node.header(rev)),
        }))
    }

    async fn leader_inner(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let node = &self.node;
        node.refuse_learner()?;
        let user = super::auth::caller(node, &request).await?;
        super::auth::check_recipe(node, user, &request.get_ref().name)?;
        let prefix = concurrency::name_prefix(&request.into_inner().name);
        node.read_index().await?;
        let revision = node.mvcc().current_revision();
        let kv = concurrency::first_created(node, &prefix, revision)?
            .ok_or_else(concurrency::no_leader)?;
        Ok(Response::new(LeaderResponse {
            header: Some(node.header(revision)),
            kv: Some(kv),
        }))
    }

    async fn observe_inner(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<BoxStream<LeaderResponse>>, Status> {
        self.node.refuse_learner()?;
        let user = super::auth::caller(&self.node, &request).await?;
        super::auth::check_recipe(&self.node, user, &request.get_ref().name)?;
        let prefix = concurrency::name_prefix(&request.into_inner().name);
        let (tx, rx) = mpsc::channel(OBSERVE_BUFFER);
        let node = self.node.clone();
        // The task ends when the observer goes away (the response stream, and so `rx`, is
        // dropped), even while it is waiting for the next change.
        tokio::spawn(async move {
            tokio::select! {
                _ = tx.closed() => {}
                result = observe(&node, &prefix, &tx) => {
                    if let Err(status) = result {
                        let _ = tx.send(Err(concurrency::passthrough(status))).await;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    /// etcd's Resign deletes the leader key only while it is the incarnation named by the
    /// request, and answers success either way (resigning leadership already lost is a no-op).
    async fn resign_inner(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        if let Some(l) = &request.get_ref().leader {
            let user = super::auth::caller(&self.node, &request).await?;
            super::auth::check_recipe_key(&self.node, user, &l.key)?;
        }
        let leader = request
            .into_inner()
            .leader
            .ok_or_else(concurrency::missing_leader_key)?;
        let resp = concurrency::delete_if_created(&self.node, &leader.key, leader.rev).await?;
        Ok(Response::new(ResignResponse {
            header: Some(self.node.header(concurrency::txn_revision(&resp))),
        }))
    }
}
