//! `v3lockpb.Lock`: Lock and Unlock, etcd's server-side distributed mutex (etcd's `v3lock`, built
//! on clientv3's `concurrency.Mutex`). A lock is the key `<name>/<lease hex>` attached to the
//! caller's lease; the holder is the key under `<name>/` with the lowest create revision, so a
//! waiter owns the lock once every key created before its own is gone (unlocked, or deleted with
//! an expired or revoked lease).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::concurrency::{self, Changes, Withdraw};
use super::errors::ApiError;
use crate::proto::etcdserverpb::DeleteRangeRequest;
use crate::proto::v3lockpb::lock_server::Lock;
use crate::proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use crate::raft::{Command, CommandResult};
use crate::server::node::Node;

pub struct LockService {
    node: Arc<Node>,
}

impl LockService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        self.lock_inner(request)
            .await
            .map_err(concurrency::passthrough)
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        self.unlock_inner(request)
            .await
            .map_err(concurrency::passthrough)
    }
}

impl LockService {
    async fn lock_inner(
        &self,
        request: Request<LockRequest>,
    ) -> Result<Response<LockResponse>, Status> {
        let node = &self.node;
        node.refuse_learner()?;
        let user = super::auth::caller(node, &request).await?;
        super::auth::check_recipe(node, user, &request.get_ref().name)?;
        let req = request.into_inner();
        let lease = concurrency::session_lease(node, req.lease).await?;
        let prefix = concurrency::name_prefix(&req.name);
        let mut changes = Changes::subscribe(node);
        let owned = concurrency::enqueue(node, &req.name, lease, b"").await?;
        // From here on, giving up (error or a cancelled request dropping this future) must
        // withdraw our key, or it would be granted the lock with nobody to unlock it.
        let withdraw = Withdraw::new(node.clone(), &owned);
        let waited = concurrency::wait_deletes(node, &mut changes, &prefix, owned.rev - 1).await?;
        let revision = if waited {
            // Our lease may have expired while we waited; etcd then refuses the lock rather than
            // hand out a key that no longer exists.
            let mine = concurrency::get_latest(node, &owned.key)?;
            if mine.is_none_or(|kv| kv.create_revision != owned.rev) {
                return Err(concurrency::session_expired());
            }
            node.mvcc().current_revision()
        } else {
            owned.txn_rev
        };
        withdraw.disarm();
        Ok(Response::new(LockResponse {
            header: Some(node.header(revision)),
            key: owned.key,
        }))
    }

    /// etcd's Unlock is a plain delete of the key: unlocking a key that is gone succeeds.
    async fn unlock_inner(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let node = &self.node;
        node.refuse_learner()?;
        let user = super::auth::caller(node, &request).await?;
        super::auth::check_recipe_key(node, user, &request.get_ref().key)?;
        let key = request.into_inner().key;
        if key.is_empty() {
            // What etcd's DeleteRange (which its Unlock calls) answers for an empty key.
            return Err(ApiError::EmptyKey.into());
        }
        let cmd = Command::DeleteRange(DeleteRangeRequest {
            key,
            ..Default::default()
        });
        match node.propose(cmd).await? {
            CommandResult::DeleteRange(resp) => {
                let rev = resp.header.map_or(0, |h| h.revision);
                Ok(Response::new(UnlockResponse {
                    header: Some(node.header(rev)),
                }))
            }
            CommandResult::Failed(e) => Err(ApiError::from(e).into()),
            _ => Err(Status::internal(
                "etcdserver: unexpected apply result for delete",
            )),
        }
    }
}
