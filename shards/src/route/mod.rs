//! Between shards: who owns a user ([`routing::owner_of`]), the mesh of bounded lock-free
//! mailboxes ([`mailbox::Mesh`]), and what shards mail each other ([`Mail`]).

pub mod mailbox;
pub mod routing;

use crate::control::Request;
use crate::engine::{Batch, Delivery};
use crate::net::handoff::Handoff;

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
}
