//! The ScyllaDB offline backend (`storage.backend = "scylla"`) end to end: the real server
//! binary against the in-process CQL test server (kassandra; see
//! `im_storage::scylla::test_server` for what it can be trusted with). A real ScyllaDB
//! cannot be installed on the development machine; `storage/tests/contract_scylla.rs` runs
//! the contract against one when `SCYLLA_URI` is set.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{content, msg_id, Driver, Kind, Server};
use im_storage::scylla::test_server::CqlTestServer;

fn scylla_env(contact: &str) -> Vec<(&'static str, String)> {
    vec![
        ("IMSERVER_STORAGE__BACKEND", "scylla".into()),
        (
            "IMSERVER_SCYLLA__CONTACT_POINTS",
            format!("[\"{contact}\"]"),
        ),
        (
            "IMSERVER_SCYLLA__REPLICATION_STRATEGY",
            "SimpleStrategy".into(),
        ),
        ("IMSERVER_SCYLLA__CONSISTENCY", "one".into()),
        ("IMSERVER_SCYLLA__RECONNECT_INTERVAL_MS", "200".into()),
        ("IMSERVER_SCYLLA__CONNECT_TIMEOUT_MS", "2000".into()),
        // The driver warns about every table of the test server's system keyspaces.
        ("RUST_LOG", "warn,scylla=error".into()),
    ]
}

fn start(driver: Driver, env: &[(&'static str, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start(driver, &env)
}

fn http_get(srv: &Server, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut r = agent
        .get(&format!("http://127.0.0.1:{}{path}", srv.http_port))
        .call()
        .expect("http request");
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().expect("body"))
}

fn write_failures(srv: &Server) -> f64 {
    let (_, text) = http_get(srv, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("im_storage_write_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no im_storage_write_failures_total in:\n{text}"))
}

#[test]
fn offline_messages_go_through_scylla_and_survive_a_restart() {
    for driver in [Driver::IoUring, Driver::Epoll] {
        let cql = CqlTestServer::start().expect("CQL test server");
        let mut env = scylla_env(&cql.addr().to_string());
        env.push(("IMSERVER_DELIVERY__PERSIST", "before_ack".into()));
        let mut srv = start(driver, &env);
        let mut a = srv.connect(1, Kind::Tcp);
        for i in 0..200u64 {
            a.publish_acked(2, &msg_id(i), format!("m{i}").as_bytes());
        }
        drop(a);
        // The server goes; the CQL server (the "cluster") keeps the data.
        srv.restart();
        let mut b = srv.connect(2, Kind::Ws);
        for i in 0..100u64 {
            let (id, payload) = b.recv_push_ack();
            assert_eq!((id, content(&payload)), (msg_id(i), format!("m{i}")));
        }
        // Let the acks land before the session goes.
        std::thread::sleep(Duration::from_millis(300));
        drop(b);
        // Acked messages are behind the cursor: a new session gets exactly the rest.
        let mut b = srv.connect(2, Kind::Tcp);
        for i in 100..200u64 {
            let (id, payload) = b.recv_push_ack();
            assert_eq!((id, content(&payload)), (msg_id(i), format!("m{i}")));
        }
        b.expect_silence(Duration::from_millis(300));
    }
}

#[test]
fn unreachable_scylla_keeps_online_traffic_and_shows_in_readyz_and_metrics() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr")
    };
    let srv = start(Driver::IoUring, &scylla_env(&port.to_string()));
    let (status, body) = http_get(&srv, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("ScyllaDB unreachable"), "{body}");

    // Online 1:1 traffic is served.
    let mut a = srv.connect(1, Kind::Tcp);
    let mut b = srv.connect(2, Kind::Ws);
    a.publish_acked(2, &msg_id(1), b"online");
    assert_eq!(content(&b.recv_push_ack().1), "online");

    // A message for an offline user cannot be stored: counted as a storage failure.
    let before = write_failures(&srv);
    a.publish_acked(3, &msg_id(2), b"for later");
    let t = Instant::now();
    while write_failures(&srv) <= before {
        assert!(t.elapsed() < Duration::from_secs(10), "no failure counted");
        std::thread::sleep(Duration::from_millis(50));
    }

    // ScyllaDB comes up: the store reconnects, /readyz turns ready, offline works.
    let _cql = CqlTestServer::start_at(port).expect("CQL test server on the same port");
    let t = Instant::now();
    loop {
        let (status, body) = http_get(&srv, "/readyz");
        if status == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "never ready: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    a.publish_acked(4, &msg_id(3), b"stored now");
    std::thread::sleep(Duration::from_millis(200));
    let mut d = srv.connect(4, Kind::Tcp);
    assert_eq!(content(&d.recv_push_ack().1), "stored now");
}
