//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn, Compact.

use std::sync::Arc;

use prost::Message;
use tonic::{Request, Response, Status};

use super::auth;
use super::errors::ApiError;
use super::validate;
use crate::auth::PermKind;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::request_op::Request as Op;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use crate::raft::{Command, CommandResult};
use crate::server::node::Node;

pub struct KvService {
    node: Arc<Node>,
}

impl KvService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    fn check_size(&self, m: &impl Message) -> Result<(), ApiError> {
        if m.encoded_len() > self.node.limits.max_request_bytes {
            return Err(ApiError::RequestTooLarge);
        }
        Ok(())
    }

    async fn propose(&self, cmd: Command) -> Result<CommandResult, ApiError> {
        match self.node.propose(cmd).await? {
            CommandResult::Failed(e) => Err(e.into()),
            CommandResult::AuthFailed(e) => Err(e.into()),
            other => Ok(other),
        }
    }

    /// A Txn without writes is a read: served locally (after ReadIndex unless serializable).
    async fn read_only_txn(&self, txn: &TxnRequest) -> Result<TxnResponse, ApiError> {
        self.node.read_index().await?;
        let mvcc = self.node.mvcc();
        let out = mvcc.apply_txn(txn, &crate::mvcc::NoLeases)?;
        Ok(out.response)
    }
}

fn is_read_only(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .all(|op| match &op.request {
            Some(Op::RequestRange(_)) | None => true,
            Some(Op::RequestTxn(inner)) => is_read_only(inner),
            Some(Op::RequestPut(_)) | Some(Op::RequestDeleteRange(_)) => false,
        })
}

fn unexpected(what: &str) -> Status {
    Status::internal(format!("etcdserver: unexpected apply result for {what}"))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let user = auth::caller(&self.node, &request).await?;
        let req = request.into_inner();
        validate::range(&req)?;
        auth::check(
            &self.node,
            user.as_deref(),
            &req.key,
            &req.range_end,
            PermKind::Read,
        )?;
        if !req.serializable {
            self.node.refuse_learner()?;
            self.node.read_index().await?;
        }
        let mvcc = self.node.mvcc();
        let revision = mvcc
            .check_read_revision(req.revision)
            .map_err(ApiError::from)?;
        let res = mvcc.range(&req, revision).map_err(ApiError::from)?;
        // A compaction published while we scanned may have removed versions we needed.
        if revision < mvcc.compact_revision() {
            return Err(ApiError::Compacted.into());
        }
        Ok(Response::new(RangeResponse {
            header: Some(self.node.header(mvcc.current_revision().max(revision))),
            kvs: res.kvs,
            more: res.more,
            count: res.count,
        }))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let user = auth::caller(&self.node, &request).await?;
        let req = request.into_inner();
        self.node.refuse_learner()?;
        validate::put(&req)?;
        let checked = self.node.sm.auth().checked_revision();
        auth::check(&self.node, user.as_deref(), &req.key, &[], PermKind::Write)?;
        if req.prev_kv {
            // Returning the previous value is a read (etcd's authApplierV3.Put).
            auth::check(&self.node, user.as_deref(), &req.key, &[], PermKind::Read)?;
        }
        self.check_size(&req)?;
        match self
            .propose(auth::guard(checked, Command::Put(req)))
            .await?
        {
            CommandResult::Put(mut resp) => {
                let rev = resp.header.map_or(0, |h| h.revision);
                resp.header = Some(self.node.header(rev));
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("put")),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let user = auth::caller(&self.node, &request).await?;
        let req = request.into_inner();
        self.node.refuse_learner()?;
        validate::delete(&req)?;
        let checked = self.node.sm.auth().checked_revision();
        auth::check(
            &self.node,
            user.as_deref(),
            &req.key,
            &req.range_end,
            PermKind::Write,
        )?;
        if req.prev_kv {
            auth::check(
                &self.node,
                user.as_deref(),
                &req.key,
                &req.range_end,
                PermKind::Read,
            )?;
        }
        self.check_size(&req)?;
        match self
            .propose(auth::guard(checked, Command::DeleteRange(req)))
            .await?
        {
            CommandResult::DeleteRange(mut resp) => {
                let rev = resp.header.map_or(0, |h| h.revision);
                resp.header = Some(self.node.header(rev));
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("delete")),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let user = auth::caller(&self.node, &request).await?;
        let req = request.into_inner();
        self.node.refuse_learner()?;
        validate::txn(&req, self.node.limits.max_txn_ops)?;
        let checked = self.node.sm.auth().checked_revision();
        self.node
            .sm
            .auth()
            .check_txn(user.as_deref(), &req)
            .map_err(ApiError::from)?;
        self.check_size(&req)?;
        let mut resp = if is_read_only(&req) {
            self.read_only_txn(&req).await?
        } else {
            match self
                .propose(auth::guard(checked, Command::Txn(req)))
                .await?
            {
                CommandResult::Txn(resp) => resp,
                _ => return Err(unexpected("txn")),
            }
        };
        let rev = resp.header.map_or(0, |h| h.revision);
        resp.header = Some(self.node.header(rev));
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let req = request.into_inner();
        // Refuse early what apply would refuse (apply checks again against the state it sees);
        // catch up first so a follower does not call a revision it has not applied yet "future".
        self.node.refuse_learner()?;
        self.node.read_index().await?;
        self.node
            .mvcc()
            .check_compact(req.revision)
            .map_err(ApiError::from)?;
        match self
            .propose(Command::Compact {
                revision: req.revision,
            })
            .await?
        {
            CommandResult::Revision(rev) => {
                if req.physical {
                    // Applying published the compact revision; the garbage goes in the
                    // background. Physical means removed, and durable, as in etcd.
                    self.node.mvcc().wait_compacted(req.revision).await;
                    let backend = self.node.backend.clone();
                    tokio::task::spawn_blocking(move || backend.flush())
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?
                        .map_err(|e| Status::internal(e.to_string()))?;
                }
                Ok(Response::new(CompactionResponse {
                    header: Some(self.node.header(rev)),
                }))
            }
            _ => Err(unexpected("compact")),
        }
    }
}
