//! The shards' way to other nodes of a cluster: the port ([`ClusterLink`], implemented by
//! the `im-cluster` crate) that carries what one node hands another ([`Forward`], one of
//! the engine's mail types).

use std::sync::Arc;

pub use crate::engine::Forward;

/// The shards' way to other nodes (implemented by `im-cluster`). Never blocks.
pub trait ClusterLink: Send + Sync + 'static {
    /// Queues `f` for node `to`. `Err(f)` when it cannot be queued (the link's queue is
    /// full or the node is unknown): the caller then stores the message offline.
    fn forward(&self, to: &Arc<str>, f: Forward) -> Result<(), Forward>;
}
