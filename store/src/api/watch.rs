//! `etcdserverpb.Watch`: the bidirectional Watch stream (see `watch::stream`).

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::etcdserverpb::watch_server::Watch;
use crate::proto::etcdserverpb::{WatchRequest, WatchResponse};
use crate::server::node::Node;
use crate::watch::stream::{self, WatchConfig};

/// Responses buffered per stream before a slow client slows its stream down.
const STREAM_BUFFER: usize = 256;

pub struct WatchService {
    node: Arc<Node>,
    config: WatchConfig,
}

impl WatchService {
    pub fn new(node: Arc<Node>, config: WatchConfig) -> Self {
        Self { node, config }
    }
}

/// etcd's `hasleader` metadata: the client wants the stream only while a leader exists.
fn requires_leader<T>(req: &Request<T>) -> bool {
    req.metadata()
        .get("hasleader")
        .and_then(|v| v.to_str().ok())
        == Some("true")
}

#[tonic::async_trait]
impl Watch for WatchService {
    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<BoxStream<WatchResponse>>, Status> {
        self.node.refuse_learner()?;
        let mut config = self.config.clone();
        if requires_leader(&request) {
            if self.node.current_leader().is_none() {
                return Err(Status::unavailable("etcdserver: no leader"));
            }
        } else {
            config.require_leader = None;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        // Credentials are read once, when the stream opens, as etcd does; each create is checked.
        let user = crate::api::auth::caller(&self.node, &request).await?;
        tokio::spawn(stream::run(
            self.node.clone(),
            config,
            request.into_inner(),
            user,
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
