//! Per-shard counters. Each shard writes only its own (relaxed atomics, uncontended: no
//! lock and no shared cache line on the hot path); readers on other threads sum them when
//! asked (the metrics endpoint, tests).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::delivery::code;

/// Refusal codes counted separately; anything else lands in the last slot.
pub const REFUSAL_CODES: [u32; 5] = [
    code::SERVER_INTERNAL,
    code::ARGS,
    code::USER_NOT_FOUND,
    code::GROUP_NOT_FOUND,
    code::NOT_IN_GROUP,
];

/// One shard's counters.
#[derive(Debug, Default)]
pub struct ShardStats {
    refused: [AtomicU64; REFUSAL_CODES.len() + 1],
    group_messages: AtomicU64,
    group_members: AtomicU64,
}

impl ShardStats {
    pub(crate) fn refused(&self, code: u32) {
        let i = REFUSAL_CODES
            .iter()
            .position(|c| *c == code)
            .unwrap_or(REFUSAL_CODES.len());
        self.refused[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn group_message(&self, members: usize) {
        self.group_messages.fetch_add(1, Ordering::Relaxed);
        self.group_members
            .fetch_add(members as u64, Ordering::Relaxed);
    }

    /// Publishes refused with `code` (one of [`REFUSAL_CODES`]) since start.
    pub fn refusals(&self, code: u32) -> u64 {
        REFUSAL_CODES
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.refused[i].load(Ordering::Relaxed))
    }

    /// Group messages accepted, and the total of their group sizes.
    pub fn group_messages(&self) -> (u64, u64) {
        (
            self.group_messages.load(Ordering::Relaxed),
            self.group_members.load(Ordering::Relaxed),
        )
    }
}
