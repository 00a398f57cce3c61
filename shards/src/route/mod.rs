//! Between shards: who owns a user ([`routing::owner_of`]), the mesh of bounded lock-free
//! mailboxes ([`mailbox::Mesh`]), and what shards mail each other ([`Mail`]).

pub mod link;
pub mod mailbox;
pub mod nodes;
pub mod routing;

use std::sync::Arc;

use futures_channel::oneshot;

use crate::engine::requests::{ControlError, SessionInfo, SystemMessage};
use crate::engine::{Batch, Delivery};
use crate::net::handoff::Handoff;
use crate::route::nodes::NodeMap;

/// What shards send each other.
pub(crate) enum Mail {
    /// A message for a user this shard owns.
    Deliver(Delivery),
    /// An authenticated connection for a user this shard owns.
    Handoff(Handoff),
    /// A group message for the members this shard owns.
    Fanout(Batch),
    /// A request from the control plane.
    Control(Request),
    /// The cluster's live set changed (from the cluster link).
    Nodes(Arc<NodeMap>),
    /// The other nodes counted this one dead for a while (from the cluster link).
    Evicted,
}

/// A request from the control plane, answered over a oneshot channel any executor can await.
pub(crate) enum Request {
    Ping {
        reply: oneshot::Sender<()>,
    },
    Online {
        uid: u32,
        reply: oneshot::Sender<Vec<SessionInfo>>,
    },
    Send {
        msg: SystemMessage,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
}
