//! A group message on its way out, whoever sent it (a session, or the control plane's
//! server-side send): membership checks, the optional stored copies, then one batch per
//! owner shard. Split in two — [`prepare`] (may refuse) and [`route`] — so the caller acks
//! in between: the ack never precedes the checks (nor, in `before_ack` mode, the write).

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use im_protocol::packet::pub_err as code;
use im_storage::OfflineMessage;

use crate::config::Persist;
use crate::fanout::{Batch, Uids};
use crate::groups::split;
use crate::mailbox::Mail;
use crate::shard::Shard;
use crate::stats::Msg;

/// Who sends a group message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    pub uid: u32,
    /// The sending session: it gets no copy and the sender must be a member. `None` for a
    /// server-side send: no membership needed, and the sender's own sessions (if it is a
    /// member) receive it like everyone else's.
    pub session: Option<u64>,
}

/// Why a group message was refused (PUB_ERR code, log reason).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal {
    pub code: u32,
    pub why: &'static str,
}

fn refusal(code: u32, why: &'static str) -> Refusal {
    Refusal { code, why }
}

/// A group message that passed every check and is ready to route.
pub(crate) struct Prepared {
    origin: Origin,
    frame: Bytes,
    parts: Vec<Uids>,
    seqs: Vec<Option<Vec<u64>>>,
    /// The sender is a recipient: its other sessions get the message from here.
    to_sender: bool,
}

/// Checks membership (cached), builds the per-shard recipient lists and, in `before_ack`
/// mode, stores a copy for every recipient (but a sending session's user) in one write.
pub(crate) async fn prepare(
    shard: &Rc<Shard>,
    origin: Origin,
    gid: u32,
    frame: &Bytes,
    targets: Option<&[u32]>,
) -> Result<Prepared, Refusal> {
    let members = shard.groups.members(gid).await.map_err(|e| {
        tracing::warn!(gid, error = %e, "group lookup failed; refusing");
        refusal(code::SERVER_INTERNAL, "group store unavailable")
    })?;
    if members.sorted.is_empty() {
        return Err(refusal(code::GROUP_NOT_FOUND, "group not found"));
    }
    if origin.session.is_some() && !members.contains(origin.uid) {
        return Err(refusal(code::NOT_IN_GROUP, "sender not in group"));
    }
    let shards = shard.mesh.shards();
    let mut parts: Vec<Uids> = match targets {
        Some(t) => {
            if !t.iter().all(|u| members.contains(*u)) {
                return Err(refusal(code::NOT_IN_GROUP, "target not in group"));
            }
            split(t, shards).into_iter().map(Uids::Owned).collect()
        }
        None => members
            .by_shard
            .iter()
            .map(|p| Uids::Shared(p.clone()))
            .collect(),
    };
    // Only a sending session's user is handled apart (its other sessions, never stored).
    let to_sender =
        origin.session.is_some() && targets.is_none_or(|t| t.binary_search(&origin.uid).is_ok());
    let mut seqs: Vec<Option<Vec<u64>>> = (0..shards).map(|_| None).collect();
    if shard.cfg.delivery.persist == Persist::BeforeAck {
        let skip = origin.session.map(|_| origin.uid);
        parts = parts
            .into_iter()
            .map(|p| Uids::Owned(p.iter().copied().filter(|u| Some(*u) != skip).collect()))
            .collect();
        let expires_at_ms = shard.expiry_ms();
        let msgs: Vec<OfflineMessage> = parts
            .iter()
            .flat_map(|p| p.iter())
            .map(|&uid| OfflineMessage {
                uid,
                frame: frame.clone(),
                expires_at_ms,
            })
            .collect();
        let all = shard.store.append(msgs).await.map_err(|e| {
            tracing::error!(gid, error = %e, "cannot store group message; refusing it");
            refusal(code::SERVER_INTERNAL, "storage unavailable")
        })?;
        let mut all = all.into_iter();
        for (i, p) in parts.iter().enumerate() {
            seqs[i] = Some(all.by_ref().take(p.len()).collect());
        }
    }
    shard.stats.message(Msg::Accepted, 1);
    shard
        .stats
        .group_message(targets.map_or(members.sorted.len(), <[u32]>::len));
    Ok(Prepared {
        origin,
        frame: frame.clone(),
        parts,
        seqs,
        to_sender,
    })
}

/// Pushes to the sender's other sessions and sends each owner shard its batch.
pub(crate) async fn route(shard: &Rc<Shard>, p: Prepared) {
    let accepted = Instant::now();
    if let (true, Some(session)) = (p.to_sender, p.origin.session) {
        shard.deliver_except(p.origin.uid, p.frame.clone(), session, accepted);
    }
    let exclude = if p.origin.session.is_some() {
        p.origin.uid
    } else {
        0
    };
    for (i, (uids, seqs)) in p.parts.into_iter().zip(p.seqs).enumerate() {
        if uids.is_empty() {
            continue;
        }
        let batch = Batch {
            accepted,
            frame: p.frame.clone(),
            uids,
            seqs,
            exclude,
        };
        if i == shard.id {
            shard.fanout(batch);
        } else {
            shard.mesh.send(shard.id, i, Mail::Fanout(batch)).await;
        }
    }
}
