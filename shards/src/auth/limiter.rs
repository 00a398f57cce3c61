//! CONNECT brute-force protection, shared by every shard: failed logins are counted per
//! source address in a fixed window; an address that reached `max_failures` in the current
//! window gets CONNECT_ACK 5 (too many attempts) without its credentials being checked, until
//! the window ends. Successful logins are not counted, so a busy NAT of honest users is not
//! locked out by its own traffic.
//!
//! Consulted once per CONNECT, never on the message path. The table is split into stripes
//! (one mutex each, chosen by a keyed hash of the address), so logins on different shards
//! rarely meet on a lock, and while no failure is being tracked at all (the normal case) a
//! CONNECT takes no lock: one relaxed atomic load. The table is bounded: when a stripe is
//! full, its expired entries are dropped, and if none are, a new address is not tracked (the
//! limiter fails open rather than growing — `im_auth_failures_total{reason="limiter_full"}`
//! counts those).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most stripes a limiter has (fewer when `max_addrs` is smaller).
const STRIPES: usize = 64;

struct Entry {
    start: Instant,
    failures: u32,
}

/// Failed-login counts per source address.
pub struct AuthLimiter {
    max_failures: u32,
    window: Duration,
    /// Addresses each stripe tracks at most.
    per_stripe: usize,
    hasher: RandomState,
    stripes: Box<[Mutex<HashMap<IpAddr, Entry>>]>,
    /// Entries in all stripes; 0 lets [`AuthLimiter::allowed`] skip the locks.
    tracked: AtomicUsize,
}

/// What [`AuthLimiter::failed`] did with a failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    Yes,
    /// This address's stripe is full of live entries: the address is not tracked.
    TableFull,
}

impl AuthLimiter {
    /// `max_failures = 0` turns the limiter off. `max_addrs` bounds the addresses tracked
    /// at once (rounded up to a multiple of the stripe count).
    pub fn new(max_failures: u32, window: Duration, max_addrs: usize) -> Self {
        let max_addrs = max_addrs.max(1);
        let stripes = STRIPES.min(max_addrs);
        Self {
            max_failures,
            window,
            per_stripe: max_addrs.div_ceil(stripes),
            hasher: RandomState::new(),
            stripes: (0..stripes).map(|_| Mutex::new(HashMap::new())).collect(),
            tracked: AtomicUsize::new(0),
        }
    }

    fn stripe(&self, ip: IpAddr) -> MutexGuard<'_, HashMap<IpAddr, Entry>> {
        let i = (self.hasher.hash_one(ip) % self.stripes.len() as u64) as usize;
        // A panic while holding this lock cannot leave the map inconsistent.
        self.stripes[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May `ip` try to log in now?
    pub fn allowed(&self, ip: IpAddr, now: Instant) -> bool {
        if self.max_failures == 0 || self.tracked.load(Ordering::Relaxed) == 0 {
            return true;
        }
        let mut t = self.stripe(ip);
        match t.get(&ip) {
            Some(e) if now.duration_since(e.start) < self.window => e.failures < self.max_failures,
            Some(_) => {
                // Expired: forget it now, so the table empties (and the lock-free path above
                // comes back) as addresses return, not only when a stripe fills up.
                t.remove(&ip);
                self.tracked.fetch_sub(1, Ordering::Relaxed);
                true
            }
            None => true,
        }
    }

    /// Counts a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Recorded {
        if self.max_failures == 0 {
            return Recorded::Yes;
        }
        let mut t = self.stripe(ip);
        if t.len() >= self.per_stripe && !t.contains_key(&ip) {
            let window = self.window;
            let before = t.len();
            t.retain(|_, e| now.duration_since(e.start) < window);
            self.tracked.fetch_sub(before - t.len(), Ordering::Relaxed);
            if t.len() >= self.per_stripe {
                return Recorded::TableFull;
            }
        }
        let e = t.entry(ip).or_insert_with(|| {
            self.tracked.fetch_add(1, Ordering::Relaxed);
            Entry {
                start: now,
                failures: 0,
            }
        });
        if now.duration_since(e.start) >= self.window {
            *e = Entry {
                start: now,
                failures: 0,
            };
        }
        e.failures += 1;
        Recorded::Yes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn locks_out_after_max_failures_until_the_window_ends() {
        let l = AuthLimiter::new(3, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.allowed(ip(1), t0));
            l.failed(ip(1), t0);
        }
        assert!(!l.allowed(ip(1), t0 + Duration::from_secs(59)));
        assert!(l.allowed(ip(2), t0), "other addresses are not affected");
        assert!(
            l.allowed(ip(1), t0 + Duration::from_secs(60)),
            "a new window"
        );
        l.failed(ip(1), t0 + Duration::from_secs(61));
        assert!(
            l.allowed(ip(1), t0 + Duration::from_secs(61)),
            "count restarted"
        );
    }

    #[test]
    fn zero_turns_it_off() {
        let l = AuthLimiter::new(0, Duration::from_secs(60), 1);
        let t0 = Instant::now();
        for _ in 0..100 {
            l.failed(ip(1), t0);
        }
        assert!(l.allowed(ip(1), t0));
    }

    #[test]
    fn full_table_prunes_expired_then_fails_open() {
        let l = AuthLimiter::new(1, Duration::from_secs(10), 4);
        let t0 = Instant::now();
        // Fill until some address finds its stripe full (at most 4 fit).
        let mut full = None;
        let mut tracked = Vec::new();
        for last in 1..=200 {
            match l.failed(ip(last), t0) {
                Recorded::Yes => tracked.push(ip(last)),
                Recorded::TableFull => {
                    full = Some(ip(last));
                    break;
                }
            }
        }
        let full = full.expect("a bounded table fills");
        assert!(tracked.len() <= 4, "{tracked:?}");
        assert!(l.allowed(full, t0), "untracked: fails open");
        for a in &tracked {
            assert!(!l.allowed(*a, t0), "tracked ones stay limited");
        }
        // Once the old entries expire there is room again.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(l.failed(full, later), Recorded::Yes);
        assert!(!l.allowed(full, later));
        counter_matches_table(&l);
    }

    /// The lock-free counter equals the entries in the stripes.
    fn counter_matches_table(l: &AuthLimiter) {
        let live: usize = l
            .stripes
            .iter()
            .map(|s| s.lock().map(|t| t.len()).unwrap_or(0))
            .sum();
        assert_eq!(live, l.tracked.load(Ordering::Relaxed));
    }

    #[test]
    fn no_lock_while_nothing_is_tracked() {
        let l = AuthLimiter::new(3, Duration::from_secs(60), 100);
        assert_eq!(l.tracked.load(Ordering::Relaxed), 0);
        assert!(l.allowed(ip(1), Instant::now()));
        let t0 = Instant::now();
        l.failed(ip(1), t0);
        assert_eq!(l.tracked.load(Ordering::Relaxed), 1);
        counter_matches_table(&l);
        // Asked again after the window, the expired entry goes and the count with it.
        assert!(l.allowed(ip(1), t0 + Duration::from_secs(61)));
        assert_eq!(l.tracked.load(Ordering::Relaxed), 0);
        counter_matches_table(&l);
    }
}
