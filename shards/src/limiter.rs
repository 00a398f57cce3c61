//! CONNECT brute-force protection, shared by every shard: failed logins are counted per
//! source address in a fixed window; an address that reached `max_failures` in the current
//! window gets CONNECT_ACK 5 (too many attempts) without its credentials being checked, until
//! the window ends. Successful logins are not counted, so a busy NAT of honest users is not
//! locked out by its own traffic.
//!
//! Consulted once per CONNECT (a short mutex hold, no I/O); the table is bounded: when it is
//! full, expired entries are dropped, and if none are, a new address is not tracked (the
//! limiter fails open rather than growing — `im_auth_failures_total{reason="limiter_full"}`
//! counts those).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Entry {
    start: Instant,
    failures: u32,
}

/// Failed-login counts per source address.
pub struct AuthLimiter {
    max_failures: u32,
    window: Duration,
    max_addrs: usize,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

/// What [`AuthLimiter::failed`] did with a failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Tracked {
    Yes,
    /// The table is full of live entries: this address is not tracked.
    TableFull,
}

impl AuthLimiter {
    /// `max_failures = 0` turns the limiter off.
    pub fn new(max_failures: u32, window: Duration, max_addrs: usize) -> Self {
        Self {
            max_failures,
            window,
            max_addrs: max_addrs.max(1),
            table: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May `ip` try to log in now?
    pub fn allowed(&self, ip: IpAddr, now: Instant) -> bool {
        if self.max_failures == 0 {
            return true;
        }
        match self.table().get(&ip) {
            Some(e) if now.duration_since(e.start) < self.window => e.failures < self.max_failures,
            _ => true,
        }
    }

    /// Counts a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Tracked {
        if self.max_failures == 0 {
            return Tracked::Yes;
        }
        let mut t = self.table();
        if t.len() >= self.max_addrs && !t.contains_key(&ip) {
            let window = self.window;
            t.retain(|_, e| now.duration_since(e.start) < window);
            if t.len() >= self.max_addrs {
                return Tracked::TableFull;
            }
        }
        let e = t.entry(ip).or_insert(Entry {
            start: now,
            failures: 0,
        });
        if now.duration_since(e.start) >= self.window {
            *e = Entry {
                start: now,
                failures: 0,
            };
        }
        e.failures += 1;
        Tracked::Yes
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
        let l = AuthLimiter::new(1, Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert_eq!(l.failed(ip(1), t0), Tracked::Yes);
        assert_eq!(l.failed(ip(2), t0), Tracked::Yes);
        assert_eq!(l.failed(ip(3), t0), Tracked::TableFull);
        assert!(l.allowed(ip(3), t0), "untracked: fails open");
        assert!(!l.allowed(ip(1), t0), "tracked ones stay limited");
        // Once the old entries expire there is room again.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(l.failed(ip(3), later), Tracked::Yes);
        assert!(!l.allowed(ip(3), later));
    }
}
