//! One sender's recent MsgIds, for the dedupe window ([`super::dedupe`]): the live ids in
//! arrival order, and a compact index over them.
//!
//! Flat out, every publish asks "seen this id?" of its sender's ids, and the answer is
//! nearly always "no". Each look-up lands at a random place in that sender's memory, and
//! with a hundred busy senders those places are far out of cache: turning the dedupe off
//! made 1:1 flat out 1.07–1.18× faster. The index is an open-addressing table of 4-byte
//! slots (linear probing, at most half full): a look-up of a new id reads and writes one
//! cache line, usually, and only a slot whose 16-bit tag matches leads on to the id itself.
//! That one line is known before the look-up ([`Recent::prefetch`]), so the reader hints
//! the packets a few frames ahead and their misses overlap; `std`'s map touched two lines
//! (control bytes, then the bucket) and offered no address to prefetch. Together: 1:1 flat
//! out 1.11× (benches/PROFILE.md, "The dedupe index, prefetched a few packets ahead").
//!
//! A slot is 0 (empty) or `tag << 16 | admission mod 2¹⁶`: the tag is the fingerprint's
//! top 16 bits (1 if those are 0), the admission number counts the sender's ids. The
//! live ids are the last `ring.len()` admissions, so a slot names its id's place in the
//! ring as long as fewer than 2¹⁶ ids are live (`per_sender` is at most [`MAX_IDS`]).
//! Evicting an id only pops the ring; its slot is dead from then on (its admission is
//! below the floor) and is taken by a later insert whose probe passes it, or cleared when
//! the table is rebuilt. Slots are never emptied between rebuilds, so no probe chain is
//! ever cut.

use std::collections::VecDeque;

use super::Time;

/// The most ids a sender's index can tell apart (positions are 16 bits, and one more id is
/// briefly live while the oldest is evicted).
pub(crate) const MAX_IDS: usize = 32_768;

/// The smallest table: a sender with one id in the window.
const MIN_SLOTS: usize = 8;

/// The fingerprint of a forgotten id (its publish was refused): it keeps its place in the
/// ring and matches nothing. No id has it: [`super::dedupe`] never makes a 0 fingerprint.
const FORGOTTEN: u64 = 0;

#[derive(Default)]
pub(crate) struct Recent {
    /// The live ids, oldest first: fingerprint, and when it was first seen.
    ring: VecDeque<(u64, Time)>,
    /// The admission number of the next id (the oldest live one's is `next - ring.len()`).
    next: u64,
    /// The index: empty, or a power of two long with at least half its slots 0.
    slots: Vec<u32>,
    /// Slots that are not 0 (live and dead).
    used: usize,
}

/// Where a fingerprint is, or would go.
enum Probe {
    /// A live id has this fingerprint.
    Live,
    /// Not live; the slot to write it in (the first dead one on the way, else the empty
    /// one that ended the probe).
    Vacant { slot: usize, empty: bool },
}

/// Asks the CPU to start loading `at`'s cache line, without waiting for it: a hint that
/// changes no value (a no-op off x86-64).
#[inline]
fn prefetch<T>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and cannot fault; `at` is a
    // reference, so the address is valid anyway.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((at as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

fn tag(fp: u64) -> u32 {
    ((fp >> 48) as u32).max(1)
}

impl Recent {
    /// Ids live (forgotten ones included until evicted or expired).
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Ids live and not forgotten.
    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.ring.iter().filter(|(f, _)| *f != FORGOTTEN).count()
    }

    /// Slots in the index (for tests of its bounds).
    #[cfg(test)]
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The admission number of the oldest live id.
    fn floor(&self) -> u64 {
        self.next - self.ring.len() as u64
    }

    /// The ring position a slot names, if its admission is live.
    fn live_index(&self, slot: u32) -> Option<usize> {
        let last = self.next.checked_sub(1)?;
        // The latest admission up to `last` with the slot's low 16 bits.
        let back = (last as u16).wrapping_sub(slot as u16);
        let admission = last.checked_sub(u64::from(back))?;
        let floor = self.floor();
        (admission >= floor).then(|| (admission - floor) as usize)
    }

    fn probe(&self, fp: u64) -> Probe {
        let mask = self.slots.len() - 1;
        let want = tag(fp);
        let mut i = fp as usize & mask;
        let mut dead = None;
        loop {
            let s = self.slots[i];
            if s == 0 {
                return match dead {
                    Some(slot) => Probe::Vacant { slot, empty: false },
                    None => Probe::Vacant {
                        slot: i,
                        empty: true,
                    },
                };
            }
            match self.live_index(s) {
                Some(k) if s >> 16 == want => {
                    if self.ring[k].0 == fp {
                        return Probe::Live;
                    }
                }
                Some(_) => {}
                None => {
                    dead.get_or_insert(i);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Starts loading the slot where a look-up of `fp` begins (see [`prefetch`]).
    pub fn prefetch(&self, fp: u64) {
        if let Some(slot) = self
            .slots
            .get(fp as usize & self.slots.len().wrapping_sub(1))
        {
            prefetch(slot);
        }
    }

    /// Drops what is older than the window and, past `max`, the oldest.
    pub fn trim(&mut self, now: Time, window: u64, max: usize) {
        while let Some(&(_, t)) = self.ring.front() {
            if now.micros_since(t) < window && self.ring.len() <= max {
                break;
            }
            self.ring.pop_front();
        }
    }

    /// Remembers `fp` (not 0) unless it is live already. True: it was not.
    pub fn insert(&mut self, fp: u64, now: Time) -> bool {
        debug_assert_ne!(fp, FORGOTTEN);
        // Room first (a rebuild moves slots), for the id about to be added.
        if self.slots.is_empty() || (self.used + 1) * 2 > self.slots.len() {
            self.rebuild(self.ring.len() + 1);
        }
        let (slot, empty) = match self.probe(fp) {
            Probe::Live => return false,
            Probe::Vacant { slot, empty } => (slot, empty),
        };
        self.slots[slot] = tag(fp) << 16 | u32::from(self.next as u16);
        self.used += usize::from(empty);
        self.next += 1;
        self.ring.push_back((fp, now));
        true
    }

    /// Forgets a live `fp`: a later insert of it is new.
    pub fn forget(&mut self, fp: u64) {
        if let Some(e) = self.ring.iter_mut().rev().find(|(f, _)| *f == fp) {
            e.0 = FORGOTTEN;
        }
    }

    /// Shrinks the index of a sender whose ids expired (called by the sweep).
    pub fn shrink(&mut self) {
        if self.slots.len() > MIN_SLOTS && self.ring.len() * 16 < self.slots.len() {
            self.rebuild(self.ring.len());
        }
    }

    /// A fresh index for `live` ids: at most 3/8 of its slots taken by them, so the table
    /// is rebuilt again only after at least 1/8 of its slots were filled by new ids.
    fn rebuild(&mut self, live: usize) {
        let mut len = MIN_SLOTS;
        while live * 8 > len * 3 {
            len *= 2;
        }
        self.slots.clear();
        self.slots.resize(len, 0);
        self.used = 0;
        let mask = len - 1;
        let floor = self.floor();
        for (k, &(fp, _)) in self.ring.iter().enumerate() {
            if fp == FORGOTTEN {
                continue;
            }
            let mut i = fp as usize & mask;
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = tag(fp) << 16 | u32::from((floor + k as u64) as u16);
            self.used += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A deterministic stream of fingerprints (xorshift), drawn from `universe` values so
    /// that repeats happen, spread over all 64 bits.
    struct Fps {
        x: u64,
        universe: u64,
        /// All fingerprints with these top 16 bits (every tag equal), or spread.
        tag: Option<u64>,
    }

    impl Fps {
        fn next(&mut self) -> u64 {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            // Never 0 (a fingerprint never is): an odd multiplier keeps 1..=universe nonzero.
            let fp = (self.x % self.universe + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            match self.tag {
                Some(t) => (fp & 0xFFFF_FFFF_FFFF) | t << 48 | 1,
                None => fp,
            }
        }
    }

    /// Against a plain model (fingerprint → admission, with the same eviction by count and
    /// time, and forgetting), over 200,000 operations: more than 2¹⁶ admissions, so the
    /// 16-bit positions wrap several times; in one case every fingerprint has the same tag,
    /// so every occupied slot on a probe leads to the ring.
    #[test]
    fn answers_like_a_plain_model() {
        let cases = [
            (4, 12, None),
            (64, 150, None),
            (1_024, 3_000, None),
            (1_024, 1 << 40, None),
            (256, 700, Some(0x1234)),
        ];
        for (max, universe, tag) in cases {
            let mut r = Recent::default();
            let mut model: HashMap<u64, u64> = HashMap::new(); // live fp → admission
            let mut order: VecDeque<(u64, u64, Time)> = VecDeque::new(); // fp, admission, at
            let mut next = 0u64;
            let mut fps = Fps {
                x: 0x2545_F491_4F6C_DD1D,
                universe,
                tag,
            };
            let window = 50_000;
            for step in 0..200_000u64 {
                let now = Time(step);
                let fp = fps.next();
                // The model: drop what is expired or over `max`, then insert.
                let expire = |order: &mut VecDeque<(u64, u64, Time)>,
                              model: &mut HashMap<u64, u64>,
                              extra: usize| {
                    while let Some(&(f, a, t)) = order.front() {
                        if now.micros_since(t) < window && order.len() + extra <= max {
                            break;
                        }
                        order.pop_front();
                        if model.get(&f) == Some(&a) {
                            model.remove(&f);
                        }
                    }
                };
                expire(&mut order, &mut model, 0);
                r.trim(now, window, max);
                if step % 97 == 0 {
                    if let Some(&(f, _, _)) = order.back() {
                        model.remove(&f);
                        r.forget(f);
                    }
                    continue;
                }
                let new = !model.contains_key(&fp);
                if new {
                    model.insert(fp, next);
                    order.push_back((fp, next, now));
                    next += 1;
                }
                assert_eq!(r.insert(fp, now), new, "max {max}, step {step}");
                expire(&mut order, &mut model, 0);
                r.trim(now, window, max);
                assert_eq!(r.len(), order.len(), "max {max}, step {step}");
                assert!(r.used * 2 <= r.slots.len(), "at most half full");
            }
            assert_eq!(r.remembered(), model.len());
        }
    }

    /// A full sender's index stays at 4 slots per id (4,096 for the default 1,024), however
    /// many ids pass through it, and a sender whose ids expired gets a small one back.
    #[test]
    fn the_index_stays_bounded_and_shrinks() {
        let mut r = Recent::default();
        for n in 0..100_000u64 {
            let fp = (n + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            assert!(r.insert(fp, Time(n)));
            r.trim(Time(n), u64::MAX, 1_024);
            assert!(r.slots() <= 4_096, "{} slots at {n}", r.slots());
        }
        assert_eq!(r.len(), 1_024);
        r.trim(Time(u64::MAX - 1), 1, 1_024);
        assert!(r.is_empty());
        r.shrink();
        assert!(r.slots() <= MIN_SLOTS, "{} slots", r.slots());
    }

    /// An evicted or forgotten id is new again; the others stay remembered.
    #[test]
    fn evicted_and_forgotten_ids_are_new_again() {
        let mut r = Recent::default();
        for fp in 1..=4u64 {
            assert!(r.insert(fp << 50, Time(fp)));
        }
        r.forget(2 << 50);
        assert!(r.insert(2 << 50, Time(5)), "forgotten: new");
        assert!(!r.insert(3 << 50, Time(6)), "remembered");
        r.trim(Time(6), u64::MAX, 2);
        assert!(r.insert(1 << 50, Time(7)), "evicted: new");
        assert!(!r.insert(2 << 50, Time(8)), "re-admitted: remembered");
    }
}
