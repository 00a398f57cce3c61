//! Entry points for the criterion micro-benchmarks (`benches/benches/`), compiled only with
//! the `bench-api` feature: what the sending shard does for one group message.

use bytes::Bytes;
use im_protocol::MsgId;

use crate::config::Envelope;

/// What the sending shard does for one group message: the push frame encoded once (JSON
/// envelope) and the members split by owner shard.
pub fn build_fanout(
    from: u32,
    group: u32,
    msg_id: &MsgId,
    payload: &[u8],
    members: &[u32],
    shards: usize,
) -> Option<(Bytes, Vec<Vec<u32>>)> {
    let frame =
        crate::engine::envelope::group_frame(Envelope::Json, from, group, 1, msg_id, payload, None)
            .ok()?;
    Some((frame, crate::engine::split(members, shards)))
}

/// The 1:1 push frame of a message with the JSON envelope: what the sending shard builds for
/// every accepted PUBLISH.
pub fn push_frame(from: u32, to: u32, msg_id: &MsgId, payload: &[u8]) -> Option<Bytes> {
    crate::engine::envelope::push_frame(Envelope::Json, from, to, 1, msg_id, payload).ok()
}

/// A shard's duplicate-publish memory ([`crate::engine::dedupe::Dedupe`]), for timing
/// `admit` at a busy sender's steady state (every id new, the oldest evicted).
pub struct Dedupe(crate::engine::dedupe::Dedupe);

impl Dedupe {
    /// A window of `window_us` microseconds, at most `per_sender` ids per sender.
    pub fn new(window_us: u64, per_sender: usize) -> Self {
        Self(crate::engine::dedupe::Dedupe::new(window_us, per_sender))
    }

    /// True: the id is new for `uid` (and now remembered).
    pub fn admit(&mut self, uid: u32, id: &MsgId, now_us: u64) -> bool {
        let seen = self.0.admit(uid, id, crate::engine::Time(now_us), false);
        seen == crate::engine::dedupe::Seen::First
    }
}
