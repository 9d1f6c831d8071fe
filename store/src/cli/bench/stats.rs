//! Latency statistics: pure functions over HDR histograms, and the two output formats (a table
//! for people, one JSON line per run for scripts such as `bench/compare.sh`).

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds: fine enough for loopback RPCs, and an HDR histogram
/// with 3 significant digits up to a minute stays a few tens of KiB per client task.
pub const LOWEST_US: u64 = 1;
pub const HIGHEST_US: u64 = 60_000_000;
pub const SIGFIG: u8 = 3;

/// An empty latency histogram with the bench's bounds.
pub fn new_histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG)
}

/// Records one latency; values past the upper bound are clamped so one stalled request cannot
/// make the whole run fail.
pub fn record(hist: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    hist.saturating_record(us.clamp(LOWEST_US, HIGHEST_US));
}

/// Adds `other` into `into` (both made by [`new_histogram`], so the bounds agree).
pub fn merge(into: &mut Histogram<u64>, other: &Histogram<u64>) {
    // Both histograms share bounds, so `add` cannot fail on range; if it somehow does, fall back
    // to re-recording every bucket so no sample is lost.
    if into.add(other).is_err() {
        for v in other.iter_recorded() {
            into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// The figures of one row of results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Successful operations.
    pub ops: u64,
    pub errors: u64,
    /// Extra attempts (txn-put's conflicts), not counted in `ops`.
    pub retries: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Summarises a histogram of successful operations over the wall-clock `elapsed`.
pub fn summarize(hist: &Histogram<u64>, errors: u64, retries: u64, elapsed: Duration) -> Summary {
    let ops = hist.len();
    let seconds = elapsed.as_secs_f64();
    let ops_per_sec = if seconds > 0.0 {
        ops as f64 / seconds
    } else {
        0.0
    };
    let q = |quantile: f64| {
        if ops == 0 {
            0.0
        } else {
            us_to_ms(hist.value_at_quantile(quantile))
        }
    };
    Summary {
        ops,
        errors,
        retries,
        seconds,
        ops_per_sec,
        mean_ms: if ops == 0 { 0.0 } else { hist.mean() / 1000.0 },
        p50_ms: q(0.50),
        p90_ms: q(0.90),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        max_ms: if ops == 0 { 0.0 } else { us_to_ms(hist.max()) },
    }
}

/// One line of the results table: which operation, and its figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub op: String,
    #[serde(flatten)]
    pub summary: Summary,
}

/// A whole run: the workload, how it was driven, and one row per operation kind. The first row
/// is the headline (for `k8s-mix`, the total over every kind).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub workload: String,
    pub label: String,
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub conns: usize,
    pub rows: Vec<Row>,
}

/// Formats a number of milliseconds the way the table shows it: enough digits for sub-ms
/// loopback latencies without drowning seconds-long ones.
fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.3}")
    }
}

/// The human-readable table printed at the end of a run.
pub fn format_table(report: &Report) -> String {
    let header = [
        "op", "ops", "errors", "retries", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms",
        "max ms",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for row in &report.rows {
        let s = &row.summary;
        lines.push(vec![
            row.op.clone(),
            s.ops.to_string(),
            s.errors.to_string(),
            s.retries.to_string(),
            format!("{:.0}", s.ops_per_sec),
            fmt_ms(s.p50_ms),
            fmt_ms(s.p90_ms),
            fmt_ms(s.p99_ms),
            fmt_ms(s.p999_ms),
            fmt_ms(s.max_ms),
        ]);
    }
    let columns = header.len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} against {} ({} clients, {} conns){}",
        report.workload,
        report.endpoints.join(","),
        report.clients,
        report.conns,
        if report.label.is_empty() {
            String::new()
        } else {
            format!(" [{}]", report.label)
        }
    );
    let rule: String = widths
        .iter()
        .map(|w| "-".repeat(w + 2))
        .collect::<Vec<_>>()
        .join("+");
    let _ = writeln!(out, "+{rule}+");
    for (i, line) in lines.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            // Names left-aligned, numbers right-aligned so magnitudes line up.
            .map(|(c, (cell, w))| {
                if c == 0 {
                    format!(" {cell:<w$} ")
                } else {
                    format!(" {cell:>w$} ")
                }
            })
            .collect();
        let _ = writeln!(out, "|{}|", cells.join("|"));
        if i == 0 {
            let _ = writeln!(out, "+{rule}+");
        }
    }
    let _ = writeln!(out, "+{rule}+");
    out
}

/// One JSON object per run: the headline row's figures at the top level (so `jq .ops_per_sec`
/// works for every workload) and every row under `rows`.
pub fn json_line(report: &Report) -> String {
    let mut value = serde_json::json!({
        "workload": report.workload,
        "label": report.label,
        "endpoints": report.endpoints,
        "clients": report.clients,
        "conns": report.conns,
    });
    if let (Some(obj), Some(first)) = (value.as_object_mut(), report.rows.first()) {
        if let Ok(serde_json::Value::Object(summary)) = serde_json::to_value(&first.summary) {
            obj.extend(summary);
        }
        obj.insert("op".into(), first.op.clone().into());
        obj.insert(
            "rows".into(),
            serde_json::to_value(&report.rows).unwrap_or_default(),
        );
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_of(values_us: &[u64]) -> Histogram<u64> {
        let mut h = new_histogram().unwrap();
        for v in values_us {
            record(&mut h, Duration::from_micros(*v));
        }
        h
    }

    #[test]
    fn percentiles_of_a_uniform_range() {
        let values: Vec<u64> = (1..=1000).collect();
        let s = summarize(&hist_of(&values), 2, 5, Duration::from_secs(2));
        assert_eq!(s.ops, 1000);
        assert_eq!(s.errors, 2);
        assert_eq!(s.retries, 5);
        assert!((s.ops_per_sec - 500.0).abs() < 1e-9);
        // 3 significant digits: each percentile is within 0.1% of the exact one.
        assert!((s.p50_ms - 0.500).abs() < 0.001, "{}", s.p50_ms);
        assert!((s.p90_ms - 0.900).abs() < 0.001, "{}", s.p90_ms);
        assert!((s.p99_ms - 0.990).abs() < 0.001, "{}", s.p99_ms);
        assert!((s.p999_ms - 0.999).abs() < 0.001, "{}", s.p999_ms);
        assert!((s.max_ms - 1.000).abs() < 0.001, "{}", s.max_ms);
    }

    #[test]
    fn a_single_outlier_shows_only_in_the_tail() {
        let mut values = vec![100u64; 999];
        values.push(50_000);
        let s = summarize(&hist_of(&values), 0, 0, Duration::from_secs(1));
        assert!((s.p50_ms - 0.1).abs() < 0.001);
        assert!((s.p99_ms - 0.1).abs() < 0.001);
        assert!((s.max_ms - 50.0).abs() < 0.1);
    }

    #[test]
    fn empty_histogram_summarises_to_zeros() {
        let s = summarize(&new_histogram().unwrap(), 3, 0, Duration::ZERO);
        assert_eq!(s.ops, 0);
        assert_eq!(s.errors, 3);
        assert_eq!(s.ops_per_sec, 0.0);
        assert_eq!(s.p99_ms, 0.0);
        assert_eq!(s.max_ms, 0.0);
    }

    #[test]
    fn out_of_range_latencies_are_clamped_not_lost() {
        let mut h = new_histogram().unwrap();
        record(&mut h, Duration::ZERO);
        record(&mut h, Duration::from_secs(3600));
        assert_eq!(h.len(), 2);
        assert!(h.max() >= HIGHEST_US - HIGHEST_US / 1000);
    }

    #[test]
    fn merging_keeps_every_sample() {
        let mut a = hist_of(&[10, 20, 30]);
        let b = hist_of(&[40, 50]);
        merge(&mut a, &b);
        assert_eq!(a.len(), 5);
        assert_eq!(a.max(), 50);
    }

    fn report() -> Report {
        let s = summarize(&hist_of(&[1000, 2000]), 1, 0, Duration::from_secs(1));
        Report {
            workload: "put".into(),
            label: "cairn".into(),
            endpoints: vec!["127.0.0.1:2379".into()],
            clients: 4,
            conns: 2,
            rows: vec![Row {
                op: "put".into(),
                summary: s,
            }],
        }
    }

    #[test]
    fn json_line_is_one_line_with_headline_fields() {
        let line = json_line(&report());
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["workload"], "put");
        assert_eq!(v["ops"], 2);
        assert_eq!(v["errors"], 1);
        assert_eq!(v["clients"], 4);
        assert_eq!(v["rows"][0]["op"], "put");
        assert!(v["p99_ms"].as_f64().unwrap() > 1.9);
    }

    #[test]
    fn table_has_a_row_per_op_and_aligned_columns() {
        let t = format_table(&report());
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("put against 127.0.0.1:2379"));
        assert!(lines.iter().any(|l| l.starts_with("| put ")));
        let widths: Vec<usize> = lines[1..].iter().map(|l| l.len()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{t}");
    }
}
