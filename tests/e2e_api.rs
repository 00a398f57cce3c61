//! The HTTP API end to end: the real binary, a real HTTP client (`ureq`), real protocol
//! clients, and `/metrics` read back with a Prometheus text parser (`prometheus-parse`).

mod common;

use std::time::Duration;

use common::{content, msg_id, Client, Kind, Server, ADMIN};
use im_protocol::{ClientPacket, ServerPacket};
use serde_json::{json, Value};

/// An HTTP client that returns error statuses as responses.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// (status, body) of a request; `admin` adds the admin secret header.
fn call(
    srv: &Server,
    method: &str,
    path: &str,
    body: Option<Value>,
    admin: Option<&str>,
) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{}{path}", srv.http_port);
    let a = agent();
    let mut resp = match method {
        "GET" | "DELETE" => {
            let mut r = if method == "GET" {
                a.get(&url)
            } else {
                a.delete(&url)
            };
            if let Some(s) = admin {
                r = r.header("token", s);
            }
            r.call()
        }
        _ => {
            let mut r = a.post(&url);
            if let Some(s) = admin {
                r = r.header("token", s);
            }
            r.send_json(body.unwrap_or(json!({})))
        }
    }
    .expect("http request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

fn admin(srv: &Server, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, v) = call(srv, method, path, body, Some(ADMIN));
    assert_eq!(status, 200, "{method} {path}: {v}");
    assert_eq!(v["errCode"], 0, "{v}");
    v["data"].clone()
}

fn start() -> Server {
    Server::start(common::driver(), &[])
}

fn token_from_the_api_logs_in() {
    let srv = start();
    let (status, v) = call(
        &srv,
        "POST",
        "/auth/user_token",
        Some(json!({"secret": ADMIN, "platform": 1, "uid": 42})),
        None,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["errCode"].as_u64(), v["data"]["uid"].as_u64()),
        (Some(0), Some(42))
    );
    assert!(v["data"]["expiredTime"].as_u64().unwrap() > 1_700_000_000);
    let token = v["data"]["token"].as_str().unwrap().to_string();
    let _c = Client::login(&srv, 42, Kind::Tcp, &token);
    // OpenIM field names, uid as a string.
    let (_, v) = call(
        &srv,
        "POST",
        "/auth/user_token",
        Some(json!({"secret": ADMIN, "platformID": 2, "userID": "43"})),
        None,
    );
    let _c = Client::login(&srv, 43, Kind::Ws, v["data"]["token"].as_str().unwrap());
    // Wrong secret: 401, errCode 1002 (NoPermission); malformed body: 400, 1001.
    let (status, v) = call(
        &srv,
        "POST",
        "/auth/user_token",
        Some(json!({"secret": "nope", "uid": 42})),
        None,
    );
    assert_eq!((status, v["errCode"].as_u64()), (401, Some(1002)), "{v}");
    let (status, v) = call(
        &srv,
        "POST",
        "/auth/user_token",
        Some(json!({"secret": ADMIN})),
        None,
    );
    assert_eq!((status, v["errCode"].as_u64()), (400, Some(1001)), "{v}");
}

fn admin_endpoints_need_the_secret() {
    let srv = start();
    for (m, p) in [
        ("GET", "/groups"),
        ("GET", "/users/1/online"),
        ("POST", "/msg/send"),
        ("DELETE", "/groups/1"),
    ] {
        let (status, v) = call(&srv, m, p, None, None);
        assert_eq!(
            (status, v["errCode"].as_u64()),
            (401, Some(1002)),
            "{m} {p}: {v}"
        );
        assert!(
            v["errMsg"].as_str().unwrap().contains("admin secret"),
            "{v}"
        );
        let (status, _) = call(&srv, m, p, None, Some("wrong"));
        assert_eq!(status, 401, "{m} {p} with a wrong secret");
    }
    // Bearer works too; health is open.
    let url = format!("http://127.0.0.1:{}/groups", srv.http_port);
    let r = agent()
        .get(&url)
        .header("authorization", &format!("Bearer {ADMIN}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(call(&srv, "GET", "/healthz", None, None).0, 200);
    let (status, v) = call(&srv, "GET", "/readyz", None, None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["shards"], "ok");
    assert_eq!(call(&srv, "GET", "/nope", None, None).0, 404);
}

fn server_side_send_reaches_online_offline_and_groups() {
    let srv = start();
    let mut c5 = srv.connect(5, Kind::Tcp);
    let d = admin(
        &srv,
        "POST",
        "/msg/send",
        Some(json!({"recvID": 5, "content": "from the server"})),
    );
    assert_eq!(d["msgID"].as_str().unwrap().len(), 32);
    let (id, payload) = c5.recv_push_ack();
    assert_eq!(&id[..], d["msgID"].as_str().unwrap().as_bytes());
    let v: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        (v["from"].as_str(), v["content"].as_str()),
        (Some("0"), Some("from the server"))
    );
    // Offline: stored, delivered at login; sendID shows as the sender.
    admin(
        &srv,
        "POST",
        "/msg/send",
        Some(
            json!({"sendID": 9, "recvID": 6, "content": "later", "msgID": "0123456789abcdef0123456789abcdef"}),
        ),
    );
    let mut c6 = srv.connect(6, Kind::Ws);
    let (id, payload) = c6.recv_push_ack();
    assert_eq!(&id, b"0123456789abcdef0123456789abcdef");
    assert_eq!(content(&payload), "later");
    // A group made through the API, a group message through the API: every member gets it.
    admin(
        &srv,
        "POST",
        "/groups",
        Some(json!({"gid": 7, "members": [5, 6]})),
    );
    admin(
        &srv,
        "POST",
        "/msg/send",
        Some(json!({"groupID": 7, "content": "to the group"})),
    );
    for c in [&mut c5, &mut c6] {
        let g = c.recv_group_push(true);
        assert_eq!(
            (g.group, content(&g.payload)),
            (7, "to the group".to_string())
        );
    }
    // A retried request with the same msgID is accepted again but delivered once.
    let again =
        json!({"recvID": 5, "content": "once", "msgID": "ffffffffffffffffffffffffffffffff"});
    admin(&srv, "POST", "/msg/send", Some(again.clone()));
    admin(&srv, "POST", "/msg/send", Some(again));
    assert_eq!(content(&c5.recv_push_ack().1), "once");
    c5.expect_silence(Duration::from_millis(300));
    // Refusals map to codes.
    let (status, v) = call(
        &srv,
        "POST",
        "/msg/send",
        Some(json!({"groupID": 8, "content": "x"})),
        Some(ADMIN),
    );
    assert_eq!((status, v["errCode"].as_u64()), (404, Some(1201)), "{v}");
    let (status, v) = call(
        &srv,
        "POST",
        "/msg/send",
        Some(json!({"recvID": 5, "groupID": 7, "content": "x"})),
        Some(ADMIN),
    );
    assert_eq!((status, v["errCode"].as_u64()), (400, Some(1001)), "{v}");
    c5.expect_silence(Duration::from_millis(200));
}

fn group_endpoints_change_who_receives() {
    let srv = start();
    admin(
        &srv,
        "POST",
        "/groups",
        Some(json!({"groupID": 8, "memberUserIDs": [1, 2]})),
    );
    let (status, v) = call(
        &srv,
        "POST",
        "/groups",
        Some(json!({"gid": 8, "members": [3]})),
        Some(ADMIN),
    );
    assert_eq!((status, v["errCode"].as_u64()), (409, Some(1202)), "{v}");
    let mut c1 = srv.connect(1, Kind::Tcp);
    let mut c2 = srv.connect(2, Kind::Tcp);
    let mut c3 = srv.connect(3, Kind::Ws);
    c1.group_publish(8, &msg_id(1), b"one");
    c1.expect_group_ack(false, &msg_id(1));
    assert_eq!(content(&c2.recv_group_push(true).payload), "one");
    c3.expect_silence(Duration::from_millis(200));

    assert_eq!(
        admin(
            &srv,
            "POST",
            "/groups/8/members",
            Some(json!({"uids": [3]}))
        )["added"],
        1
    );
    assert_eq!(
        admin(
            &srv,
            "POST",
            "/groups/8/members/remove",
            Some(json!({"uids": [2]}))
        )["removed"],
        1
    );
    assert_eq!(
        admin(&srv, "GET", "/groups/8", None)["members"],
        json!([1, 3])
    );
    assert_eq!(
        admin(&srv, "GET", "/groups", None)["groups"],
        json!([{"gid": 8, "members": 2}])
    );
    c1.group_publish(8, &msg_id(2), b"two");
    c1.expect_group_ack(false, &msg_id(2));
    assert_eq!(content(&c3.recv_group_push(true).payload), "two");
    c2.expect_silence(Duration::from_millis(200));

    admin(&srv, "DELETE", "/groups/8", None);
    c1.group_publish(8, &msg_id(3), b"three");
    c1.expect_pub_err(&msg_id(3), 1201);
    let (status, v) = call(&srv, "GET", "/groups/8", None, Some(ADMIN));
    assert_eq!((status, v["errCode"].as_u64()), (404, Some(1201)));
}

fn online_lists_sessions_and_transports() {
    let srv = Server::start(
        common::driver(),
        &[("IMSERVER_SESSION__DUPLICATE_LOGIN", "multi")],
    );
    let d = admin(&srv, "GET", "/users/9/online", None);
    assert_eq!(
        (
            d["online"].as_bool(),
            d["sessions"].as_array().map(Vec::len)
        ),
        (Some(false), Some(0))
    );
    let _a = srv.connect(9, Kind::Ws);
    let _b = srv.connect(9, Kind::Tcp);
    let d = admin(&srv, "GET", "/users/9/online", None);
    assert_eq!(d["online"], true);
    let mut transports: Vec<&str> = d["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["transport"].as_str().unwrap())
        .collect();
    transports.sort();
    assert_eq!(transports, ["tcp", "ws"]);
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
    b.send(&ClientPacket::Ping.to_vec());
    assert_eq!(
        ServerPacket::decode(&b.recv_packet()),
        Ok(ServerPacket::PingResp)
    );

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
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana-dashboard.json"
    ))
    .expect("deploy/grafana-dashboard.json");
    let names = dashboard_metrics(&dashboard);
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

/// The `im_*` metric names in the dashboard's queries.
fn dashboard_metrics(json: &str) -> std::collections::BTreeSet<String> {
    let v: Value = serde_json::from_str(json).expect("dashboard JSON");
    let mut out = std::collections::BTreeSet::new();
    for panel in v["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            let mut rest = t["expr"].as_str().expect("expr");
            while let Some(i) = rest.find("im_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                out.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    out
}

/// Sends `head` + `body` on a fresh connection (`Connection: close`) and reads the whole
/// reply: (status, headers, body parsed as JSON). The body is written from another thread
/// so a server that answers before reading all of it cannot deadlock the test.
fn raw_http(srv: &Server, head: String, body: Vec<u8>) -> (u16, String, Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.http_port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(head.as_bytes());
        let _ = w.write_all(&body);
    });
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&reply).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").expect("a complete HTTP reply");
    let status = headers
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let json = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {headers}\n\n{body}"));
    (status, headers.to_ascii_lowercase(), json)
}

fn request(method: &str, path: &str, extra: &str, body_len: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ntoken: {ADMIN}\r\nconnection: close\r\n\
         content-length: {body_len}\r\n{extra}\r\n"
    )
}

/// Errors axum produces by itself (bad path parameters, wrong method, oversized or
/// non-JSON bodies, unknown paths) come in the OpenIM shape with a seed-004 code and the
/// right HTTP status, like the handlers' own errors.
fn errors_no_handler_wrote_have_the_openim_shape() {
    let srv = start();
    let shape = |status: u16, v: &Value, want_status: u16, want_code: u64, what: &str| {
        assert_eq!(status, want_status, "{what}: {v}");
        assert_eq!(v["errCode"], want_code, "{what}: {v}");
        assert!(
            v["errMsg"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {v}"
        );
        assert_eq!(v["errDlt"], "", "{what}: {v}");
        assert!(v.get("data").is_some(), "{what}: {v}");
    };
    for path in [
        "/users/-1/online",
        "/users/abc/online",
        "/users/4294967296/online",
        "/users/18446744073709551616/online",
        "/groups/abc",
        "/groups/4294967296",
        "/groups/-5",
    ] {
        let (status, v) = call(&srv, "GET", path, None, Some(ADMIN));
        shape(status, &v, 400, 1001, path);
    }
    // Wrong method: 405 with its `allow` header kept.
    let (status, headers, v) = raw_http(&srv, request("PUT", "/groups", "", 0), vec![]);
    shape(status, &v, 405, 1001, "PUT /groups");
    assert!(headers.contains("allow:"), "{headers}");
    assert!(
        headers.contains("content-type: application/json"),
        "{headers}"
    );
    // A body over the 2 MiB limit: 413, not 400.
    let big = vec![b' '; 3 << 20];
    let (status, _, v) = raw_http(
        &srv,
        request(
            "POST",
            "/groups",
            "content-type: application/json\r\n",
            big.len(),
        ),
        big,
    );
    shape(status, &v, 413, 1001, "oversized body");
    // Not JSON at all, and no content type.
    let (status, _, v) = raw_http(
        &srv,
        request("POST", "/groups", "content-type: application/json\r\n", 5),
        b"{nope".to_vec(),
    );
    shape(status, &v, 400, 1001, "malformed JSON");
    let (status, _, v) = raw_http(&srv, request("POST", "/groups", "", 2), b"{}".to_vec());
    shape(status, &v, 415, 1001, "no content type");
    // Unknown path and missing secret, as before.
    let (status, v) = call(&srv, "GET", "/nope", None, Some(ADMIN));
    shape(status, &v, 404, 1004, "/nope");
    let (status, v) = call(&srv, "GET", "/groups", None, None);
    shape(status, &v, 401, 1002, "no secret");
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

under_both_drivers!(
    token_from_the_api_logs_in,
    admin_endpoints_need_the_secret,
    server_side_send_reaches_online_offline_and_groups,
    group_endpoints_change_who_receives,
    online_lists_sessions_and_transports,
    metrics_match_the_traffic,
    errors_no_handler_wrote_have_the_openim_shape,
    process_metrics_and_build_info,
);
