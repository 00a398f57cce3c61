//! The command layer: what a session does with each packet its client sends, and how an
//! accepted message reaches its recipients' sessions.
//!
//! Decoding and validation happen synchronously for every packet of a read (the
//! [`handle_packet`] step); accepted publishes of that read are then committed together
//! ([`commit`]): in `before_ack` mode with one storage write for the 1:1 messages of the
//! batch before any PUB_ACK, in `on_failure` mode acked at once. Then each goes to its owner
//! shard, in order. Group publishes are committed after the membership checks, which may
//! wait on the group store (see [`crate::groups`]).

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use im_protocol::packet::cmd;
use im_protocol::packet::pub_err as code;
use im_protocol::{ClientPacket, MsgId, ServerPacket, Targets};
use im_storage::OfflineMessage;

use crate::config::Persist;
use crate::envelope;
use crate::group_send::{self, Origin};
use crate::session::{CloseReason, Session};
use crate::stats::Msg;

/// A message for one user, sent to the user's owner shard.
pub(crate) struct Delivery {
    pub to: u32,
    /// When the sender's publish was accepted (for the delivery-latency histogram).
    pub accepted: Instant,
    /// The encoded push packet, shared.
    pub frame: Bytes,
    /// Set when a stored copy exists (`before_ack` mode).
    pub seq: Option<u64>,
}

/// A publish that passed validation, waiting to be committed.
pub(crate) enum Accepted {
    Direct {
        to: u32,
        msg_id: MsgId,
        frame: Bytes,
    },
    Group(GroupPublish),
}

/// A group publish that passed validation; membership is checked at commit.
pub(crate) struct GroupPublish {
    gid: u32,
    msg_id: MsgId,
    frame: Bytes,
    /// GROUP_PART_PUBLISH: the listed uids, ascending, once each.
    targets: Option<Vec<u32>>,
}

impl GroupPublish {
    fn ack(&self) -> ServerPacket<'_> {
        group_ack(self.targets.is_some(), &self.msg_id)
    }
}

fn group_ack(part: bool, msg_id: &MsgId) -> ServerPacket<'_> {
    if part {
        ServerPacket::GroupPartPubAck { msg_id }
    } else {
        ServerPacket::GroupPubAck { msg_id }
    }
}

/// Handles one packet. Returns a close reason when the session must end.
pub(crate) fn handle_packet(
    s: &Session,
    bytes: &[u8],
    accepted: &mut Vec<Accepted>,
) -> Option<CloseReason> {
    if let Some(&c) = bytes.first() {
        s.shard.stats.packet_in(c);
    }
    let packet = match ClientPacket::decode(bytes) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(uid = s.uid, error = %e, "invalid packet");
            return Some(CloseReason::InvalidPacket);
        }
    };
    match packet {
        ClientPacket::Connect { .. } => {
            tracing::debug!(uid = s.uid, "second CONNECT on a session");
            return Some(CloseReason::InvalidPacket);
        }
        ClientPacket::Publish {
            to,
            msg_id,
            payload,
        } => accept_publish(s, to, msg_id, payload, accepted),
        ClientPacket::PubAck { msg_id } => s.on_ack(cmd::PUB_ACK, msg_id),
        ClientPacket::GroupPubAck { msg_id } => s.on_ack(cmd::GROUP_PUB_ACK, msg_id),
        ClientPacket::GroupPartPubAck { msg_id } => s.on_ack(cmd::GROUP_PART_PUB_ACK, msg_id),
        ClientPacket::GroupPublish {
            group,
            msg_id,
            payload,
        } => accept_group(s, group, msg_id, None, payload, accepted),
        ClientPacket::GroupPartPublish {
            group,
            msg_id,
            targets,
            payload,
        } => accept_group(s, group, msg_id, Some(targets), payload, accepted),
        ClientPacket::Ping => s.send_packet(&ServerPacket::PingResp),
        ClientPacket::PingResp => {}
        ClientPacket::Disconnect => return Some(CloseReason::ClientDisconnect),
    }
    None
}

/// A refused publish: PUB_ERR for clients that asked for extensions, otherwise no ack.
fn refuse(s: &Session, msg_id: &MsgId, code: u32, why: &'static str) {
    tracing::debug!(uid = s.uid, code, why, "publish refused");
    s.shard.stats.refused(code);
    if s.ext {
        s.send_packet(&ServerPacket::PubErr { msg_id, code });
    }
}

fn accept_publish(
    s: &Session,
    to: u32,
    msg_id: &MsgId,
    payload: &[u8],
    accepted: &mut Vec<Accepted>,
) {
    if to == 0 {
        return refuse(s, msg_id, code::USER_NOT_FOUND, "uid 0 is not a user");
    }
    let shard = &s.shard;
    if !shard
        .dedupe
        .borrow_mut()
        .first_time(s.uid, msg_id, Instant::now())
    {
        // A retransmission: the first copy is (being) delivered; just ack again.
        s.send_packet(&ServerPacket::PubAck { msg_id });
        return;
    }
    let envelope = shard.cfg.delivery.envelope;
    match envelope::push_frame(envelope, s.uid, to, s.role, msg_id, payload) {
        Ok(frame) => accepted.push(Accepted::Direct {
            to,
            msg_id: *msg_id,
            frame,
        }),
        Err(e) => {
            shard.dedupe.borrow_mut().forget(s.uid, msg_id);
            refuse(s, msg_id, code::ARGS, "payload too large");
            tracing::debug!(error = %e);
        }
    }
}

fn accept_group(
    s: &Session,
    gid: u32,
    msg_id: &MsgId,
    targets: Option<Targets<'_>>,
    payload: &[u8],
    accepted: &mut Vec<Accepted>,
) {
    let shard = &s.shard;
    let listed = match &targets {
        None => None,
        Some(t) if t.is_empty() || t.len() > shard.cfg.groups.max_part_targets => {
            return refuse(
                s,
                msg_id,
                code::ARGS,
                "part publish with no or too many targets",
            );
        }
        Some(t) => {
            let mut v: Vec<u32> = t.iter().collect();
            v.sort_unstable();
            v.dedup();
            Some(v)
        }
    };
    if !shard
        .dedupe
        .borrow_mut()
        .first_time(s.uid, msg_id, Instant::now())
    {
        s.send_packet(&group_ack(listed.is_some(), msg_id));
        return;
    }
    let envelope = shard.cfg.delivery.envelope;
    match envelope::group_frame(envelope, s.uid, gid, s.role, msg_id, payload, targets) {
        Ok(frame) => accepted.push(Accepted::Group(GroupPublish {
            gid,
            msg_id: *msg_id,
            frame,
            targets: listed,
        })),
        Err(e) => {
            shard.dedupe.borrow_mut().forget(s.uid, msg_id);
            refuse(s, msg_id, code::ARGS, "payload too large");
            tracing::debug!(error = %e);
        }
    }
}

/// Acks and routes the publishes accepted from one read, per the persistence mode.
pub(crate) async fn commit(s: &Rc<Session>, accepted: Vec<Accepted>) {
    let shard = s.shard.clone();
    shard.mesh.route_started();
    let mut direct = Vec::with_capacity(accepted.len());
    let mut groups = Vec::new();
    for a in accepted {
        match a {
            Accepted::Direct { to, msg_id, frame } => direct.push((to, msg_id, frame)),
            Accepted::Group(g) => groups.push(g),
        }
    }
    if !direct.is_empty() {
        commit_direct(s, direct).await;
    }
    for g in groups {
        commit_group(s, g).await;
    }
    shard.mesh.route_done();
}

async fn commit_direct(s: &Rc<Session>, accepted: Vec<(u32, MsgId, Bytes)>) {
    let shard = s.shard.clone();
    match shard.cfg.delivery.persist {
        Persist::OnFailure => {
            shard.stats.message(Msg::Accepted, accepted.len() as u64);
            for (to, msg_id, frame) in accepted {
                s.send_packet(&ServerPacket::PubAck { msg_id: &msg_id });
                shard
                    .route(Delivery {
                        to,
                        accepted: Instant::now(),
                        frame,
                        seq: None,
                    })
                    .await;
            }
        }
        Persist::BeforeAck => {
            let expires_at_ms = shard.expiry_ms();
            let msgs = accepted
                .iter()
                .map(|(to, _, frame)| OfflineMessage {
                    uid: *to,
                    frame: frame.clone(),
                    expires_at_ms,
                })
                .collect();
            match shard.store.append(msgs).await {
                Ok(seqs) => {
                    shard.stats.message(Msg::Accepted, accepted.len() as u64);
                    for ((to, msg_id, frame), seq) in accepted.into_iter().zip(seqs) {
                        s.send_packet(&ServerPacket::PubAck { msg_id: &msg_id });
                        shard
                            .route(Delivery {
                                to,
                                accepted: Instant::now(),
                                frame,
                                seq: Some(seq),
                            })
                            .await;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, n = accepted.len(), "cannot store messages; refusing them");
                    for (_, msg_id, _) in &accepted {
                        shard.dedupe.borrow_mut().forget(s.uid, msg_id);
                        refuse(s, msg_id, code::SERVER_INTERNAL, "storage unavailable");
                    }
                }
            }
        }
    }
}

/// Checks membership, acks, and sends one batch per owner shard.
async fn commit_group(s: &Rc<Session>, g: GroupPublish) {
    let shard = s.shard.clone();
    let origin = Origin {
        uid: s.uid,
        session: Some(s.id),
    };
    match group_send::prepare(&shard, origin, g.gid, &g.frame, g.targets.as_deref()).await {
        Ok(prepared) => {
            s.send_packet(&g.ack());
            group_send::route(&shard, prepared).await;
        }
        Err(r) => {
            shard.dedupe.borrow_mut().forget(s.uid, &g.msg_id);
            refuse(s, &g.msg_id, r.code, r.why);
        }
    }
}
