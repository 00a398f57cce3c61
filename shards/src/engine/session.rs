//! What the engine keeps per session and per push awaiting an ack.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;
use im_protocol::packet::cmd;
use im_protocol::MsgId;

use super::{CloseReason, ConnId, Time};
use crate::net::transport::TransportKind;

/// One message on its way to one user, shared by that user's sessions. Decides, once every
/// session has acked or failed, whether the stored copy is removed or a copy is stored.
#[derive(Debug)]
pub(crate) struct PendingPush {
    pub uid: u32,
    /// The encoded push packet.
    pub frame: Bytes,
    /// Sequence number in the offline store when a stored copy exists.
    pub seq: Option<u64>,
    /// When the sender's publish was accepted (live messages; `None` for stored ones).
    pub accepted: Option<Time>,
    /// Sessions that have neither acked nor failed it.
    pub pending: Cell<u32>,
    /// A session ended without acking it (a stored copy exists from then on).
    pub failed: Cell<bool>,
}

impl PendingPush {
    pub fn new(
        uid: u32,
        frame: Bytes,
        seq: Option<u64>,
        sessions: u32,
        accepted: Option<Time>,
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

    /// The ack command that answers this push.
    pub fn ack_cmd(&self) -> u8 {
        self.frame
            .first()
            .and_then(|c| cmd::ack_for_push(*c))
            .unwrap_or(cmd::PUB_ACK)
    }
}

/// A push queued for a connection's writer: the shared entry, compared and shown by its
/// packet.
#[derive(Clone)]
pub struct Pushed(pub(crate) Rc<PendingPush>);

impl Pushed {
    /// The encoded push packet.
    pub fn frame(&self) -> &[u8] {
        &self.0.frame
    }
}

impl PartialEq for Pushed {
    fn eq(&self, other: &Self) -> bool {
        self.frame() == other.frame()
    }
}

impl Eq for Pushed {}

impl std::fmt::Debug for Pushed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pushed").field(&self.frame()).finish()
    }
}

/// A push sent and not yet acked.
#[derive(Debug)]
pub(crate) struct Inflight {
    pub push: Rc<PendingPush>,
    pub deadline: Time,
    pub resends: u8,
    /// The ack command and MsgId the client answers with, copied out of the frame so that
    /// matching an ack reads only this queue (it was about 5% of the shards' CPU flat out,
    /// chasing each push's frame).
    pub ack_cmd: u8,
    pub msg_id: MsgId,
}

/// The offline drain of a new session: its stored backlog is pushed, in pages, before any
/// live message (live ones are held meanwhile).
#[derive(Debug, Default)]
pub(crate) struct Drain {
    /// Highest sequence number pushed so far.
    pub after: u64,
    /// The page asked for and not yet answered.
    pub fetching: Option<super::Token>,
    /// Size of the page asked for (a shorter answer is the end of the backlog).
    pub limit: usize,
    /// The last messages pushed, with their sequence numbers (see
    /// `Engine::drained_already`).
    pub recent: VecDeque<(u64, Bytes)>,
    /// A full page was pushed: fetch the next once acks bring in-flight down.
    pub wait_acks: bool,
}

/// An authenticated connection on its owner shard.
#[derive(Debug)]
pub(crate) struct Session {
    pub conn: ConnId,
    pub uid: u32,
    pub role: u8,
    /// The client set CONNECT flag bit 0: it understands PUB_ERR and client PING.
    pub ext: bool,
    pub kind: TransportKind,
    pub inflight: VecDeque<Inflight>,
    /// Items handed to the writer and not yet written.
    pub queued: usize,
    pub last_rx: Time,
    pub ping_sent: Option<Time>,
    /// While the offline backlog is pushed, live messages wait here (so they come after
    /// the older stored ones). `None` once the drain is over.
    pub held: Option<Vec<Rc<PendingPush>>>,
    pub drain: Drain,
    /// Publishes accepted from the current read, committed when the read is done.
    pub accepting: Vec<super::commit::Accepted>,
    /// The session must end (for this reason) once its publishes are committed; nothing
    /// more is read from it.
    pub stop: Option<CloseReason>,
    /// The earliest deadline this session has in the timer heap.
    pub armed: Option<Time>,
}

impl Session {
    pub fn new(
        conn: ConnId,
        uid: u32,
        role: u8,
        ext: bool,
        kind: TransportKind,
        now: Time,
    ) -> Self {
        Self {
            conn,
            uid,
            role,
            ext,
            kind,
            inflight: VecDeque::new(),
            queued: 0,
            last_rx: now,
            ping_sent: None,
            held: Some(Vec::new()),
            drain: Drain::default(),
            accepting: Vec::new(),
            stop: None,
            armed: None,
        }
    }
}
