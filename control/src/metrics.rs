//! `GET /metrics`: Prometheus text format through `prometheus-client`. Nothing is recorded
//! here: on each scrape a [`Collector`] sums every shard's atomic counters and histograms
//! (each written only by its own shard, no lock on the hot path) and the storage thread's.
//! No uid or gid labels: label values come from small fixed sets.

use std::sync::Arc;

use im_protocol::cmd;
use im_shards::control::ControlHandle;
use im_shards::stats::{ShardStats, AUTH_FAILURES, MSG_KINDS, REFUSAL_CODES, TRANSPORTS};
use im_storage::histogram::HistogramSnapshot;
use im_storage::StoreHandle;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Command names for the per-command packet counters; byte 0 stands for every byte the
/// protocol does not define.
const COMMANDS: [(u8, &str); 15] = [
    (0, "unknown"),
    (cmd::CONNECT, "connect"),
    (cmd::CONNECT_ACK, "connect_ack"),
    (cmd::PUBLISH, "publish"),
    (cmd::PUB_ACK, "pub_ack"),
    (cmd::GROUP_PUBLISH, "group_publish"),
    (cmd::GROUP_PUB_ACK, "group_pub_ack"),
    (cmd::PING, "ping"),
    (cmd::PING_RESP, "ping_resp"),
    (cmd::DISCONNECT, "disconnect"),
    (cmd::INVALID_PACKET, "invalid_packet"),
    (cmd::GROUP_PART_PUBLISH, "group_part_publish"),
    (cmd::GROUP_PART_PUB_ACK, "group_part_pub_ack"),
    (cmd::PUB_ERR, "pub_err"),
    (cmd::LOGOUT, "logout"),
];

/// Reads the core's counters at scrape time.
#[derive(Clone)]
pub struct CoreMetrics {
    pub shards: Vec<Arc<ShardStats>>,
    pub control: ControlHandle,
    pub store: StoreHandle,
}

impl std::fmt::Debug for CoreMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreMetrics").finish_non_exhaustive()
    }
}

/// A registry holding the core's collector and the standard process metrics.
pub fn registry(core: CoreMetrics) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(core));
    r.register_collector(Box::new(crate::process::ProcessMetrics::new(env!(
        "CARGO_PKG_VERSION"
    ))));
    r
}

fn sum(shards: &[Arc<ShardStats>], f: impl Fn(&ShardStats) -> u64) -> u64 {
    shards.iter().map(|s| f(s)).sum()
}

fn merged(
    shards: &[Arc<ShardStats>],
    f: impl Fn(&ShardStats) -> HistogramSnapshot,
) -> Option<HistogramSnapshot> {
    let mut it = shards.iter().map(|s| f(s));
    let mut acc = it.next()?;
    for h in it {
        acc.merge(&h);
    }
    Some(acc)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A labelled counter family: one series per `(label value, count)`.
fn counters<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    series: impl Iterator<Item = (&'a str, u64)>,
) -> std::fmt::Result {
    let mut fam = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in series {
        let labels = [(label, value)];
        ConstCounter::new(n).encode(fam.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A histogram whose observations are in `unit`s of 1/`scale` (e.g. µs with 1e6 → seconds).
fn histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &HistogramSnapshot,
    scale: f64,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<NoLabelSet>(h.sum as f64 / scale, h.count(), &h.buckets(scale), None)
}

impl Collector for CoreMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.shards;
        let mut fam = e.encode_descriptor(
            "im_connections",
            "Open sessions by transport.",
            None,
            MetricType::Gauge,
        )?;
        for (i, t) in TRANSPORTS.iter().enumerate() {
            let v: i64 = s.iter().map(|x| x.connections(i)).sum();
            ConstGauge::new(v).encode(fam.encode_family(&[("transport", *t)])?)?;
        }
        gauge(
            &mut e,
            "im_connections_sleeping",
            "Open sessions whose connection sleeps (quiet for a second or more: no task until \
             input or output wakes it); updated once a second.",
            s.iter().map(|x| x.sleeping()).sum(),
        )?;
        counter(
            &mut e,
            "im_connects",
            "Sessions opened (CONNECT_ACK 0).",
            sum(s, |x| x.connects()),
        )?;
        counter(
            &mut e,
            "im_relayed_logins",
            "Logins relayed to the user's home node (cluster): authenticated here, served there.",
            sum(s, |x| x.relayed_logins()),
        )?;
        counters(
            &mut e,
            "im_auth_failures",
            "CONNECTs refused, by reason.",
            "reason",
            AUTH_FAILURES
                .iter()
                .enumerate()
                .map(|(i, r)| (*r, sum(s, |x| x.auth_failures(i)))),
        )?;
        counters(
            &mut e,
            "im_packets_received",
            "Packets received from clients, by command.",
            "command",
            COMMANDS
                .iter()
                .map(|(c, n)| (*n, sum(s, |x| x.packets(*c).0))),
        )?;
        counters(
            &mut e,
            "im_packets_sent",
            "Packets sent to clients, by command.",
            "command",
            COMMANDS
                .iter()
                .map(|(c, n)| (*n, sum(s, |x| x.packets(*c).1))),
        )?;
        counters(
            &mut e,
            "im_messages",
            "Messages by event: accepted from senders, delivered (pushed) to sessions, acked, redelivered, stored offline, drained from storage.",
            "event",
            MSG_KINDS.iter().map(|(k, n)| (*n, sum(s, |x| x.messages(*k)))),
        )?;
        let codes: Vec<(String, u64)> = REFUSAL_CODES
            .iter()
            .map(|c| (c.to_string(), sum(s, |x| x.refusals(*c))))
            .collect();
        counters(
            &mut e,
            "im_refusals",
            "Publishes refused, by PUB_ERR code (seed 004 codes).",
            "code",
            codes.iter().map(|(c, n)| (c.as_str(), *n)),
        )?;
        counter(
            &mut e,
            "im_send_queue_overflows",
            "Sessions closed as too slow (send queue or in-flight pushes over the limit).",
            sum(s, |x| x.send_queue_overflows()),
        )?;
        gauge(
            &mut e,
            "im_mailbox_depth",
            "Mail waiting between shards.",
            self.control.mailbox_depth() as i64,
        )?;
        counter(
            &mut e,
            "im_mailbox_full",
            "Times a sender found a shard mailbox full.",
            self.control.mailbox_full_events(),
        )?;
        if let Some(h) = merged(s, |x| x.delivery_latency()) {
            histogram(
                &mut e,
                "im_delivery_latency_seconds",
                "Publish accepted → acked by a recipient session (live deliveries).",
                &h,
                1e6,
            )?;
        }
        if let Some(h) = merged(s, |x| x.fanout_sizes()) {
            histogram(
                &mut e,
                "im_group_fanout_size",
                "Recipients per accepted group message.",
                &h,
                1.0,
            )?;
        }
        let st = self.store.stats();
        histogram(
            &mut e,
            "im_storage_write_seconds",
            "Offline-store group commits (one transaction, one sync).",
            &st.write_us.snapshot(),
            1e6,
        )?;
        histogram(
            &mut e,
            "im_storage_fetch_seconds",
            "Offline-store fetches.",
            &st.fetch_us.snapshot(),
            1e6,
        )?;
        counter(
            &mut e,
            "im_storage_write_failures",
            "Offline-store group commits that failed.",
            st.write_failures.load(std::sync::atomic::Ordering::Relaxed),
        )?;
        gauge(
            &mut e,
            "im_storage_queue_depth",
            "Operations waiting for the storage thread.",
            self.store.queue_len() as i64,
        )?;
        Ok(())
    }
}
