//! The cluster's metrics: live nodes, messages sent to and received from each peer node,
//! inbox backlog, evictions, cross-node delivery latency (sender's wall clock to hand-off here; meaningful when the
//! nodes' clocks are synchronised, e.g. NTP), inbox entries refused, reclaimed.
//! Label values are node ids (a small, operator-chosen set).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use im_storage::histogram::{AtomicHistogram, HistogramSnapshot};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::wire::Record;

/// Cross-node latency buckets, milliseconds.
const LATENCY_MS: &[u64] = &[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000];

#[derive(Debug)]
pub struct ClusterStats {
    live: AtomicI64,
    /// Per peer node: (recipients sent, recipients received).
    peers: Mutex<BTreeMap<String, (u64, u64)>>,
    corrupt: AtomicU64,
    reclaimed: AtomicU64,
    send_errors: AtomicU64,
    lease_lost: AtomicU64,
    evicted: AtomicU64,
    duplicates: AtomicU64,
    inbox: AtomicU64,
    latency_ms: AtomicHistogram,
}

impl Default for ClusterStats {
    fn default() -> Self {
        Self {
            live: AtomicI64::new(0),
            peers: Mutex::new(BTreeMap::new()),
            corrupt: AtomicU64::new(0),
            reclaimed: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            lease_lost: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            inbox: AtomicU64::new(0),
            latency_ms: AtomicHistogram::new(LATENCY_MS),
        }
    }
}

impl ClusterStats {
    fn peer(&self, node: &str, f: impl FnOnce(&mut (u64, u64))) {
        let mut p = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        f(p.entry(node.to_owned()).or_default());
    }

    pub(crate) fn sent(&self, node: &str, n: u64) {
        self.peer(node, |c| c.0 += n);
    }

    /// One entry's records from node `from`, received at `now_ms`.
    pub(crate) fn received(&self, from: &str, records: &[Record], now_ms: u64) {
        let n = crate::wire::recipients(records);
        self.peer(from, |c| c.1 += n);
        for r in records {
            self.latency_ms.observe(now_ms.saturating_sub(r.sent_ms));
        }
    }

    pub(crate) fn corrupt(&self) {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reclaimed(&self, n: u64) {
        self.reclaimed.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn send_error(&self) {
        self.send_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn lease_lost(&self) {
        self.lease_lost.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn evicted(&self) {
        self.evicted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_inbox(&self, entries: u64) {
        self.inbox.store(entries, Ordering::Relaxed);
    }

    pub(crate) fn set_live(&self, n: usize) {
        self.live.store(n as i64, Ordering::Relaxed);
    }

    /// Inbox entries refused as malformed since start.
    pub fn corrupt_entries(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }

    /// Live nodes as last seen.
    pub fn live_nodes(&self) -> i64 {
        self.live.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> (BTreeMap<String, (u64, u64)>, HistogramSnapshot) {
        let p = self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (p, self.latency_ms.snapshot())
    }
}

/// The Prometheus collector of a node's [`ClusterStats`].
#[derive(Debug)]
pub struct ClusterMetrics(pub std::sync::Arc<ClusterStats>);

impl Collector for ClusterMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let (peers, latency) = s.snapshot();
        let g = ConstGauge::new(s.live_nodes());
        g.encode(e.encode_descriptor(
            "im_cluster_live_nodes",
            "Nodes holding a lease, as this node last saw them (itself included).",
            None,
            g.metric_type(),
        )?)?;
        let g = ConstGauge::new(s.inbox.load(Ordering::Relaxed) as i64);
        g.encode(e.encode_descriptor(
            "im_cluster_inbox_entries",
            "Entries in this node's inbox not yet handed to its shards (the inbox lag), as of the last lease renewal.",
            None,
            g.metric_type(),
        )?)?;
        for (name, help, pick) in [
            (
                "im_cluster_forwarded",
                "Recipients handed to another node's inbox, by destination node.",
                0usize,
            ),
            (
                "im_cluster_received",
                "Recipients received from another node's entries, by sending node.",
                1,
            ),
        ] {
            let mut fam = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (node, c) in &peers {
                let v = if pick == 0 { c.0 } else { c.1 };
                ConstCounter::new(v).encode(fam.encode_family(&[("node", node.as_str())])?)?;
            }
        }
        for (name, help, v) in [
            (
                "im_cluster_corrupt_entries",
                "Inbox entries refused as malformed (dropped and logged).",
                &s.corrupt,
            ),
            (
                "im_cluster_reclaimed_entries",
                "Entries taken over from dead nodes' inboxes.",
                &s.reclaimed,
            ),
            (
                "im_cluster_send_errors",
                "Failed appends to another node's inbox (retried).",
                &s.send_errors,
            ),
            (
                "im_cluster_lease_lost",
                "Times this node found its lease lapsed and took it again.",
                &s.lease_lost,
            ),
            (
                "im_cluster_evicted",
                "Times this node learned the others had counted it dead (it then closed its sessions so their clients collect what was stored meanwhile).",
                &s.evicted,
            ),
            (
                "im_cluster_duplicate_entries",
                "Inbox entries appended twice (a sender's retry after a lost reply) and handed on once.",
                &s.duplicates,
            ),
        ] {
            let c = ConstCounter::new(v.load(Ordering::Relaxed));
            c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let mut m = e.encode_descriptor(
            "im_cluster_delivery_latency_seconds",
            "From the sending node's clock at hand-off to this node's clock at receipt.",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<NoLabelSet>(
            latency.sum as f64 / 1e3,
            latency.count(),
            &latency.buckets(1e3),
            None,
        )
    }
}
