//! Entry points for the criterion micro-benchmarks (`benches/benches/`), compiled only with
//! the `bench-api` feature: they reach the crate-private hot paths (a mailbox hop between
//! shards, building a group fan-out) without making those types public.

use std::sync::Arc;

use bytes::Bytes;
use im_protocol::MsgId;

use crate::config::Envelope;
use crate::engine::{Batch, Time, Uids};
use crate::mailbox::{Mail, Mesh};

/// Puts one group fan-out batch (a shared frame and member slice, as the server sends them)
/// in the `from → to` mailbox. `false`: the mailbox is full.
pub fn send_batch(mesh: &Mesh, from: usize, to: usize, frame: &Bytes, uids: &Arc<[u32]>) -> bool {
    let batch = Batch {
        accepted: Time::default(),
        frame: frame.clone(),
        uids: Uids::Shared(uids.clone()),
        seqs: None,
        exclude: 0,
    };
    mesh.try_send(from, to, Mail::Fanout(batch)).is_ok()
}

/// Empties shard `me`'s inbox; returns how many mails it held.
pub fn drain(mesh: &Mesh, me: usize) -> usize {
    mesh.drain(me, drop)
}

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
        crate::envelope::group_frame(Envelope::Json, from, group, 1, msg_id, payload, None).ok()?;
    Some((frame, crate::engine::split(members, shards)))
}
