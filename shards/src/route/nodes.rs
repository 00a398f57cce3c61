//! Which node of a cluster is a user's home, and the port through which shards hand
//! messages to other nodes.
//!
//! In a cluster every user has one **home node**, chosen by rendezvous (highest random
//! weight) hashing of the uid over the live nodes: every node computes the same answer from
//! the same live set, no table is stored anywhere, and when a node joins or leaves only the
//! users whose home it is (or becomes) move. A user's sessions, unacked pushes, dedupe
//! window and offline drain live on its home node exactly as they live on its owner shard
//! inside one node; a client that connects elsewhere is relayed there (`net::relay`).
//!
//! The shards never talk to Redis: a message for a user whose home is another node becomes
//! a `Forward` handed to the process's `ClusterLink` (`route::link`, implemented by the
//! `im-cluster` crate), which batches it into that node's inbox.

use std::net::SocketAddr;
use std::sync::Arc;

/// A node of the live set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node id (`cluster.node_id`), unique in the cluster.
    pub id: Arc<str>,
    /// Plain TCP address other nodes relay clients to (its advertised host and TCP port).
    pub relay: SocketAddr,
    seed: u64,
}

impl Node {
    pub fn new(id: &str, relay: SocketAddr) -> Node {
        Node {
            id: Arc::from(id),
            relay,
            seed: fnv1a(id.as_bytes()),
        }
    }
}

/// The live nodes as this process sees them, and which one it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMap {
    /// Sorted by id.
    nodes: Vec<Node>,
    me: usize,
}

impl NodeMap {
    /// `None` when `me` is not among `nodes` (a node always counts itself live).
    pub fn new(me: &str, mut nodes: Vec<Node>) -> Option<NodeMap> {
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes.dedup_by(|a, b| a.id == b.id);
        let me = nodes.iter().position(|n| &*n.id == me)?;
        Some(NodeMap { nodes, me })
    }

    /// The home node of `uid`: the node with the highest weight `mix(seed(node) ^ uid)`.
    pub fn home(&self, uid: u32) -> &Node {
        &self.nodes[self.home_index(uid)]
    }

    fn home_index(&self, uid: u32) -> usize {
        let mut best = (0u64, 0usize);
        for (i, n) in self.nodes.iter().enumerate() {
            let w = mix(n.seed ^ u64::from(uid));
            if i == 0 || w > best.0 {
                best = (w, i);
            }
        }
        best.1
    }

    /// The home of `uid` when it is another node.
    pub fn remote_home(&self, uid: u32) -> Option<&Node> {
        let i = self.home_index(uid);
        (i != self.me).then(|| &self.nodes[i])
    }

    pub fn me(&self) -> &Node {
        &self.nodes[self.me]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn get(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| &*n.id == id)
    }
}

/// FNV-1a: a fixed hash of a node id, the same in every build and on every node.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64's finaliser: every input bit affects every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(me: &str, ids: &[&str]) -> NodeMap {
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Node::new(id, SocketAddr::from(([127, 0, 0, 1], 20000 + i as u16))))
            .collect();
        NodeMap::new(me, nodes).expect("me is live")
    }

    #[test]
    fn every_node_agrees_and_homes_spread() {
        let a = map("a", &["a", "b", "c"]);
        let c = map("c", &["c", "a", "b"]);
        let mut counts = [0usize; 3];
        for uid in 0..30_000 {
            assert_eq!(a.home(uid).id, c.home(uid).id);
            counts[a.home_index(uid)] += 1;
        }
        for n in counts {
            assert!((9_000..11_000).contains(&n), "{counts:?}");
        }
    }

    #[test]
    fn only_the_leaving_nodes_users_move() {
        let three = map("a", &["a", "b", "c"]);
        let two = map("a", &["a", "b"]);
        for uid in 0..10_000 {
            let before = &three.home(uid).id;
            if &**before != "c" {
                assert_eq!(before, &two.home(uid).id, "uid {uid} moved");
            }
        }
    }

    #[test]
    fn me_must_be_live() {
        assert!(NodeMap::new("z", vec![Node::new("a", "127.0.0.1:1".parse().unwrap())]).is_none());
        let m = map("b", &["a", "b"]);
        assert_eq!(&*m.me().id, "b");
        assert!((0..100).any(|u| m.remote_home(u).is_some()));
        assert!((0..100).any(|u| m.remote_home(u).is_none()));
    }
}
