//! The shard's logic as a synchronous state machine (sans-I/O).
//!
//! An [`Engine`] owns everything a shard knows about the users it owns: their sessions,
//! the pushes awaiting a client's ack, the dedupe window of their publishes, the group
//! fan-out queue and the offline drains. It does no I/O and reads no clock: the driver
//! (`crate::shard`, on monoio) hands it one [`Event`] at a time with the current [`Time`],
//! and carries out the [`Action`]s it returns — write these frames to that connection,
//! mail this to that shard, store or remove these messages, fetch a page of a backlog,
//! look up a group, close a connection. Replies to actions (a storage write, a fetch, a
//! membership) come back as events carrying the action's [`Token`].
//!
//! Because it is plain data driven by calls, the same engine runs under the deterministic
//! simulator (`shards/tests/sim`) with a virtual clock and a simulated store, and under
//! unit tests without sockets.
//!
//! ```text
//!   driver ──Event──▶ Engine::handle(now, event) ──▶ Vec<Action> ──▶ driver carries out
//!     ▲                                                                 │
//!     └──────── replies (Appended, Fetched, Resolved, Written) ◀────────┘
//! ```

mod cluster;
mod commit;
pub(crate) mod dedupe;
mod deliver;
mod drain;
pub mod envelope;
mod inbound;
mod members;
pub(crate) mod recent;
pub mod requests;
mod session;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;
use im_protocol::ServerPacket;
use im_storage::StoredMessage;
// The engine's maps are keyed by ids it or the driver hands out (connections, tokens,
// uids): FxHash is a few instructions where SipHash's flooding resistance buys nothing.
use rustc_hash::FxHashMap as HashMap;
use smallvec::SmallVec;

use self::requests::{ControlError, SessionInfo, SystemMessage};
use crate::config::CoreConfig;
use crate::route::nodes::NodeMap;
use crate::stats::ShardStats;

use self::commit::{CommitQueue, QueueKey};
use self::dedupe::Dedupe;
pub use self::members::{split, Members};
pub use self::session::Pushed;
use self::session::Session;
pub use crate::net::transport::TransportKind;

/// Microseconds since an origin the driver picks (one origin for every shard of a
/// process, so a time carried in mail means the same on every shard).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    pub fn plus_ms(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms.saturating_mul(1000)))
    }

    /// Microseconds from `earlier` to `self` (0 if `earlier` is later).
    pub fn micros_since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// A connection, as the driver numbers them (unique per shard, never reused).
pub type ConnId = u64;

/// Names an action whose reply comes back as an event.
pub type Token = u64;

/// Largest packet sent as [`Out::Small`] (PUB_ERR: 1 + 32 + 4 bytes).
pub const SMALL: usize = 37;

/// What a connection's writer is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// An encoded packet; the writer adds the transport framing.
    Packet(Bytes),
    /// A push awaiting its ack: the writer frames its packet. Holding the shared entry
    /// (a plain reference count) rather than a clone of its frame spares every push the
    /// promotion of the frame's `Bytes` to an allocated, atomically counted one.
    Push(Pushed),
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

    /// The encoded packet (without transport framing), if this is one.
    pub fn packet(&self) -> Option<&[u8]> {
        match self {
            Out::Packet(p) => Some(p),
            Out::Push(p) => Some(p.frame()),
            Out::Small { buf, len } => Some(&buf[..*len as usize]),
            Out::Raw(_) | Out::Close => None,
        }
    }
}

/// Why a session ended (logged; decides the last packet the client gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
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
    /// The user's home moved to another node (the cluster's live set changed), or the
    /// other nodes counted this one dead for a while.
    Rehomed,
}

impl CloseReason {
    fn final_packet(self) -> Option<ServerPacket<'static>> {
        match self {
            CloseReason::Kicked => Some(ServerPacket::Logout),
            CloseReason::InvalidPacket => Some(ServerPacket::InvalidPacket),
            CloseReason::AckTimeout
            | CloseReason::SlowConsumer
            | CloseReason::Shutdown
            | CloseReason::Rehomed => Some(ServerPacket::Disconnect),
            _ => None,
        }
    }
}

/// A message for one user, mailed to the user's owner shard.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub to: u32,
    /// When the sender's publish was accepted (for the delivery-latency histogram).
    pub accepted: Time,
    /// The encoded push packet, shared.
    pub frame: Bytes,
    /// Set when a stored copy exists (`before_ack` mode).
    pub seq: Option<u64>,
    /// Times it was forwarded between nodes (a cluster bounds this; see `MAX_HOPS`).
    pub hops: u8,
}

/// The recipients of a batch: a cached membership slice (shared) or an explicit list.
#[derive(Debug, Clone)]
pub enum Uids {
    Shared(Arc<[u32]>),
    Owned(Vec<u32>),
}

impl Deref for Uids {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        match self {
            Uids::Shared(a) => a,
            Uids::Owned(v) => v,
        }
    }
}

/// One group message for the members one shard owns.
#[derive(Debug, Clone)]
pub struct Batch {
    /// When the sender's publish was accepted.
    pub accepted: Time,
    pub frame: Bytes,
    pub uids: Uids,
    /// Stored-copy sequence numbers (`before_ack` mode), aligned with `uids`.
    pub seqs: Option<Vec<u64>>,
    /// Not delivered here: the sender (its other devices are served by its own shard).
    pub exclude: u32,
    /// Times it was forwarded between nodes.
    pub hops: u8,
}

/// What one node hands another.
#[derive(Debug, Clone)]
pub enum Forward {
    /// A message for one user whose home is the destination.
    One(Delivery),
    /// A group message for the members whose home is the destination.
    Group(Batch),
}

/// A message is forwarded between nodes at most this many times. Once is the rule (to the
/// recipient's home); a second hop happens only while nodes disagree about the live set
/// (the first destination no longer thinks it is the home). After that it is delivered or
/// stored where it is, so a message never circles.
pub const MAX_HOPS: u8 = 2;

/// A storage or group-store operation failed (the driver logs the cause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

/// What happens to an engine.
#[derive(Debug)]
pub enum Event<'a> {
    /// An authenticated connection of a user this shard owns (its CONNECT was accepted).
    Open {
        conn: ConnId,
        uid: u32,
        role: u8,
        /// CONNECT flag bit 0: the client understands PUB_ERR and client PING.
        ext: bool,
        kind: TransportKind,
    },
    /// One decoded-transport packet from the client (not yet parsed).
    Packet { conn: ConnId, bytes: &'a [u8] },
    /// Transport-level bytes to send back (a WebSocket pong or close reply).
    Reply { conn: ConnId, bytes: Vec<u8> },
    /// The read that carried the last packets ended; `stop` when the transport found the
    /// input invalid or the peer started the WebSocket close.
    ReadDone {
        conn: ConnId,
        stop: Option<CloseReason>,
    },
    /// The writer wrote `n` of the items it was given.
    Written { conn: ConnId, n: usize },
    /// The connection went away (EOF, reset, failed write).
    Closed { conn: ConnId, reason: CloseReason },
    /// Mail: a message for a user this shard owns.
    Deliver(Delivery),
    /// Mail: a group message for the members this shard owns.
    Fanout(Batch),
    /// Reply to [`Action::Append`].
    Appended {
        token: Token,
        result: Result<Vec<u64>, Failed>,
    },
    /// Reply to [`Action::Fetch`].
    Fetched {
        token: Token,
        result: Result<Vec<StoredMessage>, Failed>,
    },
    /// Reply to [`Action::Resolve`].
    Resolved {
        token: Token,
        result: Result<Arc<Members>, Failed>,
    },
    /// A server-side send from the control plane; answered by [`Action::Replied`].
    Send { msg: SystemMessage, reply: Token },
    /// The timer fired: run what is due (heartbeats, redeliveries).
    Tick,
    /// Serve one step of the fan-out queue.
    FanoutStep,
    /// Close every session (their pushes go to storage) and refuse new ones.
    Shutdown,
    /// The cluster's live set changed: from now on messages for users whose home is
    /// another node are forwarded there, and sessions of such users here are closed.
    Nodes(Arc<NodeMap>),
    /// The other nodes counted this one dead for a while: close every session (see
    /// `cluster::evicted`).
    Evicted,
}

/// What the driver is asked to do.
#[derive(Debug)]
pub enum Action {
    /// Queue this for the connection's writer.
    Write { conn: ConnId, out: Out },
    /// Mail a message to the shard that owns its recipient.
    Deliver { shard: usize, d: Delivery },
    /// Mail a group batch to the shard that owns its members.
    Fanout { shard: usize, b: Batch },
    /// Store `(uid, push frame)` copies; reply with [`Event::Appended`].
    Append {
        token: Token,
        msgs: Vec<(u32, Bytes)>,
    },
    /// Store copies without a reply.
    Store { msgs: Vec<(u32, Bytes)> },
    /// Remove delivered copies.
    Remove { uid: u32, seqs: Vec<u64> },
    /// Up to `limit` stored messages of `uid` after `after`; reply with [`Event::Fetched`].
    Fetch {
        token: Token,
        uid: u32,
        after: u64,
        limit: usize,
    },
    /// The members of a group; reply with [`Event::Resolved`].
    Resolve { token: Token, gid: u32 },
    /// The answer to an [`Event::Send`].
    Replied {
        reply: Token,
        result: Result<(), ControlError>,
    },
    /// The connection may read again: every publish it sent so far is committed.
    Resume { conn: ConnId },
    /// Hand this to another node of the cluster (its recipients' home).
    Forward { node: Arc<str>, f: Forward },
}

/// Who waits for the reply to a token.
#[derive(Debug, Clone, Copy)]
enum Waiter {
    Commit(QueueKey),
    Drain(ConnId),
}

/// One shard's state machine (see the module docs).
pub struct Engine {
    id: usize,
    shards: usize,
    cfg: Arc<CoreConfig>,
    stats: Arc<ShardStats>,
    now: Time,
    /// Boxed: the table's spare slots cost a pointer each, not a whole session.
    sessions: HashMap<ConnId, Box<Session>>,
    /// Each user's sessions here; the first inline, so a user costs no allocation of its own.
    users: HashMap<u32, SmallVec<[ConnId; 1]>>,
    dedupe: Dedupe,
    /// Group batches with the index of the next member to serve.
    fanout: VecDeque<(Batch, usize)>,
    /// Members still to serve over all queued batches.
    backlog: usize,
    /// Session timers: (deadline, conn). Stale entries are skipped when they come up.
    timers: BinaryHeap<Reverse<(Time, ConnId)>>,
    /// Publishes being committed, in order per connection (or per server-side send).
    commits: HashMap<QueueKey, CommitQueue>,
    waiting: HashMap<Token, Waiter>,
    next_token: Token,
    /// Items handed to writers and not yet written, over all sessions.
    writes: usize,
    stopping: bool,
    out: Vec<Action>,
    scratch: Vec<ConnId>,
    /// Stored copies acked through a drained push, per user, for [`ACKED_STORED_FOR_MS`]:
    /// a live copy of the same message still on its way (its mail held up while the user
    /// reconnected and drained) is then known as delivered, not pushed again.
    acked_stored: HashMap<u32, VecDeque<(u64, Time)>>,
    acked_stored_swept: Time,
    /// The cluster's live set (`None` outside a cluster).
    nodes: Option<Arc<NodeMap>>,
}

/// How long an acked stored copy is remembered (see `Engine::acked_stored`).
const ACKED_STORED_FOR_MS: u64 = 60_000;
/// At most this many per user.
const ACKED_STORED_MAX: usize = 256;

impl Engine {
    /// The engine of shard `id` of `shards`.
    pub fn new(id: usize, shards: usize, cfg: Arc<CoreConfig>, stats: Arc<ShardStats>) -> Self {
        let (window, per_sender) = (
            cfg.delivery.dedupe_window_ms,
            cfg.delivery.dedupe_per_sender,
        );
        Self {
            id,
            shards,
            cfg,
            stats,
            now: Time::default(),
            sessions: HashMap::default(),
            users: HashMap::default(),
            dedupe: Dedupe::new(window.saturating_mul(1000), per_sender),
            fanout: VecDeque::new(),
            backlog: 0,
            timers: BinaryHeap::new(),
            commits: HashMap::default(),
            waiting: HashMap::default(),
            next_token: 0,
            writes: 0,
            stopping: false,
            out: Vec::new(),
            scratch: Vec::new(),
            acked_stored: HashMap::default(),
            acked_stored_swept: Time::default(),
            nodes: None,
        }
    }

    /// Handles one event at `now`, appending what the driver must do to `actions`.
    pub fn handle(&mut self, now: Time, ev: Event<'_>, actions: &mut Vec<Action>) {
        self.now = self.now.max(now);
        std::mem::swap(&mut self.out, actions);
        match ev {
            Event::Open {
                conn,
                uid,
                role,
                ext,
                kind,
            } => self.open(conn, uid, role, ext, kind),
            Event::Packet { conn, bytes } => self.on_packet(conn, bytes),
            Event::Reply { conn, bytes } => self.send(conn, Out::Raw(bytes)),
            Event::ReadDone { conn, stop } => self.read_done(conn, stop),
            Event::Written { conn, n } => self.written(conn, n),
            Event::Closed { conn, reason } => self.close(conn, reason),
            Event::Deliver(d) => self.deliver(d),
            Event::Fanout(b) => self.enqueue_fanout(b),
            Event::Appended { token, result } => self.on_appended(token, result),
            Event::Fetched { token, result } => self.on_fetched(token, result),
            Event::Resolved { token, result } => self.on_resolved(token, result),
            Event::Send { msg, reply } => self.system_send(msg, reply),
            Event::Tick => {
                self.dedupe.sweep(self.now);
                self.sweep_acked_stored();
                self.tick()
            }
            Event::FanoutStep => self.fanout_step(),
            Event::Shutdown => self.shutdown(),
            Event::Nodes(map) => self.set_nodes(map),
            Event::Evicted => self.evicted(),
        }
        std::mem::swap(&mut self.out, actions);
    }

    /// The sessions of `uid` (the control plane's "online" query).
    pub fn sessions_info(&self, uid: u32) -> Vec<SessionInfo> {
        self.users
            .get(&uid)
            .into_iter()
            .flatten()
            .filter_map(|c| self.sessions.get(c))
            .map(|s| SessionInfo {
                session: s.conn,
                transport: s.kind.name(),
                extensions: s.ext,
            })
            .collect()
    }

    /// The connection has a live session (it was not closed or refused).
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.sessions.get(&conn).is_some_and(|s| s.stop.is_none())
    }

    /// The connection may read more input: none of its publishes is still being committed.
    pub fn may_read(&self, conn: ConnId) -> bool {
        !self.commits.contains_key(&QueueKey::Conn(conn))
    }

    /// Members queued for fan-out and not yet served.
    pub fn fanout_backlog(&self) -> usize {
        self.backlog
    }

    /// Items handed to writers and not yet written, over all sessions.
    pub fn queued_writes(&self) -> usize {
        self.writes
    }

    /// Publishes accepted and not yet handed on (awaiting storage or a membership).
    pub fn commits_pending(&self) -> usize {
        self.commits.values().map(CommitQueue::len).sum()
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The earliest session timer, if any (a driver may sleep until then).
    pub fn next_deadline(&self) -> Option<Time> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    fn token(&mut self, w: Waiter) -> Token {
        self.next_token += 1;
        self.waiting.insert(self.next_token, w);
        self.next_token
    }

    /// A drained push of a stored copy was acked: remember it for a while.
    fn remember_acked_stored(&mut self, uid: u32, seq: u64) {
        let q = self.acked_stored.entry(uid).or_default();
        if q.len() == ACKED_STORED_MAX {
            q.pop_front();
        }
        q.push_back((seq, self.now));
    }

    /// A live push whose stored copy this user already acked through a drain.
    fn acked_through_drain(&self, uid: u32, seq: u64) -> bool {
        self.acked_stored
            .get(&uid)
            .is_some_and(|q| q.iter().any(|(s, _)| *s == seq))
    }

    /// Forgets what is older than [`ACKED_STORED_FOR_MS`]; once per that period.
    fn sweep_acked_stored(&mut self) {
        let now = self.now;
        if now.micros_since(self.acked_stored_swept) < ACKED_STORED_FOR_MS * 1000 {
            return;
        }
        self.acked_stored_swept = now;
        self.acked_stored.retain(|_, q| {
            while q
                .front()
                .is_some_and(|(_, t)| t.plus_ms(ACKED_STORED_FOR_MS) <= now)
            {
                q.pop_front();
            }
            !q.is_empty()
        });
    }

    fn shutdown(&mut self) {
        self.stopping = true;
        let all: Vec<ConnId> = self.sessions.keys().copied().collect();
        for c in all {
            self.close(c, CloseReason::Shutdown);
        }
    }
}

impl Engine {
    /// Checks the engine's own bookkeeping (for the simulator and tests): queues within
    /// their bounds, counters equal to what they count, the user index matching the
    /// sessions. Cheap enough to run after every event of a simulation.
    #[doc(hidden)]
    pub fn check(&self) -> Result<(), String> {
        let c = &self.cfg.session;
        let mut writes = 0;
        for (conn, s) in &self.sessions {
            writes += s.queued;
            if s.queued > c.send_queue {
                return Err(format!(
                    "session {conn}: {} queued > {}",
                    s.queued, c.send_queue
                ));
            }
            if s.inflight.len() > c.max_inflight {
                return Err(format!("session {conn}: {} in flight", s.inflight.len()));
            }
            let held = s.held.as_ref().map_or(0, Vec::len);
            if held > c.max_inflight + c.send_queue {
                return Err(format!("session {conn}: {held} held"));
            }
            if !self.users.get(&s.uid).is_some_and(|l| l.contains(conn)) {
                return Err(format!(
                    "session {conn} of {} missing from the user index",
                    s.uid
                ));
            }
        }
        if writes != self.writes {
            return Err(format!("{} writes counted, {writes} queued", self.writes));
        }
        for (uid, list) in &self.users {
            if list.is_empty()
                || list
                    .iter()
                    .any(|c| self.sessions.get(c).is_none_or(|s| s.uid != *uid))
            {
                return Err(format!("user index of {uid} is stale: {list:?}"));
            }
        }
        let backlog: usize = self.fanout.iter().map(|(b, at)| b.uids.len() - at).sum();
        if backlog != self.backlog {
            return Err(format!(
                "fan-out backlog {} counted, {backlog} queued",
                self.backlog
            ));
        }
        Ok(())
    }
}
