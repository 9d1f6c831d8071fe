//! The watchers: each watches the run's prefix from revision 1, asks for progress notices every
//! second, and when its stream breaks or stalls (a killed or paused member) resumes on another
//! member from the revision after the last one it saw. Everything received is recorded.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_store::client::prefix_range_end;
use cairn_store::proto::etcdserverpb::{
    watch_request::RequestUnion, WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use cairn_store::proto::mvccpb::event::EventType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::history::{EventKind, WatchEvent, WatchRecord};
use crate::workload::{connect, Shared, PREFIX};

/// A stream that answers nothing (not even a progress request) for this long is abandoned.
const STALL: Duration = Duration::from_secs(4);

/// What the watchers share with the run.
pub struct WatchShared {
    pub records: Mutex<Vec<WatchRecord>>,
    /// Set once the run settled: watchers stop after reaching it (0: not yet).
    pub final_revision: AtomicI64,
}

impl WatchShared {
    pub fn new() -> Arc<WatchShared> {
        Arc::new(WatchShared {
            records: Mutex::new(Vec::new()),
            final_revision: AtomicI64::new(0),
        })
    }

    fn record(&self, r: WatchRecord) {
        if let Ok(mut v) = self.records.lock() {
            v.push(r);
        }
    }
}

/// One watcher until it reached the final revision (or `give_up` once the run stopped).
pub async fn run_watcher(
    id: usize,
    seed: u64,
    shared: Arc<Shared>,
    ws: Arc<WatchShared>,
    give_up: Duration,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut next = 1i64;
    let mut stopped_at: Option<tokio::time::Instant> = None;
    loop {
        let fin = ws.final_revision.load(Ordering::SeqCst);
        if fin > 0 && next > fin {
            return;
        }
        if shared.stopped() {
            let t = *stopped_at.get_or_insert_with(tokio::time::Instant::now);
            if t.elapsed() > give_up {
                return;
            }
        }
        let eps = shared.endpoints();
        if eps.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let ep = eps[rng.gen_range(0..eps.len())].clone();
        let Some(client) = connect(&ep).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (tx, rx) = mpsc::channel(8);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: PREFIX.as_bytes().to_vec(),
                range_end: prefix_range_end(PREFIX.as_bytes()),
                start_revision: next,
                ..Default::default()
            })),
        };
        if tx.send(create).await.is_err() {
            continue;
        }
        let stream =
            tokio::time::timeout(STALL, client.watch().watch(ReceiverStream::new(rx))).await;
        let Ok(Ok(stream)) = stream else {
            continue;
        };
        let mut stream = stream.into_inner();
        ws.record(WatchRecord::Created {
            watcher: id,
            start_revision: next,
            endpoint: ep,
        });
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_answer = tokio::time::Instant::now();
        loop {
            let fin = ws.final_revision.load(Ordering::SeqCst);
            if fin > 0 && next > fin {
                return;
            }
            if last_answer.elapsed() > STALL {
                break;
            }
            tokio::select! {
                _ = tick.tick() => {
                    let progress = WatchRequest {
                        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                    };
                    if tx.send(progress).await.is_err() {
                        break;
                    }
                }
                msg = stream.message() => {
                    let Ok(Some(resp)) = msg else { break };
                    last_answer = tokio::time::Instant::now();
                    if resp.canceled {
                        // Compaction or an error: the checker sees the gap if one results.
                        break;
                    }
                    if resp.created {
                        continue;
                    }
                    if resp.events.is_empty() {
                        if let Some(h) = resp.header {
                            ws.record(WatchRecord::Progress { watcher: id, revision: h.revision });
                            next = next.max(h.revision + 1);
                        }
                        continue;
                    }
                    let events: Vec<WatchEvent> = resp
                        .events
                        .iter()
                        .map(|e| {
                            let kv = e.kv.clone().unwrap_or_default();
                            let delete = e.r#type == EventType::Delete as i32;
                            WatchEvent {
                                key: String::from_utf8_lossy(&kv.key).into_owned(),
                                kind: if delete { EventKind::Delete } else { EventKind::Put },
                                value: (!delete)
                                    .then(|| String::from_utf8_lossy(&kv.value).into_owned()),
                                mod_revision: kv.mod_revision,
                            }
                        })
                        .collect();
                    if let Some(max) = events.iter().map(|e| e.mod_revision).max() {
                        next = next.max(max + 1);
                    }
                    ws.record(WatchRecord::Events { watcher: id, events });
                }
            }
        }
    }
}
