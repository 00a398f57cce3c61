//! Group membership: who is in group `gid`.
//!
//! The model is the seed's: a group is a set of uids (in Redis, the SET `im_group:<gid>` of
//! decimal uids in database 1). A group exists while it has at least one member, as a Redis
//! set does. Two backends implement [`GroupStore`]:
//!
//! - [`EmbeddedGroups`]: a `redb` file on local disk, the default (no external service);
//! - [`RedisGroups`]: Redis through `fred`, where the business side may also edit the sets
//!   directly at any time.
//!
//! Readers (the shards) cache memberships. [`Versions`] is how a cache learns that a cached
//! membership is stale: every change this process makes or hears about (Redis keyspace
//! notifications) bumps the version of the group's bucket, and losing the notification
//! stream bumps every version. Reading a version is one atomic load, so the hot path stays
//! lock-free.

mod embedded;
mod redis;
mod versions;

use std::future::Future;
use std::pin::Pin;

pub use embedded::EmbeddedGroups;
pub(crate) use redis::builder;
pub use redis::{builder as redis_builder, RedisConfig, RedisGroups};
pub use versions::Versions;

/// The Redis key of a group's member set (seed 003).
pub fn group_key(gid: u32) -> String {
    format!("im_group:{gid}")
}

/// A membership operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The backend could not be reached or failed the operation.
    #[error("group store unavailable during {op}: {msg}")]
    Unavailable { op: &'static str, msg: String },
    /// Too many lookups are waiting on the backend already.
    #[error("group store busy: {0} lookups in flight")]
    Busy(usize),
}

impl GroupError {
    pub(crate) fn unavailable(op: &'static str, e: impl std::fmt::Display) -> Self {
        GroupError::Unavailable {
            op,
            msg: e.to_string(),
        }
    }
}

/// What a membership operation returns: a future any executor can poll (shards run monoio,
/// the control plane and the Redis client run tokio).
pub type GroupFuture<T> = Pin<Box<dyn Future<Output = Result<T, GroupError>> + Send + 'static>>;

/// A membership backend. Every method is callable from any thread.
pub trait GroupStore: Send + Sync + 'static {
    /// The members of `gid`, ascending, without duplicates; empty when the group does not
    /// exist.
    fn members(&self, gid: u32) -> GroupFuture<Vec<u32>>;
    /// Adds members, creating the group when missing; returns how many were not members.
    fn add(&self, gid: u32, uids: Vec<u32>) -> GroupFuture<usize>;
    /// Removes members; returns how many were members. Removing the last one removes the
    /// group.
    fn remove(&self, gid: u32, uids: Vec<u32>) -> GroupFuture<usize>;
    /// Removes the group; returns whether it existed.
    fn delete(&self, gid: u32) -> GroupFuture<bool>;
    /// Every existing group, ascending.
    fn groups(&self) -> GroupFuture<Vec<u32>>;
    /// Change counters of cached memberships (see [`Versions`]).
    fn versions(&self) -> &Versions;
    /// The backend's name, for logs and the start-up summary.
    fn name(&self) -> &'static str;
}

/// Sorts and dedupes a member list (the form [`GroupStore::members`] returns).
pub(crate) fn normalize(mut uids: Vec<u32>) -> Vec<u32> {
    uids.sort_unstable();
    uids.dedup();
    uids
}

/// Runs a store future to completion on this thread (store futures are executor-agnostic):
/// for the command line and tests, never on a shard.
pub fn wait<T>(f: impl std::future::Future<Output = T>) -> T {
    futures_executor::block_on(f)
}
