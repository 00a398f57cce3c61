//! Remembers recent (sender, MsgId) pairs so a sender's retransmitted PUBLISH is acked but not
//! delivered twice. Two generations of hash sets, rotated every window: a pair is remembered
//! for between one and two windows, memory is bounded by the traffic of two windows, and
//! every operation is O(1). One per shard, for the users it owns.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use im_protocol::MsgId;

pub(crate) struct Dedupe {
    window: Duration,
    current: HashSet<(u32, MsgId)>,
    previous: HashSet<(u32, MsgId)>,
    rotated: Instant,
}

impl Dedupe {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            current: HashSet::new(),
            previous: HashSet::new(),
            rotated: Instant::now(),
        }
    }

    /// Records the pair; `false` if it was already seen within the window.
    pub fn first_time(&mut self, uid: u32, id: &MsgId, now: Instant) -> bool {
        if self.window.is_zero() {
            return true;
        }
        if now.duration_since(self.rotated) >= self.window {
            self.previous = std::mem::take(&mut self.current);
            self.rotated = now;
        }
        let key = (uid, *id);
        !self.previous.contains(&key) && self.current.insert(key)
    }

    /// Forgets a pair (its message was not accepted after all, so a retry must go through).
    pub fn forget(&mut self, uid: u32, id: &MsgId) {
        self.current.remove(&(uid, *id));
        self.previous.remove(&(uid, *id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_the_window_and_forgets_after_two() {
        let w = Duration::from_secs(10);
        let mut d = Dedupe::new(w);
        let t0 = Instant::now();
        let id = [1u8; 32];
        assert!(d.first_time(1, &id, t0));
        assert!(!d.first_time(1, &id, t0));
        assert!(d.first_time(2, &id, t0), "per sender");
        assert!(
            !d.first_time(1, &id, t0 + w),
            "still in the previous generation"
        );
        assert!(d.first_time(1, &id, t0 + w * 3));
        d.forget(1, &id);
        assert!(d.first_time(1, &id, t0 + w * 3));
    }
}
