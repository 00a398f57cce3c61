//! `/metrics` end to end, read back with a Prometheus text parser (`prometheus-parse`): the
//! counters match the traffic sent, every metric the Grafana dashboard queries exists, and
//! the standard process metrics are there.

mod common;

use std::time::Duration;

use common::api::call;
use common::{msg_id, Client, Kind, Server};

fn start() -> Server {
    Server::start(common::driver(), &[])
}

fn scrape(srv: &Server) -> prometheus_parse::Scrape {
    let (status, v) = call(srv, "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    let text = v.as_str().expect("metrics text").to_string();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text")
}

fn value(s: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    s.samples
        .iter()
        .find(|x| x.metric == name && label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{name}: unexpected {other:?}"),
        })
        .unwrap_or_else(|| panic!("no sample {name} {label:?}"))
}

fn metrics_match_the_traffic() {
    const N: u64 = 25;
    let srv = start();
    let mut a = srv.connect(1, Kind::Tcp);
    let mut b = srv.connect(2, Kind::Ws);
    for i in 0..N {
        a.publish_acked(2, &msg_id(i), b"x");
        b.recv_push_ack();
    }
    // One refusal (uid 0), one failed login.
    a.publish(0, &msg_id(99), b"x");
    a.expect_pub_err(&msg_id(99), 1101);
    let mut bad = Client::raw(&srv, Kind::Tcp);
    bad.send(&common::connect_packet("3", "not-a-token", Some(1)));
    assert_eq!(bad.recv_packet(), vec![2, 3]);
    // The last ack must have been processed before the scrape.
    b.ping();

    let s = scrape(&srv);
    let counter = |name: &str, l: (&str, &str)| value(&s, name, Some(l));
    assert_eq!(
        counter("im_messages_total", ("event", "accepted")),
        N as f64
    );
    assert_eq!(
        counter("im_messages_total", ("event", "delivered")),
        N as f64
    );
    assert_eq!(counter("im_messages_total", ("event", "acked")), N as f64);
    assert_eq!(counter("im_messages_total", ("event", "redelivered")), 0.0);
    assert_eq!(counter("im_refusals_total", ("code", "1101")), 1.0);
    assert_eq!(
        counter("im_auth_failures_total", ("reason", "bad_token")),
        1.0
    );
    assert_eq!(
        counter("im_packets_received_total", ("command", "publish")),
        (N + 1) as f64
    );
    assert_eq!(
        counter("im_packets_received_total", ("command", "pub_ack")),
        N as f64
    );
    assert_eq!(
        counter("im_packets_sent_total", ("command", "publish")),
        N as f64
    );
    assert_eq!(
        counter("im_packets_sent_total", ("command", "pub_err")),
        1.0
    );
    assert_eq!(counter("im_connections", ("transport", "tcp")), 1.0);
    assert_eq!(counter("im_connections", ("transport", "ws")), 1.0);
    assert_eq!(value(&s, "im_connects_total", None), 2.0);
    let latency = s
        .samples
        .iter()
        .find(|x| x.metric == "im_delivery_latency_seconds")
        .expect("delivery latency histogram");
    match &latency.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let total = buckets.last().map(|b| b.count).unwrap_or(0.0);
            assert_eq!(total, N as f64, "one latency sample per ack");
            assert!(
                buckets.windows(2).all(|w| w[0].count <= w[1].count),
                "cumulative"
            );
        }
        other => panic!("expected a histogram, got {other:?}"),
    }
    // Every metric the shipped Grafana dashboard queries exists in a real scrape.
    // The cluster row is checked against a cluster node (tests/e2e_cluster.rs).
    let names = common::dashboard_metrics(|title| !title.starts_with("Cluster"));
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| name.strip_suffix(suf))
            .unwrap_or(&name);
        assert!(
            s.samples
                .iter()
                .any(|x| x.metric == base || x.metric == name),
            "dashboard queries {name}, which /metrics does not have"
        );
    }
    drop(a);
}

/// The standard process metrics and the build-info gauge that operators alert on.
fn process_metrics_and_build_info() {
    let srv = start();
    let s = scrape(&srv);
    let rss = value(&s, "process_resident_memory_bytes", None);
    assert!(rss > 1e6 && rss < 1e10, "rss {rss}");
    assert!(value(&s, "process_virtual_memory_bytes", None) >= rss);
    let fds = value(&s, "process_open_fds", None);
    assert!(fds >= 5.0, "the listeners alone hold descriptors: {fds}");
    assert!(value(&s, "process_max_fds", None) >= fds);
    // Counted in clock ticks (10 ms): a server this fresh may show 0.
    let cpu = value(&s, "process_cpu_seconds_total", None);
    assert!(cpu >= 0.0, "cpu {cpu}");
    let start = value(&s, "process_start_time_seconds", None);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 120.0..=now + 5.0).contains(&start),
        "start {start} vs now {now}"
    );
    assert_eq!(
        value(
            &s,
            "imserver_build_info",
            Some(("version", env!("CARGO_PKG_VERSION")))
        ),
        1.0
    );
    // Opening connections shows in the descriptor count.
    let clients: Vec<_> = (0..20).map(|_| Client::raw(&srv, Kind::Tcp)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let later = scrape(&srv);
    let more = value(&later, "process_open_fds", None);
    assert!(more >= fds + 20.0, "{fds} → {more}");
    assert!(value(&later, "process_cpu_seconds_total", None) >= cpu);
    drop(clients);
}

under_both_drivers!(metrics_match_the_traffic, process_metrics_and_build_info,);
