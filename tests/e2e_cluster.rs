//! Three nodes sharing one `redis-server` (started by the test) on this machine, distinct
//! ports and data directories: homes agree, 1:1 messages cross nodes both ways over TCP and
//! WebSocket, a client connected to a node that is not its home is relayed there, group
//! fan-out reaches members homed on every node, a server-side send through another node's
//! API arrives, an offline message is drained after logging in on a different node, and a
//! node whose lease lapsed (kill -9) leaves the live set. Refusals: a second node with a
//! live node's id, and cluster mode without shared stores.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::client::Kind;
use common::{content, msg_id, Server, ADMIN};
use im_testkit::RedisServer;

const S: Duration = Duration::from_secs(1);

fn node_env(redis: &RedisServer, id: &str) -> Vec<(String, String)> {
    vec![
        ("IMSERVER_STORAGE__BACKEND".into(), "redis".into()),
        ("IMSERVER_GROUPS__BACKEND".into(), "redis".into()),
        ("IMSERVER_REDIS__PORT".into(), redis.port.to_string()),
        ("IMSERVER_CLUSTER__ENABLED".into(), "true".into()),
        ("IMSERVER_CLUSTER__NODE_ID".into(), id.into()),
        ("IMSERVER_CLUSTER__LEASE_MS".into(), "900".into()),
    ]
}

fn start_node(redis: &RedisServer, id: &str) -> Server {
    let env = node_env(redis, id);
    let refs: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    Server::start(common::driver(), &refs)
}

fn post(srv: &Server, path: &str, body: &str) -> (u16, serde_json::Value) {
    let url = format!("http://127.0.0.1:{}{path}", srv.http_port);
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut resp = agent
        .post(&url)
        .header("token", ADMIN)
        .content_type("application/json")
        .send(body)
        .expect("HTTP POST");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or_default())
}

/// The home node id of `uid` as node `srv` answers it.
fn home(srv: &Server, uid: u32) -> String {
    let body = format!(r#"{{"secret":"{ADMIN}","platform":1,"uid":{uid}}}"#);
    let (status, v) = post(srv, "/auth/user_token", &body);
    assert_eq!(status, 200, "{v}");
    v["data"]["node"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no node in {v}"))
        .to_owned()
}

/// Waits until every node sees `n` live nodes (metric `im_cluster_live_nodes`).
fn wait_live(nodes: &[&Server], n: usize) {
    let t = Instant::now();
    for srv in nodes {
        loop {
            let (_, text) = srv.http_get("/metrics");
            if text.contains(&format!("im_cluster_live_nodes {n}\n")) {
                break;
            }
            assert!(t.elapsed() < 15 * S, "live set never reached {n} nodes");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
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
