//! A group's membership as the engine uses it: sorted (membership check = binary search)
//! and already split by owner shard as reference-counted slices, so a GROUP_PUBLISH to a
//! cached group allocates no per-member memory: each owner shard gets the same
//! `Arc<[u32]>` for every message.

use std::sync::Arc;

use crate::route::routing::owner_of;

#[derive(Debug)]
pub struct Members {
    /// Ascending, unique.
    pub sorted: Vec<u32>,
    /// `by_shard[i]`: the members shard `i` owns.
    pub by_shard: Vec<Arc<[u32]>>,
}

impl Members {
    /// `uids` in any order, possibly repeated.
    pub fn new(mut uids: Vec<u32>, shards: usize) -> Self {
        uids.sort_unstable();
        uids.dedup();
        let by_shard = split(&uids, shards).into_iter().map(Arc::from).collect();
        Self {
            sorted: uids,
            by_shard,
        }
    }

    pub fn contains(&self, uid: u32) -> bool {
        self.sorted.binary_search(&uid).is_ok()
    }
}

/// Splits a recipient list by owner shard.
pub fn split(uids: &[u32], shards: usize) -> Vec<Vec<u32>> {
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
        let m = Members::new((1..=1000).rev().collect(), 3);
        assert_eq!(m.by_shard.iter().map(|p| p.len()).sum::<usize>(), 1000);
        for (i, part) in m.by_shard.iter().enumerate() {
            assert!(part.iter().all(|u| owner_of(*u, 3) == i));
        }
        assert!(m.contains(500) && !m.contains(1001) && !m.contains(0));
        let parts = split(&[5, 6, 7], 2);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 3);
    }
}
