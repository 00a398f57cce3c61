//! Test kit, a dev-dependency only (nothing here ships in the server): the contract suites
//! every storage backend must pass ([`offline`], [`groups`]) and a throwaway
//! `redis-server` ([`redis::RedisServer`]) for tests and benchmarks that need a real one.

pub mod groups;
pub mod offline;
pub mod redis;

pub use redis::RedisServer;

/// For the contract macros, so a test crate needs no `tempfile` of its own.
#[doc(hidden)]
pub use tempfile;
