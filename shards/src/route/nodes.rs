//! Which node of a cluster is a user's home, and the port through which shards hand
//! messages to other nodes.
//!
//! In a cluster every user has one **home node**, chosen by rendezvous (highest random
//! weight) hashing of the uid over the live nodes: every node computes the same answer from
//! the same live set, no table is stored anywhere, and when a node joins or leaves only the
//! users whose home it is (or becomes) move. A node's `weight` (its capacity: twice the
//! weight, twice the users) scales its share; with equal weights the comparison is on the
//! integer hashes alone. A user's sessions, unacked pushes, dedupe
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
    /// Its share of users relative to the others' (`cluster.weight`, at least 1).
    weight: u32,
}

impl Node {
    pub fn new(id: &str, relay: SocketAddr) -> Node {
        Node {
            id: Arc::from(id),
            relay,
            seed: fnv1a(id.as_bytes()),
            weight: 1,
        }
    }

    /// The same node with `weight` (0 counts as 1).
    pub fn with_weight(mut self, weight: u32) -> Node {
        self.weight = weight.max(1);
        self
    }
}

/// The live nodes as this process sees them, and which one it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMap {
    /// Sorted by id.
    nodes: Vec<Node>,
    me: usize,
    /// Every node has the same weight: homes compare the integer hashes.
    equal: bool,
}

impl NodeMap {
    /// `None` when `me` is not among `nodes` (a node always counts itself live).
    pub fn new(me: &str, mut nodes: Vec<Node>) -> Option<NodeMap> {
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes.dedup_by(|a, b| a.id == b.id);
        let me = nodes.iter().position(|n| &*n.id == me)?;
        let equal = nodes.windows(2).all(|w| w[0].weight == w[1].weight);
        Some(NodeMap { nodes, me, equal })
    }

    /// The home node of `uid`: the node with the highest score, `h = mix(seed(node) ^ uid)`
    /// itself when the weights are equal, else `-weight / ln(h / 2^64)` (weighted
    /// rendezvous hashing: a node's share is its weight over the sum).
    pub fn home(&self, uid: u32) -> &Node {
        &self.nodes[self.home_index(uid)]
    }

    fn home_index(&self, uid: u32) -> usize {
        if self.equal {
            let mut best = (0u64, 0usize);
            for (i, n) in self.nodes.iter().enumerate() {
                let h = mix(n.seed ^ u64::from(uid));
                if i == 0 || h > best.0 {
                    best = (h, i);
                }
            }
            return best.1;
        }
        let mut best = (f64::NEG_INFINITY, 0usize);
        for (i, n) in self.nodes.iter().enumerate() {
            let h = mix(n.seed ^ u64::from(uid));
            // In (0, 1): the top 53 bits, offset by half a step.
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = -f64::from(n.weight) / u.ln();
            if score > best.0 {
                best = (score, i);
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
    fn a_heavier_node_gets_its_share_and_equal_weights_change_nothing() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let weighted = |ws: [u32; 3]| {
            let nodes = ["a", "b", "c"]
                .iter()
                .zip(ws)
                .map(|(id, w)| Node::new(id, addr).with_weight(w))
                .collect();
            NodeMap::new("a", nodes).expect("a is live")
        };
        let (plain, same, heavy) = (
            map("a", &["a", "b", "c"]),
            weighted([7; 3]),
            weighted([1, 2, 1]),
        );
        let mut counts = [0usize; 3];
        for uid in 0..40_000 {
            assert_eq!(plain.home(uid).id, same.home(uid).id);
            counts[heavy.home_index(uid)] += 1;
        }
        assert!((9_000..11_000).contains(&counts[0]), "{counts:?}");
        assert!((19_000..21_000).contains(&counts[1]), "{counts:?}");
        assert!((9_000..11_000).contains(&counts[2]), "{counts:?}");
        // Weighted, too, only the leaving node's users move.
        let two = NodeMap::new(
            "a",
            vec![Node::new("a", addr), Node::new("b", addr).with_weight(2)],
        )
        .expect("a is live");
        for uid in 0..10_000 {
            let before = &heavy.home(uid).id;
            if &**before != "c" {
                assert_eq!(before, &two.home(uid).id, "uid {uid} moved");
            }
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
