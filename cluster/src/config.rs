//! The `[cluster]` section and what a node tells the others about itself.

use serde::{Deserialize, Serialize};

/// `[cluster]`: off by default (one node, nothing external).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    pub enabled: bool,
    /// Unique in the cluster: letters, digits, `-`, `_`, at most 64. A second node starting
    /// with an id that holds a live lease is refused.
    pub node_id: String,
    /// The host clients (and other nodes, for relaying) use to reach this node. The ports
    /// are the node's own `net.tcp_port`, `net.ws_port`, `tls.wss_port` and `tls.tcp_port`
    /// unless set below (a port mapped by NAT or a container runtime).
    pub advertise_host: String,
    pub advertise_tcp_port: Option<u16>,
    pub advertise_ws_port: Option<u16>,
    pub advertise_wss_port: Option<u16>,
    pub advertise_tls_tcp_port: Option<u16>,
    /// A node whose lease is not renewed for this long is dead; it is renewed every third.
    pub lease_ms: u64,
    /// Messages queued for other nodes before the shards store further ones offline.
    pub outbox_capacity: usize,
    /// This node's share of the users relative to the others' (1 to 10,000): a node with
    /// twice the cores and memory of the others takes weight 2 and is home to twice as
    /// many users. Changing it moves users (their sessions reconnect).
    pub weight: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            node_id: String::new(),
            advertise_host: "127.0.0.1".into(),
            advertise_tcp_port: None,
            advertise_ws_port: None,
            advertise_wss_port: None,
            advertise_tls_tcp_port: None,
            lease_ms: 3000,
            outbox_capacity: 65_536,
            weight: 1,
        }
    }
}

impl ClusterConfig {
    /// Checks what does not depend on the rest of the configuration.
    pub fn validate(&self) -> Result<(), String> {
        let id = &self.node_id;
        if id.is_empty() || id.len() > 64 {
            return Err("cluster.node_id must be 1 to 64 characters".into());
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "cluster.node_id {id:?}: only letters, digits, '-' and '_'"
            ));
        }
        if self.advertise_host.is_empty() {
            return Err("cluster.advertise_host must be set".into());
        }
        if self.lease_ms < 300 {
            return Err("cluster.lease_ms must be at least 300".into());
        }
        if !(1..=10_000).contains(&self.weight) {
            return Err("cluster.weight must be 1 to 10000".into());
        }
        if self.outbox_capacity == 0 {
            return Err("cluster.outbox_capacity must be at least 1".into());
        }
        Ok(())
    }
}

/// What a node registers under its lease: where clients reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub host: String,
    pub tcp_port: u16,
    pub ws_port: u16,
    pub ws_path: String,
    /// 0 when TLS is off.
    pub wss_port: u16,
    pub wss_path: String,
    pub tls_tcp_port: u16,
    /// `cluster.weight` (1 when a node did not say).
    #[serde(default = "one")]
    pub weight: u32,
    /// A random value of this process: tells a node's own lease from another process
    /// that registered the same id.
    pub instance: String,
}

fn one() -> u32 {
    1
}

impl NodeInfo {
    /// The plain TCP address other nodes relay clients to.
    pub fn relay_addr(&self) -> Option<std::net::SocketAddr> {
        use std::net::ToSocketAddrs;
        (self.host.as_str(), self.tcp_port)
            .to_socket_addrs()
            .ok()?
            .next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_outside_1_to_10000_are_refused_and_an_absent_weight_reads_as_1() {
        let mut c = ClusterConfig {
            node_id: "n1".into(),
            ..Default::default()
        };
        assert_eq!(c.validate(), Ok(()));
        for (w, ok) in [(0, false), (1, true), (10_000, true), (10_001, false)] {
            c.weight = w;
            assert_eq!(c.validate().is_ok(), ok, "weight {w}");
        }
        let old = r#"{"id":"n1","host":"h","tcp_port":1,"ws_port":2,"ws_path":"/ws","wss_port":0,
            "wss_path":"/wss","tls_tcp_port":0,"instance":"x"}"#;
        let info: NodeInfo =
            serde_json::from_str(old).expect("a node that does not say its weight");
        assert_eq!(info.weight, 1);
    }
}
