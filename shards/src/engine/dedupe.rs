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
//! A sender's table holds 64-bit fingerprints of its MsgIds, not the 32-byte ids: a
//! fingerprint is the id hashed with a key drawn at random per process (foldhash), so a table
//! entry is 16 bytes instead of 40 and the 1,024 ids of a busy sender stay in a few cache
//! lines' worth of buckets (flat out, these look-ups were the top entry of a shard's profile,
//! each a cache miss). Two ids of one sender share a fingerprint with probability 2⁻⁶⁴; with
//! 1,024 remembered that is about 3·10⁻¹⁴ per id, and a client cannot aim for it (the key is
//! secret and per process). It would cost that sender one message, taken for a retransmission.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use foldhash::fast::RandomState;
use im_protocol::MsgId;
use rustc_hash::FxHashMap;

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

/// A fingerprint is already a keyed hash: the table uses it as it is.
#[derive(Default)]
struct Fingerprint(u64);

impl Hasher for Fingerprint {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; fold anything else in rather than ignore it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One sender's recent ids (fingerprints): when each was first seen, and their order for
/// eviction.
///
/// Eviction does not touch the table: an id leaves `order` only, and its table entry, which
/// holds the id's admission number, is dead from then on (older than the oldest in
/// `order`). Dead entries are dropped in one pass once they are half as many as the live ones.
/// Flat out every admit evicts one id, and removing it from the table was a cache miss of
/// its own, the top entry of a shard's profile (`Recent::trim`, 8 %; see
/// benches/PROFILE.md); the pass walks the table in memory order instead.
#[derive(Default)]
struct Recent {
    /// Fingerprint → admission number. MsgIds are chosen by clients: their fingerprints are
    /// keyed at random per process (foldhash), so collisions cannot be crafted in advance;
    /// even a table of one sender's colliding ids stays bounded (1.5 times `per_sender`), and
    /// hurts only that sender's lookups. (It was std's SipHash of the whole id: with four
    /// hashes per publish, the dedupe was a quarter of the shard's CPU flat out.)
    seen: HashMap<u64, u64, BuildHasherDefault<Fingerprint>>,
    /// The live ids, oldest first: fingerprint and when it was first seen.
    order: VecDeque<(u64, Time)>,
    /// The admission number of the next id (the oldest live one's is `next - order.len()`).
    next: u64,
}

impl Recent {
    /// Drops what is older than the window and, past `max`, the oldest.
    fn trim(&mut self, now: Time, window: u64, max: usize) {
        while let Some(&(_, t)) = self.order.front() {
            if now.micros_since(t) < window && self.order.len() <= max {
                break;
            }
            self.order.pop_front();
        }
    }

    /// The admission number of the oldest live id: entries below it are dead.
    fn floor(&self) -> u64 {
        self.next - self.order.len() as u64
    }

    /// Remembers `fp` unless it is live already. True: it was not.
    fn insert(&mut self, fp: u64, now: Time) -> bool {
        let (n, floor) = (self.next, self.floor());
        match self.seen.entry(fp) {
            Entry::Occupied(e) if *e.get() >= floor => return false,
            // A dead entry of the same id (evicted or expired): it is new again.
            Entry::Occupied(mut e) => {
                e.insert(n);
            }
            Entry::Vacant(v) => {
                v.insert(n);
            }
        }
        self.next += 1;
        self.order.push_back((fp, now));
        true
    }

    /// Drops the dead entries once they are half as many as the live ones (and a few): the
    /// table stays within 1.5 times what is live, which a full sender's table holds without
    /// growing (1,024 live ids: 1,536 entries in hashbrown's 2,048 buckets, as before).
    fn compact(&mut self) {
        if self.seen.len() > self.order.len() + self.order.len() / 2 + 8 {
            let floor = self.floor();
            self.seen.retain(|_, n| *n >= floor);
        }
    }
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

    /// Records the pair; `false` if it was already seen within the window.
    fn first_time(&mut self, uid: u32, id: &MsgId, now: Time) -> bool {
        if self.window == 0 {
            return true;
        }
        let fp = self.keyed.hash_one(id);
        let r = self.senders.entry(uid).or_default();
        // Expired ids go first, so an id seen just outside the window counts as new.
        r.trim(now, self.window, self.per_sender);
        if !r.insert(fp, now) {
            return false;
        }
        if r.order.len() > self.per_sender {
            r.trim(now, self.window, self.per_sender);
        }
        r.compact();
        true
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
        // Its place in `order` stays until evicted; without a table entry it is not live.
        if let Some(r) = self.senders.get_mut(&uid) {
            r.seen.remove(&self.keyed.hash_one(id));
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
            r.compact();
            !r.order.is_empty()
        });
    }

    /// Ids remembered over all senders.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.senders
            .values()
            .map(|r| r.seen.values().filter(|n| **n >= r.floor()).count())
            .sum()
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
            assert!(r.seen.len() <= 16 + 8 + 8, "{} entries", r.seen.len());
        }
        assert_eq!(d.len(), 16);
        // A slow sender's ids expire by time: its table shrinks with them.
        let mut d = Dedupe::new(1_000, 1_024);
        for n in 0..5_000u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&n.to_le_bytes());
            assert!(d.first_time(1, &id, Time(u64::from(n) * 500)));
            assert!(d.senders[&1].seen.len() <= 2 + 1 + 8);
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
