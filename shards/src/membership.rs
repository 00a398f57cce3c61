//! Group membership for the engine, cached per shard in front of the group store.
//!
//! A cached entry is used while its [`Versions`](im_storage::Versions) value is unchanged
//! and it is younger than the TTL; the engine gets it as a shared [`Members`] (sorted, and
//! split by owner shard once per fetch, not per message).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use im_storage::{GroupError, GroupStore};

use crate::engine::Members;

struct Cached {
    members: Arc<Members>,
    version: u64,
    fetched: Instant,
}

/// A shard's membership cache in front of the group store.
pub(crate) struct GroupCache {
    store: Arc<dyn GroupStore>,
    entries: RefCell<HashMap<u32, Cached>>,
    ttl: Duration,
    max: usize,
    shards: usize,
}

impl GroupCache {
    pub fn new(store: Arc<dyn GroupStore>, ttl: Duration, max: usize, shards: usize) -> Self {
        Self {
            store,
            entries: RefCell::new(HashMap::new()),
            ttl,
            max,
            shards,
        }
    }

    /// The members of `gid` if a fresh entry is cached (no waiting).
    pub fn cached(&self, gid: u32) -> Option<Arc<Members>> {
        let entries = self.entries.borrow();
        let e = entries.get(&gid)?;
        (e.version == self.store.versions().get(gid) && e.fetched.elapsed() < self.ttl)
            .then(|| e.members.clone())
    }

    /// The members of `gid` (empty: no such group).
    pub async fn members(&self, gid: u32) -> Result<Arc<Members>, GroupError> {
        if let Some(m) = self.cached(gid) {
            return Ok(m);
        }
        // The version is read before the fetch: a change during the fetch leaves the new
        // entry already stale, so it is fetched again next time.
        let version = self.store.versions().get(gid);
        let sorted = self.store.members(gid).await?;
        let members = Arc::new(Members::new(sorted, self.shards));
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= self.max {
            let ttl = self.ttl;
            entries.retain(|_, e| e.fetched.elapsed() < ttl);
            if entries.len() >= self.max {
                entries.clear();
            }
        }
        entries.insert(
            gid,
            Cached {
                members: members.clone(),
                version,
                fetched: Instant::now(),
            },
        );
        Ok(members)
    }
}
