//! Per-shard counters. Each shard writes only its own, from its own thread, with a relaxed
//! load and store (no locked instruction, no shared cache line on the hot path); readers on
//! other threads sum them at scrape time (the metrics endpoint, tests) and see whole values.
//! Every writing method is `pub(crate)` and called on the shard's thread: a second writer
//! would lose counts. No per-user or per-group labels anywhere.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use im_protocol::packet::{cmd, pub_err as code};
use im_storage::histogram::{AtomicHistogram, HistogramSnapshot, LATENCY_US};

use crate::auth::AuthError;
use crate::net::transport::TransportKind;

/// Refusal codes counted separately; anything else lands in the last slot.
pub const REFUSAL_CODES: [u32; 5] = [
    code::SERVER_INTERNAL,
    code::ARGS,
    code::USER_NOT_FOUND,
    code::GROUP_NOT_FOUND,
    code::NOT_IN_GROUP,
];

/// Transports, in the order of the per-transport counters.
pub const TRANSPORTS: [&str; 4] = ["tcp", "ws", "tcp_tls", "wss"];

/// Why a CONNECT was refused, in the order of the per-reason counters.
pub const AUTH_FAILURES: [&str; 8] = [
    "bad_username",
    "bad_token",
    "expired",
    "subject_mismatch",
    "callback_denied",
    "callback_unavailable",
    // CONNECT_ACK 5: the address had too many failures in the window.
    "rate_limited",
    // A failure from an address the full limiter table could not track.
    "limiter_full",
];

/// Fan-out size buckets (recipients per group message).
pub const FANOUT_SIZES: &[u64] = &[
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 50_000,
];

/// Counter slots per direction: one per command byte up to the highest the protocol defines
/// (LOGOUT), slot 0 for every byte it does not define, so an invalid command is never
/// counted as a real one.
const COMMANDS: usize = cmd::LOGOUT as usize + 1;

/// The counter slot of a command byte: itself when the protocol defines it, else 0.
fn slot(c: u8) -> usize {
    if cmd::is_command(c) {
        c as usize
    } else {
        0
    }
}

/// Message counters (see [`ShardStats::messages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    /// Accepted from a sender (1:1 or group message).
    Accepted,
    /// Pushed to a session (first push; one per recipient session).
    Delivered,
    /// Acked by a recipient session.
    Acked,
    /// Pushed again after no ack.
    Redelivered,
    /// Written to the offline store for a recipient that could not take it.
    StoredOffline,
    /// Pushed from the offline store after a login.
    Drained,
    /// Handed to another node of the cluster (the recipient's home), per recipient.
    Forwarded,
}

pub const MSG_KINDS: [(Msg, &str); 7] = [
    (Msg::Accepted, "accepted"),
    (Msg::Delivered, "delivered"),
    (Msg::Acked, "acked"),
    (Msg::Redelivered, "redelivered"),
    (Msg::StoredOffline, "stored_offline"),
    (Msg::Drained, "drained"),
    (Msg::Forwarded, "forwarded"),
];

/// One shard's counters.
#[derive(Debug)]
pub struct ShardStats {
    connections: [AtomicI64; TRANSPORTS.len()],
    connects: AtomicU64,
    auth_failures: [AtomicU64; AUTH_FAILURES.len()],
    packets_in: [AtomicU64; COMMANDS],
    packets_out: [AtomicU64; COMMANDS],
    messages: [AtomicU64; MSG_KINDS.len()],
    refused: [AtomicU64; REFUSAL_CODES.len() + 1],
    send_queue_overflows: AtomicU64,
    relayed: AtomicU64,
    sleeping: AtomicI64,
    delivery_us: AtomicHistogram,
    fanout_size: AtomicHistogram,
}

impl Default for ShardStats {
    fn default() -> Self {
        Self {
            connections: Default::default(),
            connects: AtomicU64::new(0),
            auth_failures: Default::default(),
            packets_in: std::array::from_fn(|_| AtomicU64::new(0)),
            packets_out: std::array::from_fn(|_| AtomicU64::new(0)),
            messages: Default::default(),
            refused: Default::default(),
            send_queue_overflows: AtomicU64::new(0),
            relayed: AtomicU64::new(0),
            sleeping: AtomicI64::new(0),
            delivery_us: AtomicHistogram::new(LATENCY_US),
            fanout_size: AtomicHistogram::new(FANOUT_SIZES),
        }
    }
}

fn bump(c: &AtomicU64) {
    add(c, 1);
}

/// Adds to a counter only this shard's thread writes: a plain load and store. A relaxed
/// `fetch_add` is a locked instruction on x86, which also waits for every earlier store to
/// leave the store buffer; flat out a delivery bumps about nine counters. Readers on other
/// threads still see whole values, never a torn one.
fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

fn transport(kind: TransportKind) -> usize {
    match kind {
        TransportKind::Tcp => 0,
        TransportKind::Ws => 1,
        TransportKind::TcpTls => 2,
        TransportKind::Wss => 3,
    }
}

impl ShardStats {
    pub(crate) fn session_opened(&self, kind: TransportKind) {
        let c = &self.connections[transport(kind)];
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        bump(&self.connects);
    }

    pub(crate) fn session_closed(&self, kind: TransportKind) {
        let c = &self.connections[transport(kind)];
        c.store(c.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
    }

    pub(crate) fn auth_failed(&self, e: &AuthError) {
        let i = match e {
            AuthError::BadUsername => 0,
            AuthError::BadToken(_) => 1,
            AuthError::Expired => 2,
            AuthError::SubjectMismatch => 3,
        };
        bump(&self.auth_failures[i]);
    }

    /// A CONNECT refused by the limiter (`true`), or a failure it could not track.
    /// A login relayed to its home node (cluster).
    pub(crate) fn relayed(&self) {
        bump(&self.relayed);
    }

    /// Logins relayed to their home node since start.
    pub fn relayed_logins(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }

    pub(crate) fn limiter(&self, refused: bool) {
        bump(&self.auth_failures[if refused { 6 } else { 7 }]);
    }

    /// The HTTP callback refused (`denied`) or could not decide.
    pub(crate) fn callback_failed(&self, denied: bool) {
        bump(&self.auth_failures[if denied { 4 } else { 5 }]);
    }

    pub(crate) fn packet_in(&self, cmd: u8) {
        bump(&self.packets_in[slot(cmd)]);
    }

    pub(crate) fn packet_out(&self, cmd: u8) {
        bump(&self.packets_out[slot(cmd)]);
    }

    pub(crate) fn message(&self, m: Msg, n: u64) {
        add(&self.messages[m as usize], n);
    }

    pub(crate) fn refused(&self, code: u32) {
        let i = REFUSAL_CODES
            .iter()
            .position(|c| *c == code)
            .unwrap_or(REFUSAL_CODES.len());
        bump(&self.refused[i]);
    }

    pub(crate) fn send_queue_overflow(&self) {
        bump(&self.send_queue_overflows);
    }

    pub(crate) fn delivered_after(&self, micros: u64) {
        self.delivery_us.observe_one_writer(micros);
    }

    pub(crate) fn group_message(&self, members: usize) {
        self.fanout_size.observe_one_writer(members as u64);
    }

    /// Open sessions on `transport` (index into [`TRANSPORTS`]).
    pub fn connections(&self, transport: usize) -> i64 {
        self.connections[transport].load(Ordering::Relaxed)
    }

    /// Sessions whose connection sleeps (no task; see `net::plain`), as of the shard's last
    /// sweep (once a second).
    pub fn sleeping(&self) -> i64 {
        self.sleeping.load(Ordering::Relaxed)
    }

    pub(crate) fn set_sleeping(&self, n: usize) {
        self.sleeping.store(n as i64, Ordering::Relaxed);
    }

    /// Sessions opened (CONNECT_ACK 0) since start.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Refused CONNECTs for reason `i` (index into [`AUTH_FAILURES`]).
    pub fn auth_failures(&self, i: usize) -> u64 {
        self.auth_failures[i].load(Ordering::Relaxed)
    }

    /// Packets received / sent with command `cmd`; any byte the protocol does not define
    /// (0 among them) reads the shared "unknown" slot.
    pub fn packets(&self, cmd: u8) -> (u64, u64) {
        let i = slot(cmd);
        (
            self.packets_in[i].load(Ordering::Relaxed),
            self.packets_out[i].load(Ordering::Relaxed),
        )
    }

    pub fn messages(&self, m: Msg) -> u64 {
        self.messages[m as usize].load(Ordering::Relaxed)
    }

    /// Publishes refused with `code` (one of [`REFUSAL_CODES`]) since start.
    pub fn refusals(&self, code: u32) -> u64 {
        REFUSAL_CODES
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.refused[i].load(Ordering::Relaxed))
    }

    pub fn send_queue_overflows(&self) -> u64 {
        self.send_queue_overflows.load(Ordering::Relaxed)
    }

    /// Accepted → acked by the recipient, microseconds (live deliveries).
    pub fn delivery_latency(&self) -> HistogramSnapshot {
        self.delivery_us.snapshot()
    }

    /// Recipients per accepted group message.
    pub fn fanout_sizes(&self) -> HistogramSnapshot {
        self.fanout_size.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An invalid command byte is counted as unknown, never as a command that shares its
    /// value modulo the table size (35 used to count as PUBLISH, 36 as PUB_ACK).
    #[test]
    fn invalid_commands_count_as_unknown() {
        let s = ShardStats::default();
        for c in [0u8, 14, 19, 21, 35, 36, 255] {
            s.packet_in(c);
        }
        s.packet_in(im_protocol::cmd::PUB_ACK);
        s.packet_out(im_protocol::cmd::LOGOUT);
        assert_eq!(s.packets(im_protocol::cmd::PUB_ACK), (1, 0));
        assert_eq!(s.packets(im_protocol::cmd::LOGOUT), (0, 1));
        assert_eq!(s.packets(im_protocol::cmd::CONNECT), (0, 0));
        assert_eq!(s.packets(0), (7, 0), "the unknown slot");
    }
}
