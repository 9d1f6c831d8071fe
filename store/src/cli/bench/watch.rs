//! The `watch` workload: W watchers on one prefix spread over S streams, then P puts into the
//! prefix; each event's latency runs from just before its put was sent to its delivery on a
//! watch stream. Putters and watchers share one process and one clock, so each put carries its
//! send time (nanoseconds since the run's epoch) in the first 8 bytes of its value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::Transport;
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use super::keys::{self, Rng};
use super::runner::{self, OpError, Outcome, Plan, Worker};
use super::stats::{self, Report, Row};
use super::workloads::Output;
use super::{connect_all, WatchArgs};
use crate::cli::Context;
use crate::client::{prefix_range_end, Client};
use crate::proto::etcdserverpb::{
    kv_client::KvClient, watch_request, PutRequest, WatchCreateRequest, WatchRequest,
};

/// How long to wait, after the last put, for the events still in flight.
const GRACE: Duration = Duration::from_secs(15);

/// The send time carried in a value, as nanoseconds since `epoch`.
fn stamp_value(epoch: Instant, size: usize) -> Vec<u8> {
    let nanos = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let mut v = nanos.to_le_bytes().to_vec();
    v.resize(size.max(8), b'w');
    v
}

/// The send time a value carries, if it is one of ours.
fn read_stamp(value: &[u8]) -> Option<Duration> {
    let bytes: [u8; 8] = value.get(..8)?.try_into().ok()?;
    Some(Duration::from_nanos(u64::from_le_bytes(bytes)))
}

/// Splits `watchers` over `streams` as evenly as possible (the first streams get the extra).
fn spread(watchers: usize, streams: usize) -> Vec<usize> {
    let streams = streams.clamp(1, watchers.max(1));
    (0..streams)
        .map(|s| watchers / streams + usize::from(s < watchers % streams))
        .collect()
}

struct StampedPut {
    kv: KvClient<Transport>,
    prefix: Vec<u8>,
    key_size: usize,
    space: u64,
    rng: Rng,
    epoch: Instant,
    val_size: usize,
}

impl Worker for StampedPut {
    async fn op(&mut self, _i: u64) -> Result<Outcome, OpError> {
        let key = keys::key(&self.prefix, self.rng.below(self.space), self.key_size);
        self.kv
            .put(PutRequest {
                key,
                value: stamp_value(self.epoch, self.val_size),
                ..Default::default()
            })
            .await
            .map_err(|s| OpError::status(0, &s))?;
        Ok(Outcome::of(0))
    }
}

/// What one stream's task shares with the coordinator while it runs: the coordinator may give
/// up waiting and abort the task, and still read what it measured.
struct StreamState {
    hist: Mutex<Histogram<u64>>,
    received: AtomicU64,
    /// Nanoseconds since the epoch at which the latest event arrived.
    last_event: AtomicU64,
}

async fn watch_stream(
    conn: Client,
    prefix: Vec<u8>,
    watchers: usize,
    expected: u64,
    epoch: Instant,
    state: Arc<StreamState>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    // Queue every create before opening the stream: tonic's call resolves only once the server
    // sends response headers, and grpc-go (etcd) sends them with its first message.
    let (tx, rx) = mpsc::channel(watchers + 1);
    for _ in 0..watchers {
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: prefix.clone(),
                    range_end: prefix_range_end(&prefix),
                    ..Default::default()
                },
            )),
        };
        if tx.send(create).await.is_err() {
            let _ = ready.send(Err("watch stream closed".into()));
            return;
        }
    }
    let mut stream = match conn.watch().watch(ReceiverStream::new(rx)).await {
        Ok(resp) => resp.into_inner(),
        Err(s) => {
            let _ = ready.send(Err(crate::cli::status_message(&s)));
            return;
        }
    };
    let mut created = 0;
    while created < watchers {
        match stream.message().await {
            Ok(Some(resp)) if resp.created => created += 1,
            Ok(Some(resp)) if resp.canceled => {
                let _ = ready.send(Err(format!("watch canceled: {}", resp.cancel_reason)));
                return;
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                let _ = ready.send(Err("watch stream ended".into()));
                return;
            }
            Err(s) => {
                let _ = ready.send(Err(crate::cli::status_message(&s)));
                return;
            }
        }
    }
    let _ = ready.send(Ok(()));
    while state.received.load(Ordering::Relaxed) < expected {
        let resp = match stream.message().await {
            Ok(Some(resp)) => resp,
            // The coordinator counts whatever did not arrive as errors.
            _ => return,
        };
        let now = epoch.elapsed();
        let mut n = 0;
        if let Ok(mut hist) = state.hist.lock() {
            for ev in &resp.events {
                if let Some(sent) = ev.kv.as_ref().and_then(|kv| read_stamp(&kv.value)) {
                    stats::record(&mut hist, now.saturating_sub(sent));
                    n += 1;
                }
            }
        }
        if n > 0 {
            state.received.fetch_add(n, Ordering::Relaxed);
            state.last_event.store(
                u64::try_from(now.as_nanos()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
    }
    // Keep the request side open until here: dropping it ends the stream.
    drop(tx);
}

pub async fn run(ctx: &Context, a: WatchArgs) -> anyhow::Result<Output> {
    let c = &a.common;
    let conns = connect_all(ctx, c.conns).await?;
    let prefix = format!("{}watch/", c.prefix).into_bytes();
    let epoch = Instant::now();
    let puts = match (c.total, c.duration) {
        (Some(t), _) => t,
        _ => a.puts,
    };

    let mut states = Vec::new();
    let mut tasks = Vec::new();
    let mut readies = Vec::new();
    for (s, watchers) in spread(a.watchers, a.streams).into_iter().enumerate() {
        let state = Arc::new(StreamState {
            hist: Mutex::new(stats::new_histogram()?),
            received: AtomicU64::new(0),
            last_event: AtomicU64::new(0),
        });
        let (ready_tx, ready_rx) = oneshot::channel();
        tasks.push(tokio::spawn(watch_stream(
            conns[s % conns.len()].clone(),
            prefix.clone(),
            watchers,
            watchers as u64 * puts,
            epoch,
            state.clone(),
            ready_tx,
        )));
        states.push(state);
        readies.push(ready_rx);
    }
    for ready in readies {
        match ready.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("creating watchers: {e}"),
            Err(_) => anyhow::bail!("creating watchers: the stream task ended"),
        }
    }

    let workers = (0..c.clients.max(1))
        .map(|i| StampedPut {
            kv: conns[i % conns.len()].kv(),
            prefix: prefix.clone(),
            key_size: c.key_size,
            space: a.key_space_size,
            rng: Rng::new(i as u64 + 1),
            epoch,
            val_size: c.val_size,
        })
        .collect();
    let plan = Plan {
        total: Some(puts),
        duration: c.duration,
        rate: c.rate,
        op_timeout: c.op_timeout,
        kinds: vec!["put".into()],
        title: "watch: puts".into(),
    };
    let puts_started = epoch.elapsed();
    let (put_measured, _) = runner::drive(&plan, workers).await?;
    put_measured.report_errors();

    // Every put that succeeded is owed to every watcher.
    let acked = put_measured.hists.first().map(|h| h.len()).unwrap_or(0);
    let expected = acked * a.watchers as u64;
    let waiting = Instant::now();
    while waiting.elapsed() < GRACE
        && states
            .iter()
            .map(|s| s.received.load(Ordering::Relaxed))
            .sum::<u64>()
            < expected
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in &tasks {
        t.abort();
    }

    let mut events = stats::new_histogram()?;
    let mut received = 0;
    let mut last = Duration::ZERO;
    for s in &states {
        if let Ok(h) = s.hist.lock() {
            stats::merge(&mut events, &h);
        }
        received += s.received.load(Ordering::Relaxed);
        last = last.max(Duration::from_nanos(s.last_event.load(Ordering::Relaxed)));
    }
    let missing = expected.saturating_sub(received);
    if missing > 0 {
        eprintln!("bench: {missing} of {expected} events not delivered within {GRACE:?}");
    }
    let mut rows = vec![Row {
        op: "event".into(),
        summary: stats::summarize(&events, missing, 0, last.saturating_sub(puts_started)),
    }];
    rows.extend(put_measured.rows(&plan.kinds)?);
    Ok((
        Report {
            workload: "watch".into(),
            label: c.label.clone(),
            endpoints: ctx.global.endpoints.clone(),
            clients: c.clients,
            conns: c.conns,
            rows,
        },
        c.json,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_pad() {
        let epoch = Instant::now() - Duration::from_secs(1);
        let v = stamp_value(epoch, 32);
        assert_eq!(v.len(), 32);
        let t = read_stamp(&v).unwrap();
        assert!(t >= Duration::from_secs(1));
        assert_eq!(stamp_value(epoch, 2).len(), 8);
        assert_eq!(read_stamp(b"short"), None);
    }

    #[test]
    fn watchers_spread_evenly() {
        assert_eq!(spread(100, 10), vec![10; 10]);
        assert_eq!(spread(7, 3), vec![3, 2, 2]);
        assert_eq!(spread(2, 5), vec![1, 1]);
        assert_eq!(spread(0, 5), vec![0]);
    }
}
