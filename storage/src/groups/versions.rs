//! Change counters for cached group memberships.
//!
//! Groups hash into a fixed number of buckets, each with a counter; a global epoch covers
//! "everything may have changed" (the notification stream was lost). A cached membership
//! remembers [`Versions::get`] from *before* it was fetched and is valid while the value is
//! unchanged. Two groups sharing a bucket only cost a spurious refetch. Readers do two
//! relaxed-cost atomic loads; there is no lock and no queue that could overflow.

use std::sync::atomic::{AtomicU64, Ordering};

const BUCKETS: usize = 4096;

/// Per-bucket change counters plus a global epoch.
pub struct Versions {
    epoch: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

impl Default for Versions {
    fn default() -> Self {
        Self::new()
    }
}

impl Versions {
    pub fn new() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn bucket(&self, gid: u32) -> &AtomicU64 {
        let h = (gid as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52;
        &self.buckets[h as usize % BUCKETS]
    }

    /// The current version of `gid`'s membership. Both counters only grow, so their sum
    /// changes whenever either does.
    pub fn get(&self, gid: u32) -> u64 {
        self.epoch
            .load(Ordering::Acquire)
            .wrapping_add(self.bucket(gid).load(Ordering::Acquire))
    }

    /// `gid`'s membership changed.
    pub fn bump(&self, gid: u32) {
        self.bucket(gid).fetch_add(1, Ordering::AcqRel);
    }

    /// Any membership may have changed (e.g. change notifications were lost).
    pub fn bump_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumps_change_only_what_they_cover() {
        let v = Versions::new();
        let (a, b) = (v.get(1), v.get(2));
        v.bump(1);
        assert_ne!(v.get(1), a);
        // gid 2 may share gid 1's bucket; find one that does not.
        let other = (2..10_000)
            .find(|g| v.get(*g) == b)
            .expect("an unaffected group");
        let before = v.get(other);
        v.bump_all();
        assert_ne!(v.get(other), before);
    }
}
