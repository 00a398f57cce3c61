//! The engine in a cluster (`route::nodes`): a message for a user whose home is another
//! node is forwarded there instead of being delivered or stored here, a group batch sends
//! one batch per home node, and when the live set changes the sessions of users whose home
//! moved away are closed (their clients reconnect and are relayed to the new home). When
//! the other nodes counted this one dead for a while, every session here is closed: what
//! they sent its users meanwhile waits in the offline store, collected at the next login.

use std::sync::Arc;

use super::{Action, Batch, CloseReason, ConnId, Delivery, Engine, Forward, Uids, MAX_HOPS};
use crate::route::nodes::NodeMap;
use crate::stats::Msg;

/// Members of one batch going to one node: (node, uids, stored-copy seqs).
pub(super) type Remote = Vec<(Arc<str>, Vec<u32>, Option<Vec<u64>>)>;

impl Engine {
    pub(super) fn set_nodes(&mut self, map: Arc<NodeMap>) {
        let moved: Vec<ConnId> = self
            .sessions
            .iter()
            .filter(|(_, s)| map.remote_home(s.uid).is_some())
            .map(|(c, _)| *c)
            .collect();
        self.nodes = Some(map);
        for c in moved {
            self.close(c, CloseReason::Rehomed);
        }
    }

    /// The other nodes counted this node dead for a while (its lease lapsed) and stored
    /// what they had for its users offline: every session is closed with DISCONNECT, so
    /// its client logs in again and the login drain collects those messages.
    pub(super) fn evicted(&mut self) {
        let all: Vec<ConnId> = self.sessions.keys().copied().collect();
        for c in all {
            self.close(c, CloseReason::Rehomed);
        }
    }

    /// Forwards `d` to its recipient's home when that is another node (and it has not
    /// travelled [`MAX_HOPS`] already); otherwise gives it back to be delivered here.
    pub(super) fn forward_if_remote(&mut self, mut d: Delivery) -> Option<Delivery> {
        let Some(node) = self.remote_node(d.to, d.hops) else {
            return Some(d);
        };
        d.hops += 1;
        self.stats.message(Msg::Forwarded, 1);
        self.out.push(Action::Forward {
            node,
            f: Forward::One(d),
        });
        None
    }

    /// The cluster's live set as this engine knows it (`None` outside a cluster).
    pub fn nodes(&self) -> Option<&Arc<NodeMap>> {
        self.nodes.as_ref()
    }

    /// The home of `uid` when a message that travelled `hops` times goes on there.
    pub(super) fn remote_node(&self, uid: u32, hops: u8) -> Option<Arc<str>> {
        if hops >= MAX_HOPS {
            return None;
        }
        let map = self.nodes.as_ref()?;
        map.remote_home(uid).map(|n| n.id.clone())
    }

    /// Adds a member of `b` to the batch for its home node.
    pub(super) fn add_remote(remote: &mut Remote, node: Arc<str>, uid: u32, seq: Option<u64>) {
        let i = match remote.iter().position(|(n, ..)| *n == node) {
            Some(i) => i,
            None => {
                remote.push((node, Vec::new(), None));
                remote.len() - 1
            }
        };
        let (_, uids, seqs) = &mut remote[i];
        uids.push(uid);
        if let Some(s) = seq {
            seqs.get_or_insert_with(Vec::new).push(s);
        }
    }

    /// Sends each node its part of `b`.
    pub(super) fn forward_batches(&mut self, b: &Batch, remote: Remote) {
        for (node, uids, seqs) in remote {
            self.stats.message(Msg::Forwarded, uids.len() as u64);
            // Stored copies exist for all members or for none.
            let seqs = seqs.filter(|s| s.len() == uids.len());
            self.out.push(Action::Forward {
                node,
                f: Forward::Group(Batch {
                    accepted: b.accepted,
                    frame: b.frame.clone(),
                    uids: Uids::Owned(uids),
                    seqs,
                    exclude: b.exclude,
                    hops: b.hops + 1,
                }),
            });
        }
    }
}
