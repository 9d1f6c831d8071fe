//! `etcdserverpb.Maintenance`: Status today; the rest arrives with the maintenance work.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::alarm_request::AlarmAction;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{AlarmRequest, AlarmResponse, StatusRequest, StatusResponse};
use crate::server::node::Node;

/// The etcd API version cairn speaks. kube-apiserver enables watch progress requests only for
/// etcd >= 3.5.13, so this must stay at or above that; cairn's own version is in `--version`.
pub const ETCD_API_VERSION: &str = "3.5.17";

pub struct MaintenanceService {
    node: Arc<Node>,
}

impl MaintenanceService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    /// No alarm is ever raised yet (the space quota arrives with the maintenance work), so GET
    /// truthfully lists none; changing alarms is not supported yet.
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        match AlarmAction::try_from(request.get_ref().action) {
            Ok(AlarmAction::Get) => Ok(Response::new(AlarmResponse {
                header: Some(self.node.header(self.node.mvcc().current_revision())),
                alarms: Vec::new(),
            })),
            _ => Err(Status::unimplemented(
                "etcdserver: changing alarms is not supported yet",
            )),
        }
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let node = &self.node;
        let metrics = node.raft.metrics().borrow().clone();
        let db_size = node
            .backend
            .size_on_disk()
            .map_err(|e| Status::internal(e.to_string()))? as i64;
        let is_learner = !metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == node.id);
        Ok(Response::new(StatusResponse {
            header: Some(node.header(node.mvcc().current_revision())),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: metrics.current_leader.unwrap_or(0),
            raft_index: metrics.last_log_index.unwrap_or(0),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map_or(0, |l| l.index),
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner,
            storage_version: String::new(),
            db_size_quota: node.limits.quota_bytes,
            downgrade_info: None,
        }))
    }
}
