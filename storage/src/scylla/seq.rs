//! Per-user sequence numbers without a read before every write.
//!
//! One server process owns the offline queues, so sequence numbers come from a
//! process-wide hybrid clock: `max(last + 1, now in microseconds)`. They increase in append
//! order for every user, and stay above everything stored before a restart because the clock
//! never runs past a *reserved floor* kept in the `offline_meta` table: before a number
//! above the floor is handed out, the floor is raised to a minute ahead and written first.
//! A restart starts from the stored floor, so even a wall clock that stepped back cannot
//! reuse a number.

/// How far ahead of the clock the floor is reserved, in microseconds.
pub const RESERVE_US: u64 = 60_000_000;

/// The hybrid clock.
#[derive(Debug)]
pub struct SeqClock {
    last: u64,
    reserved: u64,
}

impl SeqClock {
    /// Starts above `stored_floor` (0 when none was stored).
    pub fn new(stored_floor: u64) -> Self {
        Self {
            last: stored_floor,
            reserved: stored_floor,
        }
    }

    /// Hands out `n` numbers at wall time `now_us`. Returns them and, when the reserved
    /// floor must move first, the new floor to store before using them.
    pub fn take(&mut self, n: usize, now_us: u64) -> (Vec<u64>, Option<u64>) {
        let first = (self.last + 1).max(now_us);
        let last = first + n.saturating_sub(1) as u64;
        let mut new_floor = None;
        if n > 0 && last > self.reserved {
            self.reserved = last + RESERVE_US;
            new_floor = Some(self.reserved);
        }
        if n > 0 {
            self.last = last;
        }
        ((first..=last).take(n).collect(), new_floor)
    }

    /// Undoes a reservation that could not be stored: the next call will try again.
    pub fn unreserve(&mut self, floor: u64) {
        if self.reserved == floor {
            self.reserved = self.last.min(floor);
        }
    }
}

/// Wall time in microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_increase_even_when_the_clock_stands_still_or_steps_back() {
        let mut c = SeqClock::new(0);
        let (a, floor) = c.take(3, 1_000);
        assert_eq!(a, [1_000, 1_001, 1_002]);
        assert_eq!(floor, Some(1_002 + RESERVE_US));
        let (b, floor) = c.take(2, 500);
        assert_eq!(b, [1_003, 1_004]);
        assert_eq!(floor, None);
    }

    #[test]
    fn a_restart_starts_above_the_stored_floor() {
        let mut c = SeqClock::new(5_000);
        let (a, floor) = c.take(1, 10);
        assert_eq!(a, [5_001]);
        assert_eq!(floor, Some(5_001 + RESERVE_US));
    }

    #[test]
    fn an_unstored_reservation_is_retried() {
        let mut c = SeqClock::new(0);
        let (_, floor) = c.take(1, 100);
        let floor = floor.unwrap();
        c.unreserve(floor);
        let (_, again) = c.take(1, 100);
        assert!(again.is_some());
    }
}
