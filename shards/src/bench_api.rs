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
