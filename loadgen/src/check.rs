//! The receiver-side check of one stream (one sender's messages to one receiver): every
//! sequence number is classified as in order, late (it arrived after a later one: counted as
//! reordered) or seen before (duplicated); at the end, the numbers the server acknowledged
//! but the receiver never saw are lost.

use std::collections::HashSet;

/// How an arriving sequence number was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    InOrder,
    Reordered,
    Duplicate,
}

/// One stream's receive state.
#[derive(Debug, Default)]
pub struct StreamCheck {
    /// One past the highest number seen.
    next: u32,
    /// Numbers below `next` not seen yet.
    missing: HashSet<u32>,
}

impl StreamCheck {
    pub fn observe(&mut self, seq: u32) -> Verdict {
        if seq >= self.next {
            self.missing.extend(self.next..seq);
            self.next = seq + 1;
            Verdict::InOrder
        } else if self.missing.remove(&seq) {
            Verdict::Reordered
        } else {
            Verdict::Duplicate
        }
    }

    /// Numbers `0..acked` (those the server accepted) that never arrived.
    pub fn lost(&self, acked: u32) -> u64 {
        let gaps = self.missing.iter().filter(|&&s| s < acked).count() as u64;
        gaps + acked.saturating_sub(self.next) as u64
    }

    /// How many distinct numbers arrived.
    #[cfg(test)]
    pub fn received(&self) -> u64 {
        self.next as u64 - self.missing.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_has_nothing_lost() {
        let mut c = StreamCheck::default();
        for s in 0..100 {
            assert_eq!(c.observe(s), Verdict::InOrder);
        }
        assert_eq!(c.lost(100), 0);
        assert_eq!(c.received(), 100);
    }

    #[test]
    fn classifies_late_duplicate_and_lost() {
        let mut c = StreamCheck::default();
        assert_eq!(c.observe(0), Verdict::InOrder);
        assert_eq!(c.observe(3), Verdict::InOrder); // 1 and 2 now missing
        assert_eq!(c.observe(2), Verdict::Reordered);
        assert_eq!(c.observe(2), Verdict::Duplicate);
        assert_eq!(c.observe(0), Verdict::Duplicate);
        // Acked 0..6: 1 never came, 4 and 5 never came.
        assert_eq!(c.lost(6), 3);
        // Only 0..2 acked (3 was sent but not acked): 1 is lost.
        assert_eq!(c.lost(2), 1);
        assert_eq!(c.received(), 3);
    }

    #[test]
    fn nothing_received_loses_everything_acked() {
        let c = StreamCheck::default();
        assert_eq!(c.lost(5), 5);
        assert_eq!(c.lost(0), 0);
    }
}
