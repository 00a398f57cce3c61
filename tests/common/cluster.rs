//! Three clustered nodes sharing one `redis-server` on this machine, for the cluster tests
//! (`e2e_cluster.rs`, `e2e_cluster_failures.rs`): node settings, start-up, homes, the HTTP
//! API, and waiting for the live set.

use std::time::{Duration, Instant};

use im_testkit::RedisServer;

use super::{Server, ADMIN};

pub const S: Duration = Duration::from_secs(1);

pub fn node_env(redis: &RedisServer, id: &str) -> Vec<(String, String)> {
    node_env_on(redis.port, id)
}

/// A node's settings with Redis at `port` (the test's server, or a link in front of it).
pub fn node_env_on(redis_port: u16, id: &str) -> Vec<(String, String)> {
    vec![
        ("IMSERVER_STORAGE__BACKEND".into(), "redis".into()),
        ("IMSERVER_GROUPS__BACKEND".into(), "redis".into()),
        ("IMSERVER_REDIS__PORT".into(), redis_port.to_string()),
        ("IMSERVER_CLUSTER__ENABLED".into(), "true".into()),
        ("IMSERVER_CLUSTER__NODE_ID".into(), id.into()),
        ("IMSERVER_CLUSTER__LEASE_MS".into(), "900".into()),
    ]
}

pub fn start_node(redis: &RedisServer, id: &str) -> Server {
    start_node_with(redis, id, &[])
}

pub fn start_node_with(redis: &RedisServer, id: &str, extra: &[(&str, &str)]) -> Server {
    start_node_on(redis.port, id, extra)
}

pub fn start_node_on(redis_port: u16, id: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = node_env_on(redis_port, id);
    env.extend(extra.iter().map(|(a, b)| (a.to_string(), b.to_string())));
    let refs: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    Server::start(super::driver(), &refs)
}

/// Three nodes n1, n2, n3 with `extra` settings, once all of them see each other.
pub fn three(redis: &RedisServer, extra: &[(&str, &str)]) -> [Server; 3] {
    let nodes = [
        start_node_with(redis, "n1", extra),
        start_node_with(redis, "n2", extra),
        start_node_with(redis, "n3", extra),
    ];
    wait_live(&[&nodes[0], &nodes[1], &nodes[2]], 3);
    nodes
}

/// A user homed on node `id` (asked of node `srv`).
pub fn homed_on(srv: &Server, id: &str, skip: u32) -> u32 {
    (skip + 1..skip + 200)
        .find(|u| home(srv, *u) == id)
        .unwrap_or_else(|| panic!("no user homed on {id}"))
}

pub fn post(srv: &Server, path: &str, body: &str) -> (u16, serde_json::Value) {
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
pub fn home(srv: &Server, uid: u32) -> String {
    let body = format!(r#"{{"secret":"{ADMIN}","platform":1,"uid":{uid}}}"#);
    let (status, v) = post(srv, "/auth/user_token", &body);
    assert_eq!(status, 200, "{v}");
    v["data"]["node"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no node in {v}"))
        .to_owned()
}

/// Waits until every node sees `n` live nodes (metric `im_cluster_live_nodes`).
pub fn wait_live(nodes: &[&Server], n: usize) {
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
