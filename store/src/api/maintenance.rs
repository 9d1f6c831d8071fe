//! `etcdserverpb.Maintenance`: Status, Alarm, HashKV, Hash, Snapshot, Defragment.

use std::io::{BufWriter, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::api::errors::ApiError;
use crate::proto::etcdserverpb::alarm_request::AlarmAction;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use crate::raft::Command;
use crate::server::node::Node;
use crate::snapshot::{self, SnapshotError};

/// The etcd API version cairn speaks. kube-apiserver enables watch progress requests only for
/// etcd >= 3.5.13, so this must stay at or above that; cairn's own version is in `--version`.
pub const ETCD_API_VERSION: &str = "3.5.17";

/// Snapshot chunk size (etcd's snapshotSendBufferSize).
pub const SNAPSHOT_CHUNK: usize = 32 * 1024;

pub struct MaintenanceService {
    node: Arc<Node>,
}

impl MaintenanceService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// Runs blocking storage work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work).await.map_err(internal)?
}

/// Streams a snapshot body (already written to `file`) in chunks, then its SHA-256, as etcd's
/// Snapshot RPC does: `remaining_bytes` counts what is left after each chunk, and the digest
/// comes last with `remaining_bytes` 0.
fn send_chunks(
    mut file: std::fs::File,
    len: u64,
    digest: [u8; snapshot::DIGEST_LEN],
    header: crate::proto::etcdserverpb::ResponseHeader,
    tx: tokio::sync::mpsc::Sender<Result<SnapshotResponse, Status>>,
) {
    let message = |remaining: u64, blob: Vec<u8>| SnapshotResponse {
        header: Some(header),
        remaining_bytes: remaining,
        blob,
        version: ETCD_API_VERSION.to_string(),
    };
    if let Err(e) = file.seek(SeekFrom::Start(0)) {
        let _ = tx.blocking_send(Err(internal(e)));
        return;
    }
    let mut sent = 0u64;
    while sent < len {
        let want = (len - sent).min(SNAPSHOT_CHUNK as u64) as usize;
        let mut buf = vec![0u8; want];
        if let Err(e) = file.read_exact(&mut buf) {
            let _ = tx.blocking_send(Err(internal(e)));
            return;
        }
        sent += want as u64;
        // A closed channel means the client went away: stop reading.
        if tx.blocking_send(Ok(message(len - sent, buf))).is_err() {
            return;
        }
    }
    let _ = tx.blocking_send(Ok(message(0, digest.to_vec())));
}

/// A scratch file for one Snapshot stream, unlinked at once so nothing is left behind even if
/// the member dies mid-stream; the open handle keeps the data until the stream ends.
fn scratch_file(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!(
        "stream-{}-{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    /// Hands leadership to another voter; must be sent to the leader (as in etcd).
    async fn move_leader(
        &self,
        request: Request<crate::proto::etcdserverpb::MoveLeaderRequest>,
    ) -> Result<Response<crate::proto::etcdserverpb::MoveLeaderResponse>, Status> {
        use crate::server::transfer::TransferError;
        super::auth::require_admin(&self.node, &request).await?;
        let target = request.into_inner().target_id;
        let node = &self.node;
        let max = std::time::Duration::from_millis(node.raft.config().election_timeout_max);
        node.transfer_leadership(target, max)
            .await
            .map_err(|e| match e {
                TransferError::NotLeader => ApiError::NotLeader,
                TransferError::BadTransferee => ApiError::BadLeaderTransferee,
                TransferError::TimedOut(_) => ApiError::TimeoutLeaderTransfer,
            })?;
        if node.current_leader() != Some(target) && target != node.id {
            return Err(ApiError::TimeoutLeaderTransfer.into());
        }
        Ok(Response::new(
            crate::proto::etcdserverpb::MoveLeaderResponse {
                header: Some(node.header(node.mvcc().current_revision())),
            },
        ))
    }

    /// GET lists the active alarms (after a ReadIndex, so it is linearizable as etcd's, which goes
    /// through Raft); ACTIVATE and DEACTIVATE go through Raft and answer what changed.
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        super::auth::require_admin(&self.node, &request).await?;
        let req = request.into_inner();
        let node = &self.node;
        let alarms = match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => {
                node.read_index().await?;
                node.sm.alarms().list(req.alarm)
            }
            Ok(AlarmAction::Activate) | Ok(AlarmAction::Deactivate) => {
                node.refuse_learner()?;
                let result = node
                    .propose(Command::Alarm {
                        action: req.action,
                        member_id: req.member_id,
                        alarm: req.alarm,
                    })
                    .await?;
                crate::alarm::result_members(&result)
                    .ok_or_else(|| internal("etcdserver: unexpected apply result for alarm"))?
            }
            Err(_) => return Err(Status::invalid_argument("etcdserver: unknown alarm action")),
        };
        Ok(Response::new(AlarmResponse {
            header: Some(node.header(node.mvcc().current_revision())),
            alarms,
        }))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let node = &self.node;
        let metrics = node.raft.metrics().borrow().clone();
        let backend = node.backend.clone();
        let (db_size, in_use) = blocking(move || {
            let size = backend.size_on_disk().map_err(internal)?;
            let in_use = backend.size_in_use().map_err(internal)?;
            Ok((size as i64, (in_use as i64).min(size as i64)))
        })
        .await?;
        let is_learner = !metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == node.id);
        let errors = node
            .sm
            .alarms()
            .list(AlarmType::None as i32)
            .iter()
            .map(crate::alarm::describe)
            .collect();
        Ok(Response::new(StatusResponse {
            header: Some(node.header(node.mvcc().current_revision())),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: metrics.current_leader.unwrap_or(0),
            raft_index: metrics.last_log_index.unwrap_or(0),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map_or(0, |l| l.index),
            errors,
            db_size_in_use: in_use,
            is_learner,
            storage_version: String::new(),
            db_size_quota: node.limits.quota_bytes,
            downgrade_info: None,
        }))
    }

    /// Rebuilds this member's database to give freed space back (blocks this member meanwhile,
    /// as etcd's defragment does).
    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        super::auth::require_admin(&self.node, &request).await?;
        let backend = self.node.backend.clone();
        let (before, after) = blocking(move || {
            let before = backend.size_on_disk().map_err(internal)?;
            backend.defragment().map_err(internal)?;
            let after = backend.size_on_disk().map_err(internal)?;
            Ok((before, after))
        })
        .await?;
        tracing::info!(
            db_size_before = before,
            db_size_after = after,
            "defragmented the backend"
        );
        Ok(Response::new(DefragmentResponse {
            header: Some(self.node.header(self.node.mvcc().current_revision())),
        }))
    }

    /// CRC-32 of the whole state machine (every keyspace a Raft snapshot carries) as of one
    /// applied state, read while writes go on (`StateScan`). Like etcd's, it includes member
    /// metadata, so it is a per-member check.
    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        super::auth::require_admin(&self.node, &request).await?;
        let sm = self.node.sm.clone();
        let (hash, revision) = blocking(move || {
            let scan = sm.scan_state().map_err(internal)?;
            let revision = scan.state.revision;
            let mut crc = crc32fast::Hasher::new();
            for item in scan {
                let (k, v) = item.map_err(internal)?;
                crc.update(&k);
                crc.update(&v);
            }
            Ok((crc.finalize(), revision))
        })
        .await?;
        Ok(Response::new(HashResponse {
            header: Some(self.node.header(revision)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        super::auth::require_admin(&self.node, &request).await?;
        let revision = request.into_inner().revision;
        let mvcc = self.node.mvcc().clone();
        let (h, current) = blocking(move || {
            let h = mvcc
                .hash_kv(revision)
                .map_err(|e| Status::from(ApiError::from(e)))?;
            Ok((h, mvcc.current_revision()))
        })
        .await?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.node.header(current)),
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.hash_revision,
        }))
    }

    /// A consistent point-in-time backup: the state machine as of one applied state is written
    /// to an unlinked scratch file (writes go on meanwhile, see `StateScan`), then streamed from
    /// it, so neither compaction nor memory is held for the length of the transfer.
    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<BoxStream<SnapshotResponse>>, Status> {
        super::auth::require_admin(&self.node, &request).await?;
        let node = self.node.clone();
        let (file, len, digest, revision) = blocking(move || {
            let meta = snapshot::Header {
                cluster_id: node.cluster_id,
                member_id: node.id,
                version: ETCD_API_VERSION.to_string(),
                ..Default::default()
            };
            let file = scratch_file(node.sm.snapshot_dir()).map_err(internal)?;
            let (out, header, digest, len) =
                snapshot::write_state_machine(&node.sm, meta, BufWriter::new(file))
                    .map_err(internal)?;
            let file = out
                .into_inner()
                .map_err(|e| internal(SnapshotError::Io(e.into_error())))?;
            Ok((file, len, digest, header.revision))
        })
        .await?;
        tracing::info!(bytes = len, revision, "streaming a snapshot");
        let header = self.node.header(revision);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || send_chunks(file, len, digest, header, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
