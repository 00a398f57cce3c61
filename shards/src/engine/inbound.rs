//! What a session does with each packet its client sends. Decoding and validation happen
//! for every packet as it comes; accepted publishes of one read are committed together
//! when the read is done (see [`super::commit`]).

use im_protocol::packet::cmd;
use im_protocol::packet::pub_err as code;
use im_protocol::{ClientPacket, MsgId, ServerPacket, Targets};

use super::commit::{group_ack, Accepted};
use super::dedupe::Seen;
use super::envelope;
use super::{CloseReason, ConnId, Engine};
use crate::config::Persist;

impl Engine {
    /// A hint that `bytes`, a packet from `conn`, will be handled soon: starts loading what
    /// its duplicate check will read first. Handling a read's packets one by one, each
    /// check waited for its own cache miss; hinted a few packets ahead, the misses overlap.
    /// Changes nothing; a packet that does not decode is left to [`Engine::handle`].
    pub fn prefetch(&self, conn: ConnId, bytes: &[u8]) {
        let Some(s) = self.sessions.get(&conn) else {
            return;
        };
        if let Ok(
            ClientPacket::Publish { msg_id, .. }
            | ClientPacket::GroupPublish { msg_id, .. }
            | ClientPacket::GroupPartPublish { msg_id, .. },
        ) = ClientPacket::decode(bytes)
        {
            self.dedupe.prefetch(s.uid, msg_id);
        }
    }

    /// One packet from a client.
    pub(super) fn on_packet(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(s) = self.sessions.get(&conn) else {
            return;
        };
        // A session that is ending accepts nothing more.
        if s.stop.is_some() {
            return;
        }
        if let Some(&c) = bytes.first() {
            self.stats.packet_in(c);
        }
        let packet = match ClientPacket::decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(uid = s.uid, error = %e, "invalid packet");
                return self.stop(conn, CloseReason::InvalidPacket);
            }
        };
        match packet {
            ClientPacket::Connect { .. } => {
                tracing::debug!(uid = s.uid, "second CONNECT on a session");
                self.stop(conn, CloseReason::InvalidPacket);
            }
            ClientPacket::Publish {
                to,
                msg_id,
                payload,
            } => self.accept_publish(conn, to, msg_id, payload),
            ClientPacket::PubAck { msg_id } => self.on_ack(conn, cmd::PUB_ACK, msg_id),
            ClientPacket::GroupPubAck { msg_id } => self.on_ack(conn, cmd::GROUP_PUB_ACK, msg_id),
            ClientPacket::GroupPartPubAck { msg_id } => {
                self.on_ack(conn, cmd::GROUP_PART_PUB_ACK, msg_id)
            }
            ClientPacket::GroupPublish {
                group,
                msg_id,
                payload,
            } => self.accept_group(conn, group, msg_id, None, payload),
            ClientPacket::GroupPartPublish {
                group,
                msg_id,
                targets,
                payload,
            } => self.accept_group(conn, group, msg_id, Some(targets), payload),
            ClientPacket::Ping => self.send_packet(conn, &ServerPacket::PingResp),
            ClientPacket::PingResp => {}
            ClientPacket::Disconnect => self.stop(conn, CloseReason::ClientDisconnect),
        }
    }

    /// The read is over: the client was heard from, and its accepted publishes start
    /// their commit. A session told to stop ends once they are committed.
    pub(super) fn read_done(&mut self, conn: ConnId, stop: Option<CloseReason>) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        s.last_rx = self.now;
        s.ping_sent = None;
        if let Some(r) = stop {
            s.stop = s.stop.or(Some(r));
        }
        let accepted = std::mem::take(&mut s.accepting);
        let uid = s.uid;
        if !accepted.is_empty() {
            self.start_commits(conn, uid, accepted);
        }
        self.close_if_stopped(conn);
    }

    /// Marks the session as ending; nothing more is read from it.
    fn stop(&mut self, conn: ConnId, reason: CloseReason) {
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.stop = s.stop.or(Some(reason));
        }
    }

    /// A refused publish: PUB_ERR for clients that asked for extensions, otherwise no ack.
    pub(super) fn refuse(&mut self, conn: ConnId, msg_id: &MsgId, code: u32, why: &'static str) {
        tracing::debug!(session = conn, code, why, "publish refused");
        self.stats.refused(code);
        if self.sessions.get(&conn).is_some_and(|s| s.ext) {
            self.send_packet(conn, &ServerPacket::PubErr { msg_id, code });
        }
    }

    fn accept_publish(&mut self, conn: ConnId, to: u32, msg_id: &MsgId, payload: &[u8]) {
        if to == 0 {
            return self.refuse(conn, msg_id, code::USER_NOT_FOUND, "uid 0 is not a user");
        }
        let Some(s) = self.sessions.get(&conn) else {
            return;
        };
        let (uid, role) = (s.uid, s.role);
        let waits = self.cfg.delivery.persist == Persist::BeforeAck;
        match self.dedupe.admit(uid, msg_id, self.now, waits) {
            Seen::First => {}
            // A retransmission: the first copy is delivered; just ack again.
            Seen::Committed => return self.send_packet(conn, &ServerPacket::PubAck { msg_id }),
            Seen::Committing => return,
        }
        match envelope::push_frame(self.cfg.delivery.envelope, uid, to, role, msg_id, payload) {
            Ok(frame) => self.accepting(
                conn,
                Accepted::Direct {
                    to,
                    msg_id: *msg_id,
                    frame,
                },
            ),
            Err(e) => {
                self.dedupe.forget(uid, msg_id);
                tracing::debug!(error = %e);
                self.refuse(conn, msg_id, code::ARGS, "payload too large");
            }
        }
    }

    fn accept_group(
        &mut self,
        conn: ConnId,
        gid: u32,
        msg_id: &MsgId,
        targets: Option<Targets<'_>>,
        payload: &[u8],
    ) {
        let max = self.cfg.groups.max_part_targets;
        let listed = match &targets {
            None => None,
            Some(t) if t.is_empty() || t.len() > max => {
                return self.refuse(
                    conn,
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
        let Some(s) = self.sessions.get(&conn) else {
            return;
        };
        let (uid, role) = (s.uid, s.role);
        match self.dedupe.admit(uid, msg_id, self.now, true) {
            Seen::First => {}
            Seen::Committed => return self.send_packet(conn, &group_ack(listed.is_some(), msg_id)),
            Seen::Committing => return,
        }
        let mode = self.cfg.delivery.envelope;
        match envelope::group_frame(mode, uid, gid, role, msg_id, payload, targets) {
            Ok(frame) => self.accepting(
                conn,
                Accepted::Group {
                    gid,
                    msg_id: *msg_id,
                    frame,
                    targets: listed,
                },
            ),
            Err(e) => {
                self.dedupe.forget(uid, msg_id);
                tracing::debug!(error = %e);
                self.refuse(conn, msg_id, code::ARGS, "payload too large");
            }
        }
    }

    fn accepting(&mut self, conn: ConnId, a: Accepted) {
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.accepting.push(a);
        }
    }
}
