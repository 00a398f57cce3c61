//! Reconnect delays: exponential back-off with full jitter, so many clients dropped at
//! once do not come back at once.

use std::time::Duration;

use rand::Rng;

/// How long to wait before each reconnect attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first delay.
    pub initial: Duration,
    /// The largest ceiling; the delay ceiling doubles per failed attempt up to it.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The ceiling for attempt `n` (0-based): `initial × 2ⁿ`, at most `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// A delay for attempt `n`: uniformly random between half the ceiling and the ceiling
    /// (never zero, never a thundering herd).
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = (ceiling - half).as_micros() as u64;
        half + Duration::from_micros(rand::rng().random_range(0..=spread))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(4), Duration::from_millis(1600));
        assert_eq!(b.ceiling(5), Duration::from_secs(2));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn delays_are_jittered_within_half_and_full_ceiling() {
        let b = Backoff::default();
        let delays: Vec<Duration> = (0..200).map(|_| b.delay(3)).collect();
        for d in &delays {
            assert!(*d >= b.ceiling(3) / 2 && *d <= b.ceiling(3), "{d:?}");
        }
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "jitter spreads the delays");
    }
}
