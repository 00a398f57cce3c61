//! Sessions and pushes: opening and closing sessions, pushing to them, acks and timers,
//! routing a message to its owner shard, and the group fan-out queue.

use std::cmp::Reverse;
use std::rc::Rc;

use bytes::Bytes;
use im_protocol::packet::{connack, push_msg_id};
use im_protocol::{MsgId, ServerPacket};

use super::cluster::Remote;
use super::session::{Inflight, PendingPush, Pushed, Session};
use super::{Action, Batch, CloseReason, ConnId, Delivery, Engine, Out};
use crate::config::DuplicateLogin;
use crate::net::transport::TransportKind;
use crate::route::routing::owner_of;
use crate::stats::Msg;

impl Engine {
    /// A CONNECT was accepted for a user this shard owns: applies the duplicate-login
    /// policy, opens the session and starts its offline drain.
    pub(super) fn open(
        &mut self,
        conn: ConnId,
        uid: u32,
        role: u8,
        ext: bool,
        kind: TransportKind,
    ) {
        let existing = self.users.get(&uid).cloned().unwrap_or_default();
        let refuse = if self.stopping {
            Some(connack::UNAVAILABLE)
        } else if self.cfg.session.duplicate_login == DuplicateLogin::Reject && !existing.is_empty()
        {
            Some(connack::DUPLICATE)
        } else {
            None
        };
        if let Some(code) = refuse {
            self.out.push(Action::Write {
                conn,
                out: Out::encode(&ServerPacket::ConnectAck { code }),
            });
            if kind.is_ws() {
                self.out.push(Action::Write {
                    conn,
                    out: Out::Raw(ws_close(1000)),
                });
            }
            self.out.push(Action::Write {
                conn,
                out: Out::Close,
            });
            return;
        }
        let kick = match self.cfg.session.duplicate_login {
            DuplicateLogin::KickOld => existing.len(),
            DuplicateLogin::Multi => {
                (existing.len() + 1).saturating_sub(self.cfg.session.max_devices)
            }
            DuplicateLogin::Reject => 0,
        };
        for c in existing.into_iter().take(kick) {
            self.close(c, CloseReason::Kicked);
        }
        self.sessions.insert(
            conn,
            Box::new(Session::new(conn, uid, role, ext, kind, self.now)),
        );
        self.users.entry(uid).or_default().push(conn);
        self.stats.session_opened(kind);
        self.arm(conn);
        self.send(
            conn,
            Out::encode(&ServerPacket::ConnectAck {
                code: connack::ACCEPTED,
            }),
        );
        tracing::debug!(uid, session = conn, transport = kind.name(), "session open");
        self.fetch_page(conn);
    }

    /// Queues an item for the writer; closes the session if the client is not reading.
    pub(super) fn send(&mut self, conn: ConnId, out: Out) {
        let limit = self.cfg.session.send_queue;
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        s.queued += 1;
        let overflow = s.queued > limit;
        self.writes += 1;
        if let Some(&c) = out.packet().and_then(<[u8]>::first) {
            self.stats.packet_out(c);
        }
        self.out.push(Action::Write { conn, out });
        if overflow {
            tracing::debug!(session = conn, limit, "send queue full");
            self.close(conn, CloseReason::SlowConsumer);
        }
    }

    pub(super) fn send_packet(&mut self, conn: ConnId, p: &ServerPacket<'_>) {
        self.send(conn, Out::encode(p));
    }

    /// The writer wrote `n` queued items.
    pub(super) fn written(&mut self, conn: ConnId, n: usize) {
        if let Some(s) = self.sessions.get_mut(&conn) {
            let done = n.min(s.queued);
            s.queued -= done;
            self.writes -= done;
        }
    }

    /// Pushes a message to a session (or holds it while the offline backlog drains).
    pub(super) fn push(&mut self, conn: ConnId, push: Rc<PendingPush>) {
        if let Some(seq) = push.seq {
            if self.acked_through_drain(push.uid, seq) {
                // Delivered and acked from the store while this copy was on its way.
                return self.acked(&push);
            }
            if self.drained_already(conn, &push) {
                return;
            }
        }
        let c = &self.cfg.session;
        // Held only while the backlog is fetched from storage: bounded, but not a sign
        // of a slow client, so the bound is looser than max_inflight.
        let bound = c.max_inflight + c.send_queue;
        let Some(s) = self.sessions.get_mut(&conn) else {
            return self.failed(&push);
        };
        if let Some(held) = s.held.as_mut() {
            held.push(push);
            if held.len() > bound {
                tracing::debug!(
                    session = conn,
                    bound,
                    "too many messages held during the drain"
                );
                self.close(conn, CloseReason::SlowConsumer);
            }
            return;
        }
        self.push_now(conn, push);
    }

    /// Pushes a message to the client now. The hot path of every delivery: one look-up of
    /// the session does the in-flight entry, its timer and the write.
    pub(super) fn push_now(&mut self, conn: ConnId, push: Rc<PendingPush>) {
        let deadline = self.now.plus_ms(self.cfg.delivery.redelivery_interval_ms);
        let (max, limit) = (self.cfg.session.max_inflight, self.cfg.session.send_queue);
        let Some(s) = self.sessions.get_mut(&conn) else {
            return self.failed(&push);
        };
        let frame = Pushed(push.clone());
        tracing::trace!(session = conn, seq = ?push.seq, "push");
        let (ack_cmd, msg_id) = (
            push.ack_cmd(),
            push_msg_id(&push.frame).copied().unwrap_or_default(),
        );
        let cmd = push.frame.first().copied();
        s.inflight.push_back(Inflight {
            push,
            deadline,
            resends: 0,
            ack_cmd,
            msg_id,
        });
        if s.armed.is_none_or(|a| deadline < a) {
            s.armed = Some(deadline);
            self.timers.push(Reverse((deadline, conn)));
        }
        s.queued += 1;
        let (in_flight, queued) = (s.inflight.len(), s.queued);
        self.writes += 1;
        self.stats.message(Msg::Delivered, 1);
        if let Some(c) = cmd {
            self.stats.packet_out(c);
        }
        self.out.push(Action::Write {
            conn,
            out: Out::Push(frame),
        });
        if queued > limit {
            tracing::debug!(session = conn, limit, "send queue full");
            self.close(conn, CloseReason::SlowConsumer);
        } else if in_flight > max {
            tracing::debug!(session = conn, max, "too many pushes in flight");
            self.close(conn, CloseReason::SlowConsumer);
        }
    }

    /// The client acked a push.
    pub(super) fn on_ack(&mut self, conn: ConnId, ack_cmd: u8, id: &MsgId) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        let pos = s
            .inflight
            .iter()
            .position(|i| i.ack_cmd == ack_cmd && i.msg_id == *id);
        let Some(found) = pos.and_then(|p| s.inflight.remove(p)) else {
            return;
        };
        self.stats.message(Msg::Acked, 1);
        self.acked(&found.push);
        if let (None, Some(seq)) = (found.push.accepted, found.push.seq) {
            let uid = found.push.uid;
            self.remember_acked_stored(uid, seq);
        }
        self.drain_on_ack(conn);
    }

    /// One session acked a push. When all did, the stored copy (if any) is removed.
    pub(super) fn acked(&mut self, p: &PendingPush) {
        if let Some(t) = p.accepted {
            self.stats.delivered_after(self.now.micros_since(t));
        }
        let left = p.pending.get().saturating_sub(1);
        p.pending.set(left);
        if left == 0 && !p.failed.get() {
            if let Some(seq) = p.seq {
                self.out.push(Action::Remove {
                    uid: p.uid,
                    seqs: vec![seq],
                });
            }
        }
    }

    /// A session ended without acking a push: make sure a stored copy exists (once).
    pub(super) fn failed(&mut self, p: &PendingPush) {
        if p.failed.replace(true) {
            return;
        }
        if p.seq.is_none() {
            self.persist(p.uid, p.frame.clone());
        }
    }

    /// Stores a message for later delivery (no reply awaited).
    pub(super) fn persist(&mut self, uid: u32, frame: Bytes) {
        self.stats.message(Msg::StoredOffline, 1);
        self.out.push(Action::Store {
            msgs: vec![(uid, frame)],
        });
    }

    /// Ends a session: unregisters it, hands every unacked push back to storage, sends the
    /// last packet for `reason` and asks the writer to close. Idempotent.
    pub(super) fn close(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(s) = self.sessions.remove(&conn) else {
            return;
        };
        tracing::debug!(uid = s.uid, session = conn, ?reason, "session closed");
        self.stats.session_closed(s.kind);
        if reason == CloseReason::SlowConsumer {
            self.stats.send_queue_overflow();
        }
        self.writes -= s.queued;
        if let Some(list) = self.users.get_mut(&s.uid) {
            list.retain(|c| *c != conn);
            if list.is_empty() {
                self.users.remove(&s.uid);
            }
        }
        if let Some(t) = s.drain.fetching {
            self.waiting.remove(&t);
        }
        for i in s.inflight {
            self.failed(&i.push);
        }
        for p in s.held.into_iter().flatten() {
            self.failed(&p);
        }
        if let Some(p) = reason.final_packet() {
            let out = Out::encode(&p);
            if let Some(&c) = out.packet().and_then(<[u8]>::first) {
                self.stats.packet_out(c);
            }
            self.out.push(Action::Write { conn, out });
        }
        if s.kind.is_ws() && reason != CloseReason::WsClose {
            let code = if reason == CloseReason::InvalidPacket {
                1002
            } else {
                1000
            };
            self.out.push(Action::Write {
                conn,
                out: Out::Raw(ws_close(code)),
            });
        }
        self.out.push(Action::Write {
            conn,
            out: Out::Close,
        });
    }

    /// Puts the session's next deadline in the timer heap if it is earlier than the one
    /// already there.
    pub(super) fn arm(&mut self, conn: ConnId) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        let c = &self.cfg;
        let mut next = match s.ping_sent {
            Some(t) => t.plus_ms(c.session.heartbeat_timeout_ms),
            None => s.last_rx.plus_ms(c.session.heartbeat_interval_ms),
        };
        if let Some(d) = s.inflight.iter().map(|i| i.deadline).min() {
            next = next.min(d);
        }
        if s.armed.is_none_or(|a| next < a) {
            s.armed = Some(next);
            self.timers.push(Reverse((next, conn)));
        }
    }

    /// Runs every session timer that is due: heartbeat pings and timeouts, redelivery.
    pub(super) fn tick(&mut self) {
        while let Some(&Reverse((t, conn))) = self.timers.peek() {
            if t > self.now {
                break;
            }
            self.timers.pop();
            match self.sessions.get_mut(&conn) {
                Some(s) if s.armed == Some(t) => s.armed = None,
                _ => continue, // stale: the session is gone or has an earlier entry
            }
            self.session_timers(conn);
            self.arm(conn);
        }
    }

    fn session_timers(&mut self, conn: ConnId) {
        let now = self.now;
        let c = &self.cfg;
        let (hb_interval, hb_timeout) = (
            c.session.heartbeat_interval_ms * 1000,
            c.session.heartbeat_timeout_ms * 1000,
        );
        let (interval, max) = (c.delivery.redelivery_interval_ms, c.delivery.redelivery_max);
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        let mut close = None;
        let mut ping = false;
        match s.ping_sent {
            Some(t) if now.micros_since(t) >= hb_timeout => {
                close = Some(CloseReason::HeartbeatTimeout)
            }
            None if now.micros_since(s.last_rx) >= hb_interval => {
                s.ping_sent = Some(now);
                ping = true;
            }
            _ => {}
        }
        let mut resend = Vec::new();
        for i in s.inflight.iter_mut().filter(|i| i.deadline <= now) {
            if i.resends >= max {
                close = close.or(Some(CloseReason::AckTimeout));
                break;
            }
            i.resends += 1;
            i.deadline = now.plus_ms(interval);
            resend.push(Pushed(i.push.clone()));
        }
        if let Some(reason) = close {
            return self.close(conn, reason);
        }
        if ping {
            self.send_packet(conn, &ServerPacket::Ping);
        }
        self.stats.message(Msg::Redelivered, resend.len() as u64);
        for f in resend {
            self.send(conn, Out::Push(f));
        }
    }

    /// Sends a message to its owner shard (delivered here, or mailed).
    pub(super) fn route(&mut self, d: Delivery) {
        let Some(d) = self.forward_if_remote(d) else {
            return;
        };
        let owner = owner_of(d.to, self.shards);
        if owner == self.id {
            self.deliver_here(d);
        } else {
            self.out.push(Action::Deliver { shard: owner, d });
        }
    }

    /// Delivers a message for a user this shard owns: to every session, or to storage.
    pub(super) fn deliver(&mut self, d: Delivery) {
        // Mail from another node whose sender saw another live set may go on once more.
        if let Some(d) = self.forward_if_remote(d) {
            self.deliver_here(d);
        }
    }

    /// [`Engine::deliver`] once the recipient's home is known to be this node.
    fn deliver_here(&mut self, d: Delivery) {
        let mut conns = std::mem::take(&mut self.scratch);
        conns.extend(self.users.get(&d.to).into_iter().flatten());
        if conns.is_empty() {
            if d.seq.is_none() {
                self.persist(d.to, d.frame);
            }
        } else {
            let push = PendingPush::new(d.to, d.frame, d.seq, conns.len() as u32, Some(d.accepted));
            for c in conns.drain(..) {
                self.push(c, push.clone());
            }
        }
        conns.clear();
        self.scratch = conns;
    }

    /// Pushes a message to a local user's sessions other than `except` (a sender's other
    /// devices). Nothing is stored when there are none: the sender has the message.
    pub(super) fn deliver_except(&mut self, uid: u32, frame: Bytes, except: ConnId) {
        let others: Vec<ConnId> = self
            .users
            .get(&uid)
            .into_iter()
            .flatten()
            .copied()
            .filter(|c| *c != except)
            .collect();
        if others.is_empty() {
            return;
        }
        let push = PendingPush::new(uid, frame, None, others.len() as u32, Some(self.now));
        for c in others {
            self.push(c, push.clone());
        }
    }

    /// A group batch for members this shard owns: served at once when it is one step and
    /// nothing is queued, else queued for [`Engine::fanout_step`].
    pub(super) fn enqueue_fanout(&mut self, b: Batch) {
        let chunk = self.cfg.groups.fanout_chunk;
        if b.uids.len() <= chunk && self.fanout.is_empty() {
            let n = b.uids.len();
            return self.deliver_range(&b, 0, n);
        }
        self.backlog += b.uids.len();
        self.fanout.push_back((b, 0));
    }

    /// Serves one step (`groups.fanout_chunk` members) of the oldest queued batch.
    pub(super) fn fanout_step(&mut self) {
        let chunk = self.cfg.groups.fanout_chunk;
        let Some((b, at)) = self.fanout.pop_front() else {
            return;
        };
        let end = (at + chunk).min(b.uids.len());
        self.deliver_range(&b, at, end);
        self.backlog = self.backlog.saturating_sub(end - at);
        if end < b.uids.len() {
            self.fanout.push_front((b, end));
        }
    }

    /// Serves `b.uids[at..end]`; offline members get stored copies in one write.
    fn deliver_range(&mut self, b: &Batch, at: usize, end: usize) {
        let mut offline = Vec::new();
        let mut remote = Remote::new();
        let mut conns = std::mem::take(&mut self.scratch);
        for i in at..end {
            let uid = b.uids[i];
            if uid == b.exclude {
                continue;
            }
            let seq = b.seqs.as_ref().and_then(|s| s.get(i).copied());
            if let Some(node) = self.remote_node(uid, b.hops) {
                Self::add_remote(&mut remote, node, uid, seq);
                continue;
            }
            conns.clear();
            conns.extend(self.users.get(&uid).into_iter().flatten());
            if conns.is_empty() {
                if seq.is_none() {
                    offline.push((uid, b.frame.clone()));
                }
                continue;
            }
            let push = PendingPush::new(
                uid,
                b.frame.clone(),
                seq,
                conns.len() as u32,
                Some(b.accepted),
            );
            for c in conns.drain(..) {
                self.push(c, push.clone());
            }
        }
        conns.clear();
        self.scratch = conns;
        if !remote.is_empty() {
            self.forward_batches(b, remote);
        }
        if !offline.is_empty() {
            self.stats.message(Msg::StoredOffline, offline.len() as u64);
            self.out.push(Action::Store { msgs: offline });
        }
    }
}

/// A WebSocket close frame with `code`.
fn ws_close(code: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(4);
    im_protocol::ws::put_frame(
        &mut frame,
        im_protocol::ws::Opcode::Close,
        &code.to_be_bytes(),
        None,
    );
    frame
}
