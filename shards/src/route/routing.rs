//! Which shard owns a user. Every session, unacked push, dedupe entry and offline drain of a
//! user lives on `owner_of(uid, shards)`; the listeners hand authenticated connections there
//! and every message for the user is mailed there.

/// The owner shard of a user: a multiplicative (Fibonacci) hash, so consecutive uids spread
/// evenly over the shards.
pub fn owner_of(uid: u32, shards: usize) -> usize {
    let h = (uid as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    (h % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_spreads_users() {
        let mut counts = [0usize; 4];
        for uid in 0..10_000 {
            counts[owner_of(uid, 4)] += 1;
        }
        for c in counts {
            assert!((2_000..3_000).contains(&c), "{counts:?}");
        }
        assert_eq!(owner_of(7, 1), 0);
    }
}
