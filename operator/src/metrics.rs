//! Prometheus metrics: reconcile counts, failures by kind, and durations.

use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    duration: Histogram,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cairn_operator");
        let reconciles = Family::<Labels, Counter>::default();
        let failures = Family::<Labels, Counter>::default();
        // 1 ms .. ~16 s: a reconcile that waits on an unreachable member lands in the top buckets.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciliations started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciliations that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            leader,
        }
    }
}

impl Metrics {
    /// Counts a reconcile; the returned guard records its duration when dropped.
    pub fn reconcile_started(&self, namespace: &str) -> DurationGuard<'_> {
        self.reconciles
            .get_or_create(&vec![("namespace".into(), namespace.into())])
            .inc();
        DurationGuard {
            histogram: &self.duration,
            start: Instant::now(),
        }
    }

    pub fn reconcile_failed(&self, kind: &str) {
        self.failures
            .get_or_create(&vec![("error".into(), kind.into())])
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

pub struct DurationGuard<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for DurationGuard<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_failures_and_durations() {
        let m = Metrics::default();
        {
            let _g = m.reconcile_started("db");
        }
        m.reconcile_failed("kube");
        let text = m.render().unwrap();
        assert!(
            text.contains("cairn_operator_reconciles_total{namespace=\"db\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cairn_operator_reconcile_failures_total{error=\"kube\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cairn_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
    }
}
