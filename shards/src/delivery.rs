//! The command layer: what a session does with each packet its client sends, and how an
//! accepted message reaches its recipient's sessions.
//!
//! Decoding and validation happen synchronously for every packet of a read (the
//! [`handle_packet`] step); accepted publishes of that read are then committed together
//! ([`commit`]): in `before_ack` mode with one storage write for the batch before any
//! PUB_ACK, in `on_failure` mode acked at once. Then each goes to its owner shard, in order.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use im_protocol::packet::cmd;
use im_protocol::{ClientPacket, MsgId, ServerPacket};
use im_storage::OfflineMessage;

use crate::config::Persist;
use crate::envelope;
use crate::session::{CloseReason, Session};

/// Error codes of seed 004 used in PUB_ERR.
pub mod code {
    pub const SERVER_INTERNAL: u32 = 500;
    pub const ARGS: u32 = 1001;
    pub const USER_NOT_FOUND: u32 = 1101;
    pub const GROUP_NOT_FOUND: u32 = 1201;
}

/// A message for one user, sent to the user's owner shard.
pub(crate) struct Delivery {
    pub to: u32,
    /// The encoded push packet, shared.
    pub frame: Bytes,
    /// Set when a stored copy exists (`before_ack` mode).
    pub seq: Option<u64>,
}

/// A publish that passed validation, waiting to be committed.
pub(crate) struct Accepted {
    to: u32,
    msg_id: MsgId,
    frame: Bytes,
}

/// Handles one packet. Returns a close reason when the session must end.
pub(crate) fn handle_packet(
    s: &Session,
    bytes: &[u8],
    accepted: &mut Vec<Accepted>,
) -> Option<CloseReason> {
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
        ClientPacket::GroupPublish { msg_id, .. }
        | ClientPacket::GroupPartPublish { msg_id, .. } => {
            // Group membership arrives with the groups work; until then no group exists.
            refuse(s, msg_id, code::GROUP_NOT_FOUND, "group not found");
        }
        ClientPacket::Ping => s.send_packet(&ServerPacket::PingResp),
        ClientPacket::PingResp => {}
        ClientPacket::Disconnect => return Some(CloseReason::ClientDisconnect),
    }
    None
}

/// A refused publish: PUB_ERR for clients that asked for extensions, otherwise no ack.
fn refuse(s: &Session, msg_id: &MsgId, code: u32, why: &'static str) {
    tracing::debug!(uid = s.uid, code, why, "publish refused");
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
        Ok(frame) => accepted.push(Accepted {
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

/// Acks and routes the publishes accepted from one read, per the persistence mode.
pub(crate) async fn commit(s: &Rc<Session>, accepted: Vec<Accepted>) {
    let shard = s.shard.clone();
    shard.mesh.route_started();
    match shard.cfg.delivery.persist {
        Persist::OnFailure => {
            for a in accepted {
                s.send_packet(&ServerPacket::PubAck { msg_id: &a.msg_id });
                shard
                    .route(Delivery {
                        to: a.to,
                        frame: a.frame,
                        seq: None,
                    })
                    .await;
            }
        }
        Persist::BeforeAck => {
            let expires_at_ms = shard.expiry_ms();
            let msgs = accepted
                .iter()
                .map(|a| OfflineMessage {
                    uid: a.to,
                    frame: a.frame.clone(),
                    expires_at_ms,
                })
                .collect();
            match shard.store.append(msgs).await {
                Ok(seqs) => {
                    for (a, seq) in accepted.into_iter().zip(seqs) {
                        s.send_packet(&ServerPacket::PubAck { msg_id: &a.msg_id });
                        shard
                            .route(Delivery {
                                to: a.to,
                                frame: a.frame,
                                seq: Some(seq),
                            })
                            .await;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, n = accepted.len(), "cannot store messages; refusing them");
                    for a in &accepted {
                        shard.dedupe.borrow_mut().forget(s.uid, &a.msg_id);
                        refuse(s, &a.msg_id, code::SERVER_INTERNAL, "storage unavailable");
                    }
                }
            }
        }
    }
    shard.mesh.route_done();
}
