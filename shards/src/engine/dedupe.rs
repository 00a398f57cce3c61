//! Remembers recent (sender, MsgId) pairs so a sender's retransmitted PUBLISH is acked but not
//! delivered twice. Two generations of hash sets, rotated every window: a pair is remembered
//! for between one and two windows, memory is bounded by the traffic of two windows, and
//! every operation is O(1). One per shard, for the users it owns.

use std::collections::HashSet;

use im_protocol::MsgId;

use super::Time;

/// What a (sender, MsgId) pair is to the dedupe window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Not seen within the window: a new message (now remembered, and committing).
    First,
    /// Seen and committed: a retransmission to ack again.
    Committed,
    /// Seen and still being committed: its outcome (ack or refusal) is not known yet, so a
    /// retransmission gets no answer now; the client's next retry will.
    Committing,
}

pub(crate) struct Dedupe {
    /// Microseconds.
    window: u64,
    current: HashSet<(u32, MsgId)>,
    previous: HashSet<(u32, MsgId)>,
    rotated: Time,
    /// Pairs accepted and not yet acked or refused.
    committing: HashSet<(u32, MsgId)>,
}

impl Dedupe {
    /// A window of `window` microseconds (0: no dedupe).
    pub fn new(window: u64) -> Self {
        Self {
            window,
            current: HashSet::new(),
            previous: HashSet::new(),
            rotated: Time::default(),
            committing: HashSet::new(),
        }
    }

    /// Records the pair; `false` if it was already seen within the window.
    fn first_time(&mut self, uid: u32, id: &MsgId, now: Time) -> bool {
        if self.window == 0 {
            return true;
        }
        if now.micros_since(self.rotated) >= self.window {
            self.previous = std::mem::take(&mut self.current);
            self.rotated = now;
        }
        let key = (uid, *id);
        !self.previous.contains(&key) && self.current.insert(key)
    }

    /// Records a publish: new, or a retransmission. `waits`: its commit may wait (for
    /// storage or a membership) and may still be refused, so it is tracked as committing
    /// until [`Dedupe::committed`] or [`Dedupe::forget`]; a commit that completes within
    /// the read that brought it (`on_failure` 1:1) needs no tracking.
    pub fn admit(&mut self, uid: u32, id: &MsgId, now: Time, waits: bool) -> Seen {
        if self.first_time(uid, id, now) {
            if waits {
                self.committing.insert((uid, *id));
            }
            Seen::First
        } else if self.committing.contains(&(uid, *id)) {
            Seen::Committing
        } else {
            Seen::Committed
        }
    }

    /// The message was acked to its sender.
    pub fn committed(&mut self, uid: u32, id: &MsgId) {
        if !self.committing.is_empty() {
            self.committing.remove(&(uid, *id));
        }
    }

    /// Forgets a pair (its message was not accepted after all, so a retry must go through).
    pub fn forget(&mut self, uid: u32, id: &MsgId) {
        self.committing.remove(&(uid, *id));
        self.current.remove(&(uid, *id));
        self.previous.remove(&(uid, *id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_the_window_and_forgets_after_two() {
        let w = 10_000_000;
        let mut d = Dedupe::new(w);
        let t0 = Time(5);
        let id = [1u8; 32];
        assert!(d.first_time(1, &id, t0));
        assert!(!d.first_time(1, &id, t0));
        assert!(d.first_time(2, &id, t0), "per sender");
        assert!(
            !d.first_time(1, &id, Time(t0.0 + w)),
            "still in the previous generation"
        );
        assert!(d.first_time(1, &id, Time(t0.0 + w * 3)));
        d.forget(1, &id);
        assert!(d.first_time(1, &id, Time(t0.0 + w * 3)));
    }

    #[test]
    fn a_retransmission_is_answered_only_once_the_first_copy_committed() {
        let mut d = Dedupe::new(10_000_000);
        let id = [7u8; 32];
        assert_eq!(d.admit(1, &id, Time(0), true), Seen::First);
        assert_eq!(d.admit(1, &id, Time(1), true), Seen::Committing);
        d.committed(1, &id);
        assert_eq!(d.admit(1, &id, Time(2), true), Seen::Committed);
        d.forget(1, &id);
        assert_eq!(
            d.admit(1, &id, Time(3), true),
            Seen::First,
            "refused: a retry is new"
        );
        let other = [8u8; 32];
        assert_eq!(d.admit(1, &other, Time(4), false), Seen::First);
        assert_eq!(
            d.admit(1, &other, Time(5), false),
            Seen::Committed,
            "not tracked"
        );
    }
}
