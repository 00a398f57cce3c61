//! A session: one authenticated connection, living on its user's owner shard.
//!
//! Holds what the server owes the client: frames queued for writing (bounded), pushes
//! awaiting the client's ack (bounded, resent on a timer, never dropped: when the session
//! ends they go back to the offline store), and the heartbeat state. Everything here runs
//! on the owner shard's thread; state is in a `RefCell`, never shared across threads.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use im_protocol::packet::{cmd, push_msg_id};
use im_protocol::{MsgId, ServerPacket};
use local_sync::mpsc::unbounded::Tx;

use crate::shard::Shard;
use crate::stats::Msg;
use crate::transport::TransportKind;

/// Largest packet sent as [`Out::Small`] (PUB_ERR: 1 + 32 + 4 bytes).
pub(crate) const SMALL: usize = 37;

/// What the writer task of a connection is asked to do.
pub(crate) enum Out {
    /// An encoded packet; the writer adds the transport framing.
    Packet(Bytes),
    /// A small encoded packet held inline (acks, pings, PUB_ERR): no allocation per ack.
    Small { buf: [u8; SMALL], len: u8 },
    /// Bytes already framed (WebSocket control frames).
    Raw(Vec<u8>),
    /// Flush what is queued, then close the connection.
    Close,
}

impl Out {
    /// An encoded packet, inline when small.
    pub fn encode(p: &ServerPacket<'_>) -> Out {
        let len = p.encoded_len();
        if len <= SMALL {
            let mut buf = [0u8; SMALL];
            p.encode(&mut &mut buf[..]);
            Out::Small {
                buf,
                len: len as u8,
            }
        } else {
            Out::Packet(Bytes::from(p.to_vec()))
        }
    }
}

/// Why a session ended (logged; decides the last packet the client gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    PeerClosed,
    ClientDisconnect,
    WsClose,
    Kicked,
    InvalidPacket,
    HeartbeatTimeout,
    AckTimeout,
    SlowConsumer,
    WriteFailed,
    Shutdown,
}

impl CloseReason {
    fn final_packet(self) -> Option<ServerPacket<'static>> {
        match self {
            CloseReason::Kicked => Some(ServerPacket::Logout),
            CloseReason::InvalidPacket => Some(ServerPacket::InvalidPacket),
            CloseReason::AckTimeout | CloseReason::SlowConsumer | CloseReason::Shutdown => {
                Some(ServerPacket::Disconnect)
            }
            _ => None,
        }
    }
}

/// One message on its way to one user, shared by that user's sessions. Decides, once every
/// session has acked or failed, whether the stored copy is removed or a copy is stored.
pub(crate) struct Tracked {
    pub uid: u32,
    /// The encoded push packet.
    pub frame: Bytes,
    /// Sequence number in the offline store when a stored copy exists.
    pub seq: Option<u64>,
    /// When the sender's publish was accepted (live messages; `None` for stored ones).
    accepted: Option<Instant>,
    pending: Cell<u32>,
    failed: Cell<bool>,
}

impl Tracked {
    pub fn new(
        uid: u32,
        frame: Bytes,
        seq: Option<u64>,
        sessions: u32,
        accepted: Option<Instant>,
    ) -> Rc<Self> {
        Rc::new(Self {
            uid,
            frame,
            seq,
            accepted,
            pending: Cell::new(sessions),
            failed: Cell::new(false),
        })
    }

    /// One session acked it. When all did, the stored copy (if any) is removed.
    pub fn acked(&self, shard: &Shard) {
        if let Some(t) = self.accepted {
            shard.stats.delivered_after(t.elapsed().as_micros() as u64);
        }
        let left = self.pending.get().saturating_sub(1);
        self.pending.set(left);
        if left == 0 && !self.failed.get() {
            if let Some(seq) = self.seq {
                shard.store.remove(self.uid, vec![seq]);
            }
        }
    }

    /// A session ended without acking it: make sure a stored copy exists (once).
    pub fn failed(&self, shard: &Shard) {
        if self.failed.replace(true) {
            return;
        }
        if self.seq.is_none() {
            shard.persist(self.uid, self.frame.clone());
        }
    }

    fn ack_cmd(&self) -> u8 {
        self.frame
            .first()
            .and_then(|c| cmd::ack_for_push(*c))
            .unwrap_or(cmd::PUB_ACK)
    }
}

struct Inflight {
    track: Rc<Tracked>,
    deadline: Instant,
    resends: u8,
}

struct State {
    inflight: VecDeque<Inflight>,
    /// `Out` items handed to the writer and not yet written.
    queued: usize,
    last_rx: Instant,
    ping_sent: Option<Instant>,
    closed: bool,
    /// While the offline backlog is being pushed, live messages wait here (so they come
    /// after the older stored ones).
    draining: Option<Vec<Rc<Tracked>>>,
    /// The drain waiting for in-flight pushes to fall to this many (see
    /// [`Session::inflight_at_most`]).
    inflight_waiter: Option<(usize, Waker)>,
}

/// An authenticated connection on its owner shard.
pub(crate) struct Session {
    pub id: u64,
    pub uid: u32,
    pub role: u8,
    /// The client set CONNECT flag bit 0: it understands PUB_ERR and client PING.
    pub ext: bool,
    pub kind: TransportKind,
    pub fd: RawFd,
    pub shard: Rc<Shard>,
    out: Tx<Out>,
    st: RefCell<State>,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        uid: u32,
        role: u8,
        ext: bool,
        kind: TransportKind,
        fd: RawFd,
        shard: Rc<Shard>,
        out: Tx<Out>,
    ) -> Rc<Self> {
        Rc::new(Self {
            id,
            uid,
            role,
            ext,
            kind,
            fd,
            shard,
            out,
            st: RefCell::new(State {
                inflight: VecDeque::new(),
                queued: 0,
                last_rx: Instant::now(),
                ping_sent: None,
                closed: false,
                draining: Some(Vec::new()),
                inflight_waiter: None,
            }),
        })
    }

    pub fn is_closed(&self) -> bool {
        self.st.borrow().closed
    }

    /// Resolves once at most `n` pushes await the client's ack, or the session closed.
    /// Woken by the ack that gets there (no polling).
    pub async fn inflight_at_most(&self, n: usize) {
        std::future::poll_fn(|cx| {
            let mut st = self.st.borrow_mut();
            if st.closed || st.inflight.len() <= n {
                st.inflight_waiter = None;
                Poll::Ready(())
            } else {
                st.inflight_waiter = Some((n, cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// Queues an item for the writer; closes the session if the client is not reading.
    pub fn send(&self, item: Out) {
        let overflow = {
            let mut st = self.st.borrow_mut();
            if st.closed {
                return;
            }
            st.queued += 1;
            st.queued > self.shard.cfg.session.send_queue
        };
        self.shard.fanout.write_queued();
        let cmd = match &item {
            Out::Packet(p) => p.first().copied(),
            Out::Small { buf, .. } => Some(buf[0]),
            Out::Raw(_) | Out::Close => None,
        };
        if let Some(c) = cmd {
            self.shard.stats.packet_out(c);
        }
        let _ = self.out.send(item);
        if overflow {
            self.close(CloseReason::SlowConsumer);
        }
    }

    pub fn send_packet(&self, p: &ServerPacket<'_>) {
        self.send(Out::encode(p));
    }

    /// The writer wrote `n` queued items.
    pub fn written(&self, n: usize) {
        let done = {
            let mut st = self.st.borrow_mut();
            let done = n.min(st.queued);
            st.queued -= done;
            done
        };
        self.shard.fanout.writes_done(done);
    }

    /// A packet arrived from the client.
    pub fn touch(&self) {
        let mut st = self.st.borrow_mut();
        st.last_rx = Instant::now();
        st.ping_sent = None;
    }

    /// Pushes a message to the client (or holds it while the offline backlog drains).
    pub fn push(&self, track: Rc<Tracked>) {
        {
            let mut st = self.st.borrow_mut();
            if let Some(held) = st.draining.as_mut() {
                held.push(track);
                // Held only while the backlog is fetched from storage: bounded, but not a
                // sign of a slow client, so the bound is looser than max_inflight.
                let c = &self.shard.cfg.session;
                let over = held.len() > c.max_inflight + c.send_queue;
                drop(st);
                if over {
                    self.close(CloseReason::SlowConsumer);
                }
                return;
            }
        }
        self.push_now(track);
    }

    /// Pushes a message to the client now.
    pub fn push_now(&self, track: Rc<Tracked>) {
        let over = {
            let mut st = self.st.borrow_mut();
            if st.closed {
                drop(st);
                track.failed(&self.shard);
                return;
            }
            let interval = Duration::from_millis(self.shard.cfg.delivery.redelivery_interval_ms);
            st.inflight.push_back(Inflight {
                track: track.clone(),
                deadline: Instant::now() + interval,
                resends: 0,
            });
            st.inflight.len() > self.shard.cfg.session.max_inflight
        };
        self.shard.stats.message(Msg::Delivered, 1);
        self.send(Out::Packet(track.frame.clone()));
        if over {
            self.close(CloseReason::SlowConsumer);
        }
    }

    /// Ends the offline drain: pushes the live messages held meanwhile, skipping those the
    /// drain already pushed (stored messages with `seq <= drained_upto`).
    pub fn finish_drain(&self, drained_upto: u64) {
        let held = self.st.borrow_mut().draining.take().unwrap_or_default();
        for t in held {
            match t.seq {
                Some(s) if s <= drained_upto => t.acked(&self.shard),
                _ => self.push_now(t),
            }
        }
    }

    /// The client acked a push.
    pub fn on_ack(&self, ack_cmd: u8, id: &MsgId) {
        let found = {
            let mut st = self.st.borrow_mut();
            let pos = st.inflight.iter().position(|i| {
                i.track.ack_cmd() == ack_cmd && push_msg_id(&i.track.frame) == Some(id)
            });
            let found = pos.and_then(|p| st.inflight.remove(p));
            let left = st.inflight.len();
            if st.inflight_waiter.as_ref().is_some_and(|(n, _)| left <= *n) {
                if let Some((_, w)) = st.inflight_waiter.take() {
                    w.wake();
                }
            }
            found
        };
        if let Some(i) = found {
            self.shard.stats.message(Msg::Acked, 1);
            i.track.acked(&self.shard);
        }
    }

    /// Timers: heartbeat and redelivery. Called by the writer task.
    pub fn tick(&self, now: Instant) {
        let cfg = &self.shard.cfg;
        let hb_interval = Duration::from_millis(cfg.session.heartbeat_interval_ms);
        let hb_timeout = Duration::from_millis(cfg.session.heartbeat_timeout_ms);
        let interval = Duration::from_millis(cfg.delivery.redelivery_interval_ms);
        let mut resend = Vec::new();
        let mut close = None;
        let mut ping = false;
        {
            let mut st = self.st.borrow_mut();
            if st.closed {
                return;
            }
            match st.ping_sent {
                Some(t) if now.duration_since(t) >= hb_timeout => {
                    close = Some(CloseReason::HeartbeatTimeout)
                }
                None if now.duration_since(st.last_rx) >= hb_interval => {
                    st.ping_sent = Some(now);
                    ping = true;
                }
                _ => {}
            }
            for i in st.inflight.iter_mut().filter(|i| i.deadline <= now) {
                if i.resends >= cfg.delivery.redelivery_max {
                    close = close.or(Some(CloseReason::AckTimeout));
                    break;
                }
                i.resends += 1;
                i.deadline = now + interval;
                resend.push(i.track.frame.clone());
            }
        }
        if let Some(reason) = close {
            self.close(reason);
            return;
        }
        if ping {
            self.send_packet(&ServerPacket::Ping);
        }
        self.shard
            .stats
            .message(Msg::Redelivered, resend.len() as u64);
        for f in resend {
            self.send(Out::Packet(f));
        }
    }

    /// Ends the session: unregisters it, hands every unacked push back to storage, sends
    /// the last packet for `reason` and asks the writer to close. Idempotent.
    pub fn close(&self, reason: CloseReason) {
        let (inflight, held) = {
            let mut st = self.st.borrow_mut();
            if st.closed {
                return;
            }
            st.closed = true;
            if let Some((_, w)) = st.inflight_waiter.take() {
                w.wake();
            }
            (std::mem::take(&mut st.inflight), st.draining.take())
        };
        tracing::debug!(uid = self.uid, session = self.id, ?reason, "session closed");
        self.shard.stats.session_closed(self.kind);
        if reason == CloseReason::SlowConsumer {
            self.shard.stats.send_queue_overflow();
        }
        self.shard.unregister(self.uid, self.id);
        for i in inflight {
            i.track.failed(&self.shard);
        }
        for t in held.into_iter().flatten() {
            t.failed(&self.shard);
        }
        if let Some(p) = reason.final_packet() {
            let out = Out::encode(&p);
            if let Out::Small { buf, .. } = &out {
                self.shard.stats.packet_out(buf[0]);
            }
            let _ = self.out.send(out);
        }
        if self.kind.is_ws() && reason != CloseReason::WsClose {
            let mut frame = Vec::with_capacity(4);
            let code: u16 = if reason == CloseReason::InvalidPacket {
                1002
            } else {
                1000
            };
            im_protocol::ws::put_frame(
                &mut frame,
                im_protocol::ws::Opcode::Close,
                &code.to_be_bytes(),
                None,
            );
            let _ = self.out.send(Out::Raw(frame));
        }
        let _ = self.out.send(Out::Close);
    }
}
