//! Storage behind small traits, with an embedded default that needs no external service.
//!
//! - [`OfflineStore`]: per-user queues of messages waiting for delivery (append in order,
//!   drain in order, remove after ack, retention by expiry).
//! - [`EmbeddedStore`]: the default backend, on `redb` (chosen by the engine benchmark in
//!   `benches/`, see `benches/ENGINES.md`).
//! - [`StoreHandle`]: how shards use a store. Store calls block on disk, so they run on one
//!   storage thread; shards enqueue operations and await replies. The thread drains its
//!   queue into one transaction per turn (group commit), which is how writes from every
//!   shard's event-loop turn are batched into one disk sync.
//! - [`ScyllaOffline`] (in [`scylla`]) and [`RedisOffline`]: the production offline backends.
//! - [`GroupStore`] (in [`groups`]): group membership, embedded (redb) or Redis (`fred`).
//! - [`contract`] and [`groups::contract`]: the test suites every backend must pass.

mod embedded;
mod error;
pub mod groups;
pub mod histogram;
mod offline;
mod redis_offline;
pub mod scylla;
mod worker;

pub use embedded::EmbeddedStore;
pub use error::StoreError;
pub use groups::{EmbeddedGroups, GroupError, GroupStore, RedisConfig, RedisGroups, Versions};
pub use offline::{now_ms, OfflineMessage, OfflineStore, StoredMessage, Write};
pub use redis_offline::RedisOffline;
pub use scylla::{ScyllaConfig, ScyllaOffline};
pub use worker::{StoreHandle, StoreStats, StoreWorker};
