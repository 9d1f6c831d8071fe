//! One Watch stream: its watchers, their catch-up from history, live fan-out, cancellation and
//! progress. A slow client only slows its own stream; when its stream falls so far behind that
//! the broadcast buffer overflows, its watchers go back to reading history.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use super::{fragments, history, WatchSpec};
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use crate::proto::mvccpb::Event;
use crate::raft::state_machine::RevisionChanges;
use crate::server::node::Node;

/// Events read from history per catch-up step, so one watcher cannot monopolise its stream.
const CATCH_UP_BATCH: usize = 1000;

/// etcd's watch id for responses not tied to a watcher (progress, failed creates).
const NO_WATCH_ID: i64 = -1;

/// etcd's slack above `--max-request-bytes` before it fragments a watch response (the same
/// allowance it gives incoming requests): smaller responses are never split.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Settings of the watch service.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub progress_notify_interval: Duration,
    /// `--max-request-bytes`: a response of at least this plus [`GRPC_OVERHEAD_BYTES`] is
    /// fragmented for watchers that asked for it (etcd's rule).
    pub fragment_bytes: usize,
    /// End streams that required a leader once there has been none for this long.
    pub require_leader: Option<Duration>,
}

struct Watcher {
    spec: WatchSpec,
    /// The first revision this watcher has not been sent yet.
    next: i64,
    synced: bool,
    sent_since_tick: bool,
}

struct StreamLoop {
    node: Arc<Node>,
    config: WatchConfig,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    progress_requested: bool,
    leaderless_since: Option<Instant>,
    /// Who opened the stream (None: auth off or no credentials); checked at each create.
    user: Option<String>,
}

/// The client went away (or the stream must end with a status already sent).
struct Closed;

impl StreamLoop {
    async fn send(&self, resp: WatchResponse) -> Result<(), Closed> {
        self.out.send(Ok(resp)).await.map_err(|_| Closed)
    }

    fn response(&self, watch_id: i64, revision: i64) -> WatchResponse {
        WatchResponse {
            header: Some(self.node.header(revision)),
            watch_id,
            ..Default::default()
        }
    }

    async fn send_events(
        &mut self,
        id: i64,
        revision: i64,
        events: Vec<Event>,
    ) -> Result<(), Closed> {
        let fragment = self.watchers.get(&id).is_some_and(|w| w.spec.fragment);
        let parts = if fragment {
            fragments(events, self.config.fragment_bytes + GRPC_OVERHEAD_BYTES)
        } else {
            vec![events]
        };
        let n = parts.len();
        for (i, events) in parts.into_iter().enumerate() {
            let mut resp = self.response(id, revision);
            resp.events = events;
            resp.fragment = i + 1 < n;
            self.send(resp).await?;
        }
        if let Some(w) = self.watchers.get_mut(&id) {
            w.sent_since_tick = true;
        }
        Ok(())
    }

    async fn create(&mut self, req: WatchCreateRequest) -> Result<(), Closed> {
        let current = self.node.mvcc().current_revision();
        let id = if req.watch_id != 0 {
            req.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        let spec = WatchSpec::from_request(&req);
        if !self.permitted(&req) {
            // etcd answers a forbidden create with a created+canceled response carrying the
            // gRPC error's text, and keeps the stream open.
            let mut resp = self.response(req.watch_id, current);
            resp.created = true;
            resp.canceled = true;
            resp.cancel_reason = format!(
                "rpc error: code = PermissionDenied desc = {}",
                crate::api::errors::AuthError::PermissionDenied
            );
            return self.send(resp).await;
        }
        let error = if self.watchers.contains_key(&id) {
            Some("mvcc: duplicate watch ID provided on the WatchStream")
        } else if spec.range.is_empty() {
            Some("mvcc: watcher range is empty")
        } else {
            None
        };
        if let Some(reason) = error {
            let mut resp = self.response(NO_WATCH_ID, current);
            resp.created = true;
            resp.canceled = true;
            resp.cancel_reason = reason.to_string();
            return self.send(resp).await;
        }
        if req.watch_id == 0 {
            self.next_id += 1;
        }
        let next = if req.start_revision <= 0 {
            current + 1
        } else {
            req.start_revision
        };
        self.watchers.insert(
            id,
            Watcher {
                spec,
                next,
                synced: next > current,
                sent_since_tick: false,
            },
        );
        let mut resp = self.response(id, current);
        resp.created = true;
        self.send(resp).await
    }

    /// Whether the stream's user may read the watched range (an empty key means `\0`, as etcd).
    /// Watchers already open when a permission is revoked keep running, as in etcd.
    fn permitted(&self, req: &WatchCreateRequest) -> bool {
        let key: &[u8] = if req.key.is_empty() { &[0] } else { &req.key };
        self.node
            .sm
            .auth()
            .check_range(
                self.user.as_deref(),
                key,
                &req.range_end,
                crate::auth::PermKind::Read,
            )
            .is_ok()
    }

    async fn cancel(&mut self, id: i64) -> Result<(), Closed> {
        if self.watchers.remove(&id).is_some() {
            let mut resp = self.response(id, self.node.mvcc().current_revision());
            resp.canceled = true;
            self.send(resp).await?;
        }
        Ok(())
    }

    /// Delivers one revision's changes to every synced watcher.
    async fn deliver(&mut self, changes: &RevisionChanges) -> Result<(), Closed> {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            let Some(w) = self.watchers.get_mut(&id) else {
                continue;
            };
            if !w.synced || changes.revision < w.next {
                continue;
            }
            if changes.revision > w.next {
                // Missed revisions (should not happen without lag): fall back to history.
                w.synced = false;
                continue;
            }
            w.next = changes.revision + 1;
            let events = w.spec.select(&changes.changes);
            if !events.is_empty() {
                self.send_events(id, changes.revision, events).await?;
            }
        }
        Ok(())
    }

    /// One catch-up step for the first watcher that is behind.
    async fn catch_up(&mut self) -> Result<(), Closed> {
        let Some((&id, w)) = self.watchers.iter().find(|(_, w)| !w.synced) else {
            return Ok(());
        };
        let mvcc = self.node.mvcc().clone();
        let (from, current, compacted) = (w.next, mvcc.current_revision(), mvcc.compact_revision());
        if from < compacted {
            self.watchers.remove(&id);
            // etcd's compacted cancel carries no header revision (its watcher sends the
            // compact revision alone); the JSON gateway shows the difference.
            let mut resp = self.response(id, 0);
            resp.compact_revision = compacted;
            resp.canceled = true;
            return self.send(resp).await;
        }
        if from > current {
            if let Some(w) = self.watchers.get_mut(&id) {
                w.synced = true;
            }
            return Ok(());
        }
        let read = tokio::task::spawn_blocking(move || {
            history::read(&mvcc, from, current, CATCH_UP_BATCH)
        })
        .await;
        let (events, next) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let _ = self
                    .out
                    .send(Err(Status::internal(format!(
                        "etcdserver: reading watch history: {e}"
                    ))))
                    .await;
                return Err(Closed);
            }
            Err(e) => {
                let _ = self.out.send(Err(Status::internal(e.to_string()))).await;
                return Err(Closed);
            }
        };
        // A compaction that ran while we read may have removed history we needed.
        if from < self.node.mvcc().compact_revision() {
            return Ok(());
        }
        let Some(w) = self.watchers.get(&id) else {
            return Ok(());
        };
        let spec = w.spec.clone();
        let mut by_rev: Vec<(i64, Vec<Event>)> = Vec::new();
        for (rev, e) in events {
            match by_rev.last_mut() {
                Some((r, evs)) if *r == rev => evs.push(e),
                _ => by_rev.push((rev, vec![e])),
            }
        }
        for (rev, evs) in by_rev {
            let selected = spec.select(&evs);
            if !selected.is_empty() {
                self.send_events(id, rev, selected).await?;
            }
        }
        if let Some(w) = self.watchers.get_mut(&id) {
            w.next = next;
            w.synced = next > current;
        }
        Ok(())
    }

    fn all_synced(&self) -> bool {
        self.watchers.values().all(|w| w.synced)
    }

    async fn answer_progress(&mut self) -> Result<(), Closed> {
        if self.progress_requested && self.all_synced() {
            self.progress_requested = false;
            let revision = progress_revision(
                self.watchers.values().map(|w| w.next),
                self.node.mvcc().current_revision(),
            );
            let resp = self.response(NO_WATCH_ID, revision);
            self.send(resp).await?;
        }
        Ok(())
    }

    async fn progress_tick(&mut self) -> Result<(), Closed> {
        let current = self.node.mvcc().current_revision();
        let due: Vec<(i64, i64)> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.spec.progress_notify && w.synced && !w.sent_since_tick)
            .map(|(id, w)| (*id, progress_revision([w.next], current)))
            .collect();
        for w in self.watchers.values_mut() {
            w.sent_since_tick = false;
        }
        for (id, revision) in due {
            self.send(self.response(id, revision)).await?;
        }
        Ok(())
    }

    /// Whether a stream that requires a leader must end now.
    fn leader_lost(&mut self) -> bool {
        let Some(limit) = self.config.require_leader else {
            return false;
        };
        if self.node.current_leader().is_some() {
            self.leaderless_since = None;
            return false;
        }
        let since = *self.leaderless_since.get_or_insert_with(Instant::now);
        since.elapsed() >= limit
    }
}

/// The revision a progress notification may report: every event up to it must already have been
/// sent. That is the last revision each watcher has been given, not the store's current revision:
/// revisions applied after the stream's last broadcast message was handled are published in MVCC
/// but still queued for this stream, and a bookmark past them would tell the client (e.g.
/// kube-apiserver's watch cache) it has seen events it has not.
fn progress_revision(watcher_next: impl IntoIterator<Item = i64>, current: i64) -> i64 {
    watcher_next
        .into_iter()
        .map(|next| next - 1)
        .min()
        .unwrap_or(current)
        .min(current)
}

/// Runs one Watch stream until the client goes away.
pub async fn run(
    node: Arc<Node>,
    config: WatchConfig,
    mut incoming: tonic::Streaming<WatchRequest>,
    user: Option<String>,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
) {
    // Subscribe before any watcher reads the current revision, so no revision falls between
    // what history covers and what the broadcast delivers.
    let mut changes = node.sm.subscribe();
    let mut progress = tokio::time::interval(config.progress_notify_interval);
    progress.tick().await;
    let mut leader_check = tokio::time::interval(Duration::from_millis(500));
    let mut s = StreamLoop {
        node,
        config,
        out,
        watchers: BTreeMap::new(),
        next_id: 0,
        progress_requested: false,
        leaderless_since: None,
        user,
    };
    loop {
        let behind = !s.all_synced();
        let step: Result<(), Closed> = tokio::select! {
            biased;
            req = incoming.message() => match req {
                Ok(Some(WatchRequest { request_union: Some(RequestUnion::CreateRequest(c)) })) => s.create(c).await,
                Ok(Some(WatchRequest { request_union: Some(RequestUnion::CancelRequest(c)) })) => s.cancel(c.watch_id).await,
                Ok(Some(WatchRequest { request_union: Some(RequestUnion::ProgressRequest(_)) })) => {
                    s.progress_requested = true;
                    Ok(())
                }
                Ok(Some(WatchRequest { request_union: None })) => Ok(()),
                Ok(None) | Err(_) => Err(Closed),
            },
            msg = changes.recv() => match msg {
                Ok(c) => s.deliver(&c).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "watch stream fell behind; catching up from history");
                    for w in s.watchers.values_mut() {
                        w.synced = false;
                    }
                    Ok(())
                }
                Err(broadcast::error::RecvError::Closed) => Err(Closed),
            },
            _ = std::future::ready(()), if behind => s.catch_up().await,
            _ = progress.tick() => s.progress_tick().await,
            _ = leader_check.tick() => {
                if s.leader_lost() {
                    let _ = s.out.send(Err(Status::unavailable("etcdserver: no leader"))).await;
                    Err(Closed)
                } else {
                    Ok(())
                }
            }
        };
        if step.is_err() || s.answer_progress().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::progress_revision;

    #[test]
    fn progress_never_runs_ahead_of_what_was_delivered() {
        // Regression (found by cairn-torture, seed 1): the store is at 110 but this stream's
        // watcher has only been given revisions up to 108; the bookmark must say 108.
        assert_eq!(progress_revision([109], 110), 108);
        assert_eq!(progress_revision([111, 109], 110), 108);
        assert_eq!(progress_revision([111], 110), 110);
        // A watcher starting in the future does not move the bookmark past the store.
        assert_eq!(progress_revision([500], 110), 110);
        // No watchers: the store's revision.
        assert_eq!(progress_revision([], 110), 110);
    }
}
