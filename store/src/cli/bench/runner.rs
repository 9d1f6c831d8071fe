//! The closed-loop driver every workload uses: `clients` tasks, each owning a [`Worker`], take
//! operation numbers from one shared counter until the total or the duration is reached,
//! optionally paced to a global rate, and record each operation's latency in their own
//! histogram (merged at the end, so the hot path takes no lock).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::keys::slot_offset;
use super::stats::{self, Row};

/// What a successful operation reports back: which kind it was (an index into the run's kind
/// names) and how many extra attempts it needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub kind: usize,
    pub retries: u64,
}

impl Outcome {
    pub fn of(kind: usize) -> Self {
        Self { kind, retries: 0 }
    }
}

/// A failed operation: its kind and a message, grouped in the error summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    pub kind: usize,
    pub message: String,
}

impl OpError {
    pub fn new(kind: usize, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn status(kind: usize, status: &tonic::Status) -> Self {
        Self::new(kind, crate::cli::status_message(status))
    }
}

/// One client's loop body. Each client task owns its worker, so workers keep per-client state
/// (a PRNG, a cache of mod revisions, a keep-alive stream) without synchronisation.
pub trait Worker: Send + 'static {
    /// Runs operation number `i` (counted over all clients).
    fn op(&mut self, i: u64) -> impl Future<Output = Result<Outcome, OpError>> + Send;
}

/// How long and how hard to drive the workers.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Stop after this many operations (over all clients)...
    pub total: Option<u64>,
    /// ...or after this long, whichever comes first.
    pub duration: Option<Duration>,
    /// Global operations per second; unlimited when absent.
    pub rate: Option<f64>,
    /// Deadline of a single operation; a late one counts as an error.
    pub op_timeout: Duration,
    /// Names of the operation kinds, indexed by [`Outcome::kind`].
    pub kinds: Vec<String>,
    /// Text in front of the progress bar.
    pub title: String,
}

/// Everything a run measured.
#[derive(Debug)]
pub struct Measured {
    pub hists: Vec<Histogram<u64>>,
    pub errors: Vec<u64>,
    pub retries: Vec<u64>,
    /// Error messages and how often each occurred, to explain a non-zero error column.
    pub messages: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl Measured {
    fn empty(kinds: usize) -> anyhow::Result<Self> {
        Ok(Self {
            hists: (0..kinds)
                .map(|_| stats::new_histogram())
                .collect::<Result<_, _>>()?,
            errors: vec![0; kinds],
            retries: vec![0; kinds],
            messages: BTreeMap::new(),
            elapsed: Duration::ZERO,
        })
    }

    fn absorb(&mut self, other: Measured) {
        for (into, h) in self.hists.iter_mut().zip(&other.hists) {
            stats::merge(into, h);
        }
        for (a, b) in self.errors.iter_mut().zip(&other.errors) {
            *a += b;
        }
        for (a, b) in self.retries.iter_mut().zip(&other.retries) {
            *a += b;
        }
        for (m, n) in other.messages {
            *self.messages.entry(m).or_default() += n;
        }
    }

    /// One row per kind; with several kinds, a `total` row first (the headline).
    pub fn rows(&self, kinds: &[String]) -> anyhow::Result<Vec<Row>> {
        let mut rows = Vec::new();
        if kinds.len() > 1 {
            let mut all = stats::new_histogram()?;
            for h in &self.hists {
                stats::merge(&mut all, h);
            }
            rows.push(Row {
                op: "total".into(),
                summary: stats::summarize(
                    &all,
                    self.errors.iter().sum(),
                    self.retries.iter().sum(),
                    self.elapsed,
                ),
            });
        }
        for (i, name) in kinds.iter().enumerate() {
            rows.push(Row {
                op: name.clone(),
                summary: stats::summarize(
                    &self.hists[i],
                    self.errors[i],
                    self.retries[i],
                    self.elapsed,
                ),
            });
        }
        Ok(rows)
    }

    /// Prints the distinct error messages on stderr, most frequent first.
    pub fn report_errors(&self) {
        let mut messages: Vec<_> = self.messages.iter().collect();
        messages.sort_by(|a, b| b.1.cmp(a.1));
        for (m, n) in messages.into_iter().take(10) {
            eprintln!("bench: {n} x {m}");
        }
    }
}

/// A progress bar on stderr; indicatif hides it by itself when stderr is not a terminal, so
/// scripts that capture output get only the results.
pub fn progress_bar(len: u64, title: &str, unit: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template =
        format!("{{prefix}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar.set_prefix(title.to_string());
    bar
}

/// Shared between the client tasks and the progress ticker.
struct Shared {
    next: AtomicU64,
    done: AtomicU64,
    stop: AtomicBool,
}

/// Runs `workers` (one task each) under `plan` and returns the merged measurements and the
/// workers (for clean-up such as revoking leases).
pub async fn drive<W: Worker>(plan: &Plan, workers: Vec<W>) -> anyhow::Result<(Measured, Vec<W>)> {
    let kinds = plan.kinds.len().max(1);
    let total = match (plan.total, plan.duration) {
        (None, None) => Some(10_000),
        (t, _) => t,
    };
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    // The bar counts operations when a total is known, else seconds of the duration.
    let bar = match (total, plan.duration) {
        (Some(t), _) => progress_bar(t, &plan.title, "ops"),
        (None, Some(d)) => progress_bar(d.as_secs().max(1), &plan.title, "s"),
        (None, None) => progress_bar(0, &plan.title, "ops"),
    };
    let start = Instant::now();
    let deadline = plan.duration.map(|d| start + d);

    let ticker = {
        let shared = shared.clone();
        let bar = bar.clone();
        let by_ops = total.is_some();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            while !shared.stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let done = shared.done.load(Ordering::Relaxed);
                if by_ops {
                    bar.set_position(done);
                } else {
                    bar.set_position(start.elapsed().as_secs());
                    bar.set_message(format!("{done} ops"));
                }
            }
        })
    };

    let mut tasks = Vec::with_capacity(workers.len());
    for mut worker in workers {
        let shared = shared.clone();
        let plan = plan.clone();
        tasks.push(tokio::spawn(async move {
            let mut m = Measured::empty(kinds)?;
            loop {
                let i = shared.next.fetch_add(1, Ordering::Relaxed);
                if total.is_some_and(|t| i >= t) {
                    break;
                }
                if let Some(rate) = plan.rate {
                    let at = start + slot_offset(i, rate);
                    if deadline.is_some_and(|d| at >= d) {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                // Latency from the moment the request is issued, as etcd's benchmark measures
                // it; under --rate a late start is not charged to the server.
                let began = Instant::now();
                let result = tokio::time::timeout(plan.op_timeout, worker.op(i)).await;
                let took = began.elapsed();
                match result {
                    Ok(Ok(outcome)) => {
                        let k = outcome.kind.min(kinds - 1);
                        stats::record(&mut m.hists[k], took);
                        m.retries[k] += outcome.retries;
                    }
                    Ok(Err(e)) => {
                        m.errors[e.kind.min(kinds - 1)] += 1;
                        *m.messages.entry(e.message).or_default() += 1;
                    }
                    Err(_) => {
                        m.errors[0] += 1;
                        *m.messages
                            .entry(format!("no answer within {:?}", plan.op_timeout))
                            .or_default() += 1;
                    }
                }
                shared.done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok((m, worker))
        }));
    }

    let mut merged = Measured::empty(kinds)?;
    let mut back = Vec::with_capacity(tasks.len());
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok((m, w))) => {
                merged.absorb(m);
                back.push(w);
            }
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(anyhow::anyhow!("bench client task failed: {e}")),
        }
    }
    merged.elapsed = start.elapsed();
    shared.stop.store(true, Ordering::Relaxed);
    ticker.abort();
    bar.finish_and_clear();
    if let Some(e) = failure {
        return Err(e);
    }
    Ok((merged, back))
}
