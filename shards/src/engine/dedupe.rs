//! Remembers recent (sender, MsgId) pairs so a sender's retransmitted PUBLISH is acked but not
//! delivered twice. Bounded by time and by count: a pair is remembered for `window`, and
//! each sender's last `per_sender` ids at most (the way MQTT bounds packet ids by the
//! in-flight limit: a client retransmits only what it has not had acked, far fewer than
//! that). Each sender has its own small table, so no table ever grows with the traffic of
//! the whole shard, and nothing rehashes a huge set on the shard thread; senders with no
//! id left in the window are dropped by a sweep once per window. One per shard, for the
//! users it owns.
//!
//! Also tracks the publishes still being committed (see [`Seen::Committing`]).
//!
//! A sender's ids are kept as 64-bit fingerprints, not the 32-byte ids: a fingerprint is the
//! id hashed with a key drawn at random per process (foldhash). [`Recent`] keeps them in
//! arrival order with a compact index, so a look-up of a new id touches about one cache
//! line (flat out, these look-ups lead a shard's profile, each a cache miss). Two ids of one
//! sender share a fingerprint with probability 2⁻⁶⁴; with 1,024 remembered that is about
//! 3·10⁻¹⁴ per id, and a client cannot aim for it (the key is secret and per process). It
//! would cost that sender one message, taken for a retransmission.

use std::collections::HashSet;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use im_protocol::MsgId;
use rustc_hash::FxHashMap;

use super::recent::Recent;
use super::Time;

/// What a (sender, MsgId) pair is to the dedupe window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Not seen within the window: a new message (now remembered).
    First,
    /// Seen and committed: a retransmission to ack again.
    Committed,
    /// Seen and still being committed: its outcome (ack or refusal) is not known yet, so a
    /// retransmission gets no answer now; the client's next retry will.
    Committing,
}

pub(crate) struct Dedupe {
    /// Microseconds; 0 turns dedupe off.
    window: u64,
    per_sender: usize,
    senders: FxHashMap<u32, Recent>,
    /// The per-process key of the fingerprints.
    keyed: RandomState,
    last_sweep: Time,
    /// Pairs accepted and not yet acked or refused.
    committing: HashSet<(u32, MsgId)>,
}

impl Dedupe {
    /// A window of `window` microseconds (0: no dedupe), at most `per_sender` ids per sender.
    pub fn new(window: u64, per_sender: usize) -> Self {
        Self {
            window,
            per_sender: per_sender.max(1),
            senders: FxHashMap::default(),
            keyed: RandomState::default(),
            last_sweep: Time::default(),
            committing: HashSet::new(),
        }
    }

    /// An id's fingerprint: never 0, which marks a forgotten id in [`Recent`] (0 is taken
    /// as 1, one more pair of the 2⁶⁴ that share a fingerprint).
    fn fingerprint(&self, id: &MsgId) -> u64 {
        self.keyed.hash_one(id).max(1)
    }

    /// Records the pair; `false` if it was already seen within the window.
    fn first_time(&mut self, uid: u32, id: &MsgId, now: Time) -> bool {
        if self.window == 0 {
            return true;
        }
        let fp = self.fingerprint(id);
        let r = self.senders.entry(uid).or_default();
        // Expired ids go first, so an id seen just outside the window counts as new.
        r.trim(now, self.window, self.per_sender);
        if !r.insert(fp, now) {
            return false;
        }
        if r.len() > self.per_sender {
            r.trim(now, self.window, self.per_sender);
        }
        true
    }

    /// Starts loading what [`Dedupe::admit`] of this pair will read first (a hint; it
    /// changes nothing).
    pub fn prefetch(&self, uid: u32, id: &MsgId) {
        if self.window == 0 {
            return;
        }
        if let Some(r) = self.senders.get(&uid) {
            r.prefetch(self.fingerprint(id));
        }
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
        // Its place in the sender's ring stays until evicted, marked as matching nothing.
        let fp = self.fingerprint(id);
        if let Some(r) = self.senders.get_mut(&uid) {
            r.forget(fp);
        }
    }

    /// Drops senders with nothing left in the window; does the work once per window.
    pub fn sweep(&mut self, now: Time) {
        if self.window == 0 || now.micros_since(self.last_sweep) < self.window {
            return;
        }
        self.last_sweep = now;
        let (window, max) = (self.window, self.per_sender);
        self.senders.retain(|_, r| {
            r.trim(now, window, max);
            // An emptied sender is dropped, not given a smaller index.
            if r.is_empty() {
                return false;
            }
            r.shrink();
            true
        });
    }

    /// Ids remembered over all senders.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.senders.values().map(Recent::remembered).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_the_window_only() {
        let w = 10_000_000;
        let mut d = Dedupe::new(w, 100);
        let t0 = Time(5);
        let id = [1u8; 32];
        assert!(d.first_time(1, &id, t0));
        assert!(!d.first_time(1, &id, t0));
        assert!(d.first_time(2, &id, t0), "per sender");
        assert!(
            !d.first_time(1, &id, Time(t0.0 + w - 1)),
            "still in the window"
        );
        assert!(d.first_time(1, &id, Time(t0.0 + w)), "the window is over");
        d.forget(1, &id);
        assert!(d.first_time(1, &id, Time(t0.0 + w)));
    }

    #[test]
    fn bounded_by_count_per_sender() {
        let mut d = Dedupe::new(60_000_000, 4);
        for n in 0..10u8 {
            assert!(d.first_time(1, &[n; 32], Time(1)));
        }
        assert_eq!(d.len(), 4, "only the last 4 ids of the sender");
        assert!(!d.first_time(1, &[9; 32], Time(2)), "recent: remembered");
        assert!(d.first_time(1, &[0; 32], Time(2)), "evicted: new again");
        assert!(!d.first_time(1, &[0; 32], Time(2)), "and remembered again");
    }

    #[test]
    fn evicted_entries_do_not_pile_up() {
        let mut d = Dedupe::new(60_000_000, 16);
        for n in 0..10_000u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&n.to_le_bytes());
            assert!(d.first_time(1, &id, Time(u64::from(n))));
            let r = &d.senders[&1];
            assert!(r.slots() <= 64, "{} slots", r.slots());
        }
        assert_eq!(d.len(), 16);
        // A slow sender's ids expire by time: its table shrinks with them.
        let mut d = Dedupe::new(1_000, 1_024);
        for n in 0..5_000u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&n.to_le_bytes());
            assert!(d.first_time(1, &id, Time(u64::from(n) * 500)));
            assert!(d.senders[&1].len() <= 2 + 1);
        }
    }

    #[test]
    fn the_sweep_drops_idle_senders_and_a_forgotten_id_can_return() {
        let w = 1_000;
        let mut d = Dedupe::new(w, 8);
        for uid in 0..100 {
            d.first_time(uid, &[1; 32], Time(1));
        }
        d.sweep(Time(1 + w));
        assert_eq!((d.len(), d.senders.len()), (0, 0));
        d.first_time(7, &[2; 32], Time(3_000));
        d.forget(7, &[2; 32]);
        assert!(d.first_time(7, &[2; 32], Time(3_500)), "re-admitted");
        assert!(!d.first_time(7, &[2; 32], Time(3_600)));
    }

    #[test]
    fn a_retransmission_is_answered_only_once_the_first_copy_committed() {
        let mut d = Dedupe::new(10_000_000, 16);
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
