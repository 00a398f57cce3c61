//! The end of a run: every thread's results merged into one [`Report`], printed as a table
//! for people or as one JSON document (`--json`) for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::local::{Checks, Hists};

/// What one thread hands back.
pub struct ThreadResult {
    pub hists: Hists,
    pub errors: BTreeMap<String, u64>,
    pub checks: Checks,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub conns: u64,
    /// When this thread's measured phase began, and its last delivery (µs, shared clock).
    pub send_start_us: u64,
    pub last_delivery_us: u64,
    /// Scenario-specific figures (summed over threads).
    pub extra: BTreeMap<String, f64>,
}

/// A latency distribution, in microseconds.
#[derive(Debug, Serialize, Default, Clone)]
pub struct Summary {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// A whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub transport: String,
    pub threads: usize,
    pub connections: u64,
    pub payload_bytes: usize,
    /// Seconds from the first send to the last delivery.
    pub elapsed_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    /// Deliveries per second over `elapsed_s`.
    pub throughput: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub unexpected: u64,
    pub stale: u64,
    pub refused: u64,
    pub latency_us: Summary,
    pub fanout_latency_us: Summary,
    pub connect_latency_us: Summary,
    /// Cluster runs (users' homes known): delivery latency when the sender and the receiver
    /// have the same home node, and when they do not.
    pub same_node_latency_us: Summary,
    pub cross_node_latency_us: Summary,
    /// Runs at a rate: how late messages left against their schedule (latency is measured
    /// from the schedule, so this is part of it).
    pub pacing_error_us: Summary,
    /// Delivery latency at fixed quantiles, `[quantile, µs]`, for plotting a CDF.
    pub latency_cdf_us: Vec<(f64, u64)>,
    pub errors: BTreeMap<String, u64>,
    pub extra: BTreeMap<String, f64>,
}

/// Quantiles of the CDF: every percent, then the tail.
fn cdf(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    (1..100)
        .map(|p| p as f64 / 100.0)
        .chain([0.995, 0.999, 0.9995, 0.9999, 1.0])
        .map(|q| (q, h.value_at_quantile(q)))
        .collect()
}

/// The parts of a report that come from the command line.
pub struct Labels {
    pub scenario: String,
    pub target: String,
    pub transport: String,
    pub threads: usize,
    pub payload_bytes: usize,
}

impl Report {
    pub fn merge(labels: Labels, results: Vec<ThreadResult>) -> Report {
        let mut hists = Hists::default();
        let mut errors = BTreeMap::new();
        let mut extra = BTreeMap::new();
        let mut c = Checks::default();
        let (mut sent, mut acked, mut delivered, mut conns) = (0, 0, 0, 0);
        let mut start = u64::MAX;
        let mut last = 0;
        for r in results {
            // Same bounds everywhere: adding cannot fail.
            let _ = hists.delivery.add(&r.hists.delivery);
            let _ = hists.fanout.add(&r.hists.fanout);
            let _ = hists.connect.add(&r.hists.connect);
            let _ = hists.same_node.add(&r.hists.same_node);
            let _ = hists.cross_node.add(&r.hists.cross_node);
            let _ = hists.pacing.add(&r.hists.pacing);
            for (k, v) in r.errors {
                *errors.entry(k).or_default() += v;
            }
            for (k, v) in r.extra {
                *extra.entry(k).or_default() += v;
            }
            c.duplicated += r.checks.duplicated;
            c.reordered += r.checks.reordered;
            c.unexpected += r.checks.unexpected;
            c.stale += r.checks.stale;
            c.lost += r.checks.lost;
            c.refused += r.checks.refused;
            sent += r.sent;
            acked += r.acked;
            delivered += r.delivered;
            conns += r.conns;
            start = start.min(r.send_start_us);
            last = last.max(r.last_delivery_us);
        }
        let elapsed_s = last.saturating_sub(start) as f64 / 1e6;
        Report {
            scenario: labels.scenario,
            target: labels.target,
            transport: labels.transport,
            threads: labels.threads,
            connections: conns,
            payload_bytes: labels.payload_bytes,
            elapsed_s,
            sent,
            acked,
            delivered,
            throughput: if elapsed_s > 0.0 {
                delivered as f64 / elapsed_s
            } else {
                0.0
            },
            lost: c.lost,
            duplicated: c.duplicated,
            reordered: c.reordered,
            unexpected: c.unexpected,
            stale: c.stale,
            refused: c.refused,
            latency_us: Summary::of(&hists.delivery),
            fanout_latency_us: Summary::of(&hists.fanout),
            connect_latency_us: Summary::of(&hists.connect),
            same_node_latency_us: Summary::of(&hists.same_node),
            cross_node_latency_us: Summary::of(&hists.cross_node),
            pacing_error_us: Summary::of(&hists.pacing),
            latency_cdf_us: cdf(&hists.delivery),
            errors,
            extra,
        }
    }

    /// Lost, duplicated or reordered messages: the run failed its checks.
    pub fn check_failed(&self) -> bool {
        self.lost + self.duplicated + self.reordered + self.unexpected > 0
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {} · target {} over {} · {} threads · {} connections · {} B payload",
            self.scenario,
            self.target,
            self.transport,
            self.threads,
            self.connections,
            self.payload_bytes
        );
        if self.sent > 0 || self.delivered > 0 {
            let _ = writeln!(
                s,
                "messages  sent {} · acked {} · delivered {} in {:.2} s = {:.0} deliveries/s",
                self.sent, self.acked, self.delivered, self.elapsed_s, self.throughput
            );
            let _ = writeln!(
                s,
                "checks    lost {} · duplicated {} · reordered {} · unexpected {} · stale {} · refused {}",
                self.lost, self.duplicated, self.reordered, self.unexpected, self.stale, self.refused
            );
        }
        let _ = writeln!(
            s,
            "{:<22}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>12}",
            "latency (µs)", "count", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        for (name, h) in [
            ("delivery", &self.latency_us),
            ("fan-out (last member)", &self.fanout_latency_us),
            ("connect+auth", &self.connect_latency_us),
            ("delivery, same node", &self.same_node_latency_us),
            ("delivery, cross-node", &self.cross_node_latency_us),
            ("pacing error", &self.pacing_error_us),
        ] {
            if h.count > 0 {
                let _ = writeln!(
                    s,
                    "{name:<22}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>12.1}",
                    h.count, h.p50, h.p90, h.p99, h.p999, h.max, h.mean
                );
            }
        }
        for (k, v) in &self.extra {
            let _ = writeln!(s, "{k:<34}{v:>16.1}");
        }
        if !self.errors.is_empty() {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(s, "errors    {}", list.join(" · "));
        }
        s
    }
}
