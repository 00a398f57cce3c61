//! Three nodes sharing one `redis-server` (started by the test) on this machine, distinct
//! ports and data directories: homes agree, 1:1 messages cross nodes both ways over TCP,
//! WebSocket, wss and TCP+TLS, a client connected to a node that is not its home is relayed
//! there, group and part-group fan-out reach members homed on other nodes, a server-side
//! send through another node's API arrives, an offline message is drained after logging in
//! on a different node, forged or repeated inbox entries are handled, every duplicate-login
//! policy holds across nodes, a node whose lease lapsed leaves the live set. Refusals: a
//! second node with a live node's id, and cluster mode without shared stores. Failures
//! (losing a node, Redis going away, a node cut off) are in `e2e_cluster_failures.rs`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::client::Kind;
use common::cluster::*;
use common::{content, msg_id, Server};
use im_testkit::RedisServer;

/// `XADD key * b <body>` in database 1 over a plain socket (the body is binary).
fn xadd_raw(port: u16, key: &str, body: &[u8]) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("redis");
    let mut cmd = b"*2\r\n$6\r\nSELECT\r\n$1\r\n1\r\n".to_vec();
    cmd.extend_from_slice(
        format!(
            "*5\r\n$4\r\nXADD\r\n${}\r\n{key}\r\n$1\r\n*\r\n$1\r\nb\r\n${}\r\n",
            key.len(),
            body.len()
        )
        .as_bytes(),
    );
    cmd.extend_from_slice(body);
    cmd.extend_from_slice(b"\r\n");
    c.write_all(&cmd).expect("write");
    c.set_read_timeout(Some(2 * S)).expect("timeout");
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    // "+OK" for SELECT, then the new entry's id.
    while got.iter().filter(|b| **b == b'\n').count() < 3 {
        let n = c.read(&mut buf).expect("redis answers");
        assert!(n > 0, "redis closed");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"+OK\r\n$"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn three_nodes_deliver_across_nodes() {
    let redis = RedisServer::start();
    let nodes = [
        start_node(&redis, "n1"),
        start_node(&redis, "n2"),
        start_node(&redis, "n3"),
    ];
    wait_live(&[&nodes[0], &nodes[1], &nodes[2]], 3);
    // Every node gives the same home for a user; find users homed on each node.
    let mut by_home: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
    for uid in 1..60u32 {
        let h = home(&nodes[0], uid);
        assert_eq!(
            h,
            home(&nodes[2], uid),
            "nodes disagree on uid {uid}'s home"
        );
        by_home.entry(h).or_default().push(uid);
    }
    let idx = |id: &str| {
        ["n1", "n2", "n3"]
            .iter()
            .position(|n| *n == id)
            .expect("node")
    };
    assert_eq!(
        by_home.len(),
        3,
        "59 users all homed on fewer than 3 nodes: {by_home:?}"
    );
    let (a, b, c) = (by_home["n1"][0], by_home["n2"][0], by_home["n3"][0]);
    let (n1, n2, n3) = (&nodes[idx("n1")], &nodes[idx("n2")], &nodes[idx("n3")]);

    // Direct logins on the home nodes, 1:1 both ways across nodes, TCP and WebSocket.
    let mut ca = n1.connect(a, Kind::Tcp);
    let mut cb = n2.connect(b, Kind::Ws);
    ca.publish_acked(b, &msg_id(1), b"a->b");
    assert_eq!(content(&cb.recv_push_ack().1), "a->b");
    cb.publish_acked(a, &msg_id(2), b"b->a");
    assert_eq!(content(&ca.recv_push_ack().1), "b->a");

    // c logs in on n1, not its home (n3): relayed; messages reach it both ways.
    let mut cc = n1.connect(c, Kind::Ws);
    ca.publish_acked(c, &msg_id(3), b"a->c");
    assert_eq!(content(&cc.recv_push_ack().1), "a->c");
    cc.publish_acked(b, &msg_id(4), b"c->b");
    assert_eq!(content(&cb.recv_push_ack().1), "c->b");

    // A server-side send through n3's API to a (home n1).
    let body = format!(r#"{{"to":{a},"content":"from the api"}}"#);
    let (status, v) = post(n3, "/msg/send", &body);
    assert_eq!(status, 200, "{v}");
    assert!(content(&ca.recv_push_ack().1).contains("from the api"));

    // A group with members homed on all three nodes.
    let body = format!(r#"{{"uids":[{a},{b},{c}]}}"#);
    let (status, v) = post(n2, "/groups/77/members", &body);
    assert_eq!(status, 200, "{v}");
    ca.group_publish(77, &msg_id(5), b"to all");
    ca.expect_group_ack(false, &msg_id(5));
    for cl in [&mut cb, &mut cc] {
        let p = cl.recv_group_push(true);
        assert_eq!((p.group, content(&p.payload)), (77, "to all".to_string()));
    }

    // b goes away; a message for it is stored; b logs in on n3 (relayed to n2) and gets it.
    drop(cb);
    std::thread::sleep(Duration::from_millis(300));
    ca.publish_acked(b, &msg_id(6), b"while away");
    let mut cb = n3.connect(b, Kind::Tcp);
    assert_eq!(content(&cb.recv_push_ack().1), "while away");

    // The relay counter and the per-peer counters moved.
    let (_, text) = n1.http_get("/metrics");
    assert!(
        text.contains("im_cluster_forwarded_total{node=\"n2\"}"),
        "{text}"
    );
    // Every metric the dashboard's cluster row queries is in a cluster node's scrape.
    let names = common::dashboard_metrics(|title| title.starts_with("Cluster"));
    assert!(names.len() >= 6, "{names:?}");
    for name in names {
        let base = name.strip_suffix("_bucket").unwrap_or(&name);
        assert!(
            text.contains(&format!("\n{base}")),
            "the dashboard queries {name}, which /metrics does not have"
        );
    }
    // c logged in on n1 (home n3): one relayed login there.
    assert!(text.contains("im_relayed_logins_total 1\n"), "{text}");
    assert!(
        text.contains("im_cluster_corrupt_entries_total 0\n"),
        "{text}"
    );

    // A forged entry in n1's inbox is refused and counted; n1 goes on serving.
    redis.cli(1, &["XADD", "im_inbox:n1", "*", "b", "not an entry"]);
    redis.cli(1, &["XADD", "im_inbox:n1", "*", "x", "no body"]);
    let t = Instant::now();
    while !n1
        .http_get("/metrics")
        .1
        .contains("im_cluster_corrupt_entries_total 2\n")
    {
        assert!(t.elapsed() < 5 * S, "forged entries not counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    cb.publish_acked(a, &msg_id(8), b"still served");
    assert_eq!(content(&ca.recv_push_ack().1), "still served");

    // An entry appended twice (a sender's retry after its reply was lost) is handed on once.
    let push = im_protocol::ServerPacket::Push {
        msg_id: &msg_id(9),
        payload: b"appended twice",
    }
    .to_vec();
    let record = im_cluster::wire::Record {
        sent_ms: 0,
        f: im_shards::Forward::One(im_shards::engine::Delivery {
            to: a,
            accepted: im_shards::engine::Time(0),
            frame: push.into(),
            seq: None,
            hops: 1,
        }),
    };
    let sender = im_cluster::wire::Sender {
        instance: 77,
        seq: 1,
    };
    let entry = im_cluster::wire::encode("n2", sender, &[record]);
    xadd_raw(redis.port, "im_inbox:n1", &entry);
    xadd_raw(redis.port, "im_inbox:n1", &entry);
    // (a frame made here: the payload as written, no envelope)
    assert_eq!(ca.recv_push_ack().1, b"appended twice");
    ca.expect_silence(Duration::from_millis(500));
    assert!(n1
        .http_get("/metrics")
        .1
        .contains("im_cluster_duplicate_entries_total 1\n"));

    // kill -9 of n3: the others see it gone within a lease.
    let pid = n3.pid();
    // SAFETY: kill(2) on the child process this test started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    wait_live(&[n1, n2], 2);
    // c's home is now n1 or n2; it logs in again and is served.
    let mut cc = n2.connect(c, Kind::Tcp);
    ca.publish_acked(c, &msg_id(7), b"after the death");
    assert_eq!(content(&cc.recv_push_ack().1), "after the death");
    // b was relayed through n3: its connection died with n3 (it reconnects elsewhere).
    cb.expect_closed(5 * S);
}

/// `imserver` with `env`, expected to exit (refused) within 10 s; returns its output.
fn refused(env: &[(String, String)]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_imserver"))
        .args([
            "--config",
            "/dev/null",
            "--shards",
            "1",
            "--bind",
            "127.0.0.1",
        ])
        .args(["--tcp-port", "0", "--ws-port", "0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("IMSERVER_CONTROL__ENABLED", "false")
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(a, b)| (a.as_str(), b.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn imserver");
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success(), "the node was not refused");
            let out = child.wait_with_output().expect("output");
            return String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
        }
        if t.elapsed() > 10 * S {
            let _ = child.kill();
            panic!("the node started instead of being refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn refusals_at_start() {
    let redis = RedisServer::start();
    let _n1 = start_node(&redis, "dup");
    let out = refused(&node_env(&redis, "dup"));
    assert!(out.contains("is held by a live node"), "{out}");

    let mut env = node_env(&redis, "x");
    env.retain(|(k, _)| k != "IMSERVER_STORAGE__BACKEND");
    let out = refused(&env);
    assert!(out.contains("storage.backend"), "{out}");

    let mut env = node_env(&redis, "y");
    env.retain(|(k, _)| k != "IMSERVER_GROUPS__BACKEND");
    let out = refused(&env);
    assert!(out.contains("groups.backend"), "{out}");

    let mut env = node_env(&redis, "bad id!");
    env.push(("IMSERVER_CLUSTER__NODE_ID".into(), "bad id!".into()));
    let out = refused(&env);
    assert!(out.contains("node_id"), "{out}");
}

/// Every duplicate-login policy holds across nodes: a user's sessions all live on its home,
/// wherever the client connected.
#[test]
fn duplicate_login_policies_across_nodes() {
    let redis = RedisServer::start();
    {
        let [n1, n2, n3] = three(&redis, &[]);
        let u = homed_on(&n1, "n1", 0);
        // kick_old (default): a second login on another node logs the first out.
        let mut first = n2.connect(u, Kind::Tcp);
        let mut second = n3.connect(u, Kind::Ws);
        assert_eq!(
            first.expect_closed(5 * S),
            vec![vec![20]],
            "LOGOUT then close"
        );
        let mut other = n1.connect(homed_on(&n1, "n2", u), Kind::Tcp);
        other.publish_acked(u, &msg_id(1), b"to the new one");
        assert_eq!(content(&second.recv_push_ack().1), "to the new one");
    }
    {
        let [n1, n2, n3] = three(&redis, &[("IMSERVER_SESSION__DUPLICATE_LOGIN", "reject")]);
        let u = homed_on(&n1, "n3", 300);
        let mut first = n1.connect(u, Kind::Tcp);
        let mut second = common::client::Client::raw(&n2, Kind::Tcp);
        second.send(&common::client::connect_packet(
            &u.to_string(),
            &common::token(u),
            None,
        ));
        assert_eq!(
            second.recv_packet(),
            vec![2, 1],
            "refused: a session exists on another node"
        );
        second.expect_closed(5 * S);
        first.expect_silence(Duration::from_millis(200));
        drop(n3);
    }
    {
        let [n1, n2, n3] = three(
            &redis,
            &[
                ("IMSERVER_SESSION__DUPLICATE_LOGIN", "multi"),
                ("IMSERVER_SESSION__MAX_DEVICES", "2"),
            ],
        );
        let u = homed_on(&n1, "n2", 600);
        // Three devices on three nodes: the oldest is logged out (two allowed cluster-wide).
        let mut d1 = n1.connect(u, Kind::Tcp);
        let mut d2 = n2.connect(u, Kind::Ws);
        let mut d3 = n3.connect(u, Kind::Tcp);
        assert_eq!(d1.expect_closed(5 * S), vec![vec![20]]);
        let mut other = n3.connect(homed_on(&n1, "n3", u), Kind::Tcp);
        other.publish_acked(u, &msg_id(2), b"both devices");
        assert_eq!(content(&d2.recv_push_ack().1), "both devices");
        assert_eq!(content(&d3.recv_push_ack().1), "both devices");
    }
}

/// TLS clients (wss and TCP+TLS) across nodes, one relayed (TLS ends at the node it reached,
/// the hop to its home is plain TCP), and a part-group publish reaching only the listed
/// member homed on another node.
#[test]
fn tls_clients_and_part_publish_across_nodes() {
    let redis = RedisServer::start();
    let start = |id: &str| {
        let env = node_env(&redis, id);
        let refs: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        Server::start_tls(common::driver(), &refs)
    };
    let nodes = [start("n1"), start("n2"), start("n3")];
    let [n1, n2, n3] = &nodes;
    wait_live(&[n1, n2, n3], 3);
    let a = homed_on(n1, "n1", 0);
    let b = homed_on(n1, "n3", 0);
    let c = homed_on(n1, "n2", 0);
    // a over wss through n2 (relayed to n1); b over wss on its home n3; c over TCP+TLS on n1
    // (relayed to n2).
    let mut ca = n2.connect(a, Kind::Wss);
    let mut cb = n3.connect(b, Kind::Wss);
    let mut cc = n1.connect(c, Kind::TcpTls);
    ca.publish_acked(b, &msg_id(1), b"a->b over wss");
    assert_eq!(content(&cb.recv_push_ack().1), "a->b over wss");
    cb.publish_acked(c, &msg_id(2), b"b->c over tls");
    assert_eq!(content(&cc.recv_push_ack().1), "b->c over tls");
    cc.publish_acked(a, &msg_id(3), b"c->a");
    assert_eq!(content(&ca.recv_push_ack().1), "c->a");
    // Group 88 = {a, b, c}; a part publish to b only.
    let body = format!(r#"{{"uids":[{a},{b},{c}]}}"#);
    let (status, v) = post(n3, "/groups/88/members", &body);
    assert_eq!(status, 200, "{v}");
    ca.group_part_publish(88, &msg_id(4), &[b], b"only b");
    ca.expect_group_ack(true, &msg_id(4));
    let p = cb.recv_group_push(true);
    assert!(
        p.part && p.group == 88 && content(&p.payload) == "only b",
        "{p:?}"
    );
    cc.expect_silence(Duration::from_millis(300));
}
