//! What every generated message carries in its 32-byte message id: the run it belongs to, the
//! stream it is part of, its sequence number in that stream and its send time. The id passes
//! through the server untouched (the payload may be wrapped in an envelope), so the receiver
//! can check loss, duplication and order and measure latency from the id alone. For MQTT,
//! where there is no message id, the same 32 bytes open the payload.
//!
//! Layout (ASCII hex, so the id is also valid text): run 8, stream 6, seq 8, send time in
//! microseconds since the load generator started 10 (12.7 days before it wraps).

use std::sync::OnceLock;
use std::time::Instant;

/// Bytes of a stamp.
pub const LEN: usize = 32;

/// Streams are numbered in 24 bits.
pub const MAX_STREAMS: u32 = 1 << 24;

static START: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the process's clock origin (one monotonic clock shared by every thread,
/// so a send time taken on one thread compares with a receive time taken on another).
pub fn now_us() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The decoded contents of a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub run: u32,
    pub stream: u32,
    pub seq: u32,
    pub t_us: u64,
}

impl Stamp {
    pub fn encode(&self) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        put_hex(&mut out[0..8], self.run as u64);
        put_hex(&mut out[8..14], self.stream as u64);
        put_hex(&mut out[14..22], self.seq as u64);
        put_hex(&mut out[22..32], self.t_us);
        out
    }

    /// `None` when the bytes are not a stamp (another client's message, say).
    pub fn decode(id: &[u8]) -> Option<Stamp> {
        if id.len() < LEN {
            return None;
        }
        Some(Stamp {
            run: get_hex(&id[0..8])? as u32,
            stream: get_hex(&id[8..14])? as u32,
            seq: get_hex(&id[14..22])? as u32,
            t_us: get_hex(&id[22..32])?,
        })
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn put_hex(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

fn get_hex(s: &[u8]) -> Option<u64> {
    s.iter().try_fold(0u64, |acc, &c| {
        let d = (c as char).to_digit(16)?;
        Some(acc << 4 | d as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let s = Stamp {
            run: 0xdead_beef,
            stream: 0xab_cdef,
            seq: 7,
            t_us: 0x12_3456_789a,
        };
        let id = s.encode();
        assert_eq!(&id, b"deadbeefabcdef00000007123456789a");
        assert_eq!(Stamp::decode(&id), Some(s));
        assert_eq!(Stamp::decode(b"not a stamp at all, 32 bytes ..."), None);
        assert_eq!(Stamp::decode(b"short"), None);
    }
}
