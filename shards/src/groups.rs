//! Group publishes on the sender's shard: membership (cached per shard), the checks, and
//! the split of the recipients into one batch per owner shard.
//!
//! A cached membership keeps its members sorted (membership check = binary search) and
//! already split by owner shard as reference-counted slices, so a GROUP_PUBLISH to a cached
//! group allocates no per-member memory at all: each owner shard gets the same `Arc<[u32]>`
//! and the same encoded push frame (`Bytes`) for every message. An entry is used while its
//! [`Versions`](im_storage::Versions) value is unchanged and it is younger than the TTL.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use im_storage::{GroupError, GroupStore};

use crate::routing::owner_of;

/// One group's membership as a shard caches it.
pub(crate) struct Members {
    /// Ascending, unique.
    pub sorted: Vec<u32>,
    /// `by_shard[i]`: the members shard `i` owns.
    pub by_shard: Vec<Arc<[u32]>>,
    version: u64,
    fetched: Instant,
}

impl Members {
    fn new(sorted: Vec<u32>, shards: usize, version: u64) -> Self {
        let mut parts: Vec<Vec<u32>> = vec![Vec::new(); shards];
        for &uid in &sorted {
            parts[owner_of(uid, shards)].push(uid);
        }
        Self {
            sorted,
            by_shard: parts.into_iter().map(Arc::from).collect(),
            version,
            fetched: Instant::now(),
        }
    }

    pub fn contains(&self, uid: u32) -> bool {
        self.sorted.binary_search(&uid).is_ok()
    }
}

/// A shard's membership cache in front of the group store.
pub(crate) struct GroupCache {
    store: Arc<dyn GroupStore>,
    entries: RefCell<HashMap<u32, Rc<Members>>>,
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

    fn cached(&self, gid: u32) -> Option<Rc<Members>> {
        let m = self.entries.borrow().get(&gid).cloned()?;
        (m.version == self.store.versions().get(gid) && m.fetched.elapsed() < self.ttl).then_some(m)
    }

    /// The members of `gid` (empty: no such group).
    pub async fn members(&self, gid: u32) -> Result<Rc<Members>, GroupError> {
        if let Some(m) = self.cached(gid) {
            return Ok(m);
        }
        // The version is read before the fetch: a change during the fetch leaves the new
        // entry already stale, so it is fetched again next time.
        let version = self.store.versions().get(gid);
        let sorted = self.store.members(gid).await?;
        let m = Rc::new(Members::new(sorted, self.shards, version));
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= self.max {
            let ttl = self.ttl;
            entries.retain(|_, e| e.fetched.elapsed() < ttl);
            if entries.len() >= self.max {
                entries.clear();
            }
        }
        entries.insert(gid, m.clone());
        Ok(m)
    }
}

/// Splits an explicit recipient list by owner shard.
pub(crate) fn split(uids: &[u32], shards: usize) -> Vec<Vec<u32>> {
    let mut parts: Vec<Vec<u32>> = vec![Vec::new(); shards];
    for &uid in uids {
        parts[owner_of(uid, shards)].push(uid);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_split_by_owner_and_answer_membership() {
        let m = Members::new((1..=1000).collect(), 3, 0);
        assert_eq!(m.by_shard.iter().map(|p| p.len()).sum::<usize>(), 1000);
        for (i, part) in m.by_shard.iter().enumerate() {
            assert!(part.iter().all(|u| owner_of(*u, 3) == i));
        }
        assert!(m.contains(500) && !m.contains(1001) && !m.contains(0));
        let parts = split(&[5, 6, 7], 2);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 3);
    }
}
