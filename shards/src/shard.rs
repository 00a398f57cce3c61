//! One shard: a monoio runtime on its own (pinned) thread that owns a slice of the users.
//!
//! The shard holds the sessions of the users it owns (`owner_of(uid) == id`), the dedupe
//! window of their publishes, its listeners, and its mailbox task. Nothing here is shared
//! with other threads except through the [`Mesh`] mailboxes and the [`StoreHandle`].
//!
//! Lifecycle: bind listeners → serve → on shutdown: stop accepting, close every session
//! (unacked pushes go to storage), wait for all shards to get there, then deliver (that is,
//! store) whatever is still in the mailboxes, flush storage, exit.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use im_protocol::packet::connack;
use im_protocol::ServerPacket;
use im_storage::{now_ms, GroupStore, OfflineMessage, StoreHandle};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Splitable};
use monoio::net::TcpStream;

use crate::auth::TokenAuth;
use crate::callback::AuthCallback;
use crate::config::{CoreConfig, DuplicateLogin};
use crate::conn::{self, refuse_and_close_split};
use crate::dedupe::Dedupe;
use crate::delivery::Delivery;
use crate::fanout::{self, Fanout};
use crate::groups::GroupCache;
use crate::handoff::{Arrival, Handoff};
use crate::limiter::AuthLimiter;
use crate::listener;
use crate::mailbox::{Mail, Mesh};
use crate::offline;
use crate::routing::owner_of;
use crate::session::{CloseReason, Session, Tracked};
use crate::stats::{Msg, ShardStats};
use crate::tls_session;
use crate::transport::TransportKind;

/// What every shard shares (read-only) with the others.
pub struct Shared {
    pub cfg: Arc<CoreConfig>,
    pub mesh: Arc<Mesh>,
    pub store: StoreHandle,
    pub auth: Arc<TokenAuth>,
    /// Failed CONNECTs per source address (CONNECT_ACK 5 past the limit).
    pub limiter: Arc<AuthLimiter>,
    pub groups: Arc<dyn GroupStore>,
    /// The HTTP authentication callback (`auth.mode = "http"`).
    pub callback: Option<Arc<dyn AuthCallback>>,
    /// TLS settings when `tls.enabled`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Counters, one set per shard.
    pub stats: Vec<Arc<ShardStats>>,
}

pub(crate) struct Shard {
    pub id: usize,
    pub cfg: Arc<CoreConfig>,
    pub mesh: Arc<Mesh>,
    pub store: StoreHandle,
    pub auth: Arc<TokenAuth>,
    pub limiter: Arc<AuthLimiter>,
    pub callback: Option<Arc<dyn AuthCallback>>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub dedupe: RefCell<Dedupe>,
    pub groups: GroupCache,
    pub fanout: Fanout,
    pub stats: Arc<ShardStats>,
    users: RefCell<HashMap<u32, Vec<Rc<Session>>>>,
    next_session: Cell<u64>,
    stopping: Cell<bool>,
}

impl Shard {
    fn new(id: usize, shared: &Shared) -> Rc<Self> {
        Rc::new(Self {
            id,
            cfg: shared.cfg.clone(),
            mesh: shared.mesh.clone(),
            store: shared.store.clone(),
            auth: shared.auth.clone(),
            limiter: shared.limiter.clone(),
            callback: shared.callback.clone(),
            tls: shared.tls.clone(),
            dedupe: RefCell::new(Dedupe::new(Duration::from_millis(
                shared.cfg.delivery.dedupe_window_ms,
            ))),
            groups: GroupCache::new(
                shared.groups.clone(),
                Duration::from_millis(shared.cfg.groups.cache_ttl_ms),
                shared.cfg.groups.cache_max_groups,
                shared.mesh.shards(),
            ),
            fanout: Fanout::default(),
            stats: shared.stats[id].clone(),
            users: RefCell::new(HashMap::new()),
            next_session: Cell::new(0),
            stopping: Cell::new(false),
        })
    }

    /// Expiry of a message stored now.
    pub fn expiry_ms(&self) -> u64 {
        now_ms().saturating_add(self.cfg.delivery.retention_days * 24 * 3600 * 1000)
    }

    /// Stores a message for later delivery (without waiting for the disk).
    pub fn persist(&self, uid: u32, frame: Bytes) {
        self.stats.message(Msg::StoredOffline, 1);
        self.store.append_detached(vec![OfflineMessage {
            uid,
            frame,
            expires_at_ms: self.expiry_ms(),
        }]);
    }

    /// Sends a message to its owner shard (here or through a mailbox).
    pub async fn route(self: &Rc<Self>, d: Delivery) {
        let owner = owner_of(d.to, self.mesh.shards());
        if owner == self.id {
            self.deliver(d);
        } else {
            self.mesh.send(self.id, owner, Mail::Deliver(d)).await;
        }
    }

    /// Delivers a message for a user this shard owns: to every session, or to storage.
    pub fn deliver(&self, d: Delivery) {
        let sessions = self.users.borrow().get(&d.to).cloned().unwrap_or_default();
        if sessions.is_empty() {
            if d.seq.is_none() {
                self.persist(d.to, d.frame);
            }
            return;
        }
        let track = Tracked::new(
            d.to,
            d.frame,
            d.seq,
            sessions.len() as u32,
            Some(d.accepted),
        );
        for s in sessions {
            s.push(track.clone());
        }
    }

    /// Pushes a message to a local user's sessions other than `except` (a sender's other
    /// devices). Nothing is stored when there are none: the sender has the message.
    pub fn deliver_except(&self, uid: u32, frame: Bytes, except: u64, accepted: Instant) {
        let others: Vec<Rc<Session>> = self
            .users
            .borrow()
            .get(&uid)
            .map(|l| l.iter().filter(|s| s.id != except).cloned().collect())
            .unwrap_or_default();
        if others.is_empty() {
            return;
        }
        let track = Tracked::new(uid, frame, None, others.len() as u32, Some(accepted));
        for s in others {
            s.push(track.clone());
        }
    }

    /// Appends `uid`'s sessions to `out` (a reused buffer: no allocation per member).
    pub fn sessions_of(&self, uid: u32, out: &mut Vec<Rc<Session>>) {
        if let Some(l) = self.users.borrow().get(&uid) {
            out.extend(l.iter().cloned());
        }
    }

    pub fn unregister(&self, uid: u32, session: u64) {
        let mut users = self.users.borrow_mut();
        if let Some(list) = users.get_mut(&uid) {
            list.retain(|s| s.id != session);
            if list.is_empty() {
                users.remove(&uid);
            }
        }
    }

    /// Adopts an authenticated connection for a user this shard owns.
    pub fn attach(self: &Rc<Self>, h: Handoff) {
        let Handoff {
            fd,
            tls,
            session: mut h,
        } = h;
        let std_stream = std::net::TcpStream::from(fd);
        let stream = match std_stream
            .set_nonblocking(true)
            .and_then(|_| TcpStream::from_std(std_stream))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot adopt connection");
                return;
            }
        };
        let fd = stream.as_raw_fd();
        match tls {
            None => {
                let (rd, wr) = stream.into_split();
                self.adopt(rd, wr, fd, h)
            }
            Some(st) => match tls_session::resume(stream, st, &mut h.leftover) {
                Ok((rd, wr)) => self.adopt(rd, wr, fd, h),
                Err(e) => tracing::debug!(error = %e, "TLS session could not be resumed"),
            },
        }
    }

    fn adopt<R, W>(self: &Rc<Self>, rd: R, wr: W, fd: std::os::fd::RawFd, h: Arrival)
    where
        R: AsyncReadRent + 'static,
        W: AsyncWriteRent + 'static,
    {
        let linger = Duration::from_millis(self.cfg.session.close_linger_ms);
        let kind = h.framing.kind;
        if self.stopping.get() {
            monoio::spawn(refuse_and_close_split(
                rd,
                wr,
                fd,
                kind,
                Some(ServerPacket::ConnectAck {
                    code: connack::UNAVAILABLE,
                }),
                linger,
            ));
            return;
        }
        let existing = self.users.borrow().get(&h.uid).cloned().unwrap_or_default();
        match self.cfg.session.duplicate_login {
            DuplicateLogin::Reject if !existing.is_empty() => {
                let nack = ServerPacket::ConnectAck {
                    code: connack::DUPLICATE,
                };
                monoio::spawn(refuse_and_close_split(rd, wr, fd, kind, Some(nack), linger));
                return;
            }
            DuplicateLogin::KickOld => existing.iter().for_each(|s| s.close(CloseReason::Kicked)),
            DuplicateLogin::Multi => {
                let excess = (existing.len() + 1).saturating_sub(self.cfg.session.max_devices);
                existing
                    .iter()
                    .take(excess)
                    .for_each(|s| s.close(CloseReason::Kicked));
            }
            DuplicateLogin::Reject => {}
        }
        let id = self.next_session.get();
        self.next_session.set(id + 1);
        let (tx, rx) = local_sync::mpsc::unbounded::channel();
        let session = Session::new(
            id,
            h.uid,
            h.role,
            h.flags & im_protocol::packet::FLAG_EXTENSIONS != 0,
            kind,
            fd,
            self.clone(),
            tx,
        );
        self.users
            .borrow_mut()
            .entry(h.uid)
            .or_default()
            .push(session.clone());
        self.stats.session_opened(kind);
        session.send_packet(&ServerPacket::ConnectAck {
            code: connack::ACCEPTED,
        });
        tracing::debug!(
            uid = h.uid,
            session = id,
            transport = kind.name(),
            "session open"
        );
        monoio::spawn(conn::write_loop(session.clone(), wr, rx));
        monoio::spawn(offline::drain(session.clone()));
        monoio::spawn(conn::read_loop(session, rd, h.leftover, h.framing));
    }

    fn handle_mail(self: &Rc<Self>, mail: Mail) {
        match mail {
            Mail::Deliver(d) => self.deliver(d),
            Mail::Handoff(h) => self.attach(h),
            Mail::Fanout(b) => self.fanout(b),
            Mail::Control(r) => self.handle_control(r),
        }
    }

    /// Serves mail until shutdown is requested.
    async fn mailbox_loop(self: Rc<Self>) {
        while !self.mesh.shutdown_requested() {
            self.mesh.ready(self.id).await;
            // Too much fan-out queued: leave the mail where it is (senders wait on full
            // mailboxes) until the fan-out worker catches up.
            // The worker keeps serving during shutdown too, so this always ends.
            self.fanout
                .backlog_at_most(self.cfg.groups.fanout_backlog)
                .await;
            let me = self.clone();
            self.mesh.drain(self.id, |m| me.handle_mail(m));
        }
    }

    fn close_all_sessions(&self) {
        let all: Vec<Rc<Session>> = self.users.borrow().values().flatten().cloned().collect();
        for s in all {
            s.close(CloseReason::Shutdown);
        }
    }
}

/// The body of a shard thread's runtime.
pub(crate) async fn run(
    id: usize,
    shared: Arc<Shared>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let shard = Shard::new(id, &shared);
    let mut stops = Vec::new();
    let mut listeners = vec![
        (shard.cfg.net.tcp_port, TransportKind::Tcp),
        (shard.cfg.net.ws_port, TransportKind::Ws),
    ];
    if shard.tls.is_some() {
        listeners.push((shard.cfg.tls.tcp_port, TransportKind::TcpTls));
        listeners.push((shard.cfg.tls.wss_port, TransportKind::Wss));
    }
    for (port, kind) in listeners {
        match listener::bind(&shard, port) {
            Ok(l) => {
                let (tx, rx) = local_sync::oneshot::channel();
                stops.push(tx);
                monoio::spawn(listener::accept_loop(shard.clone(), l, kind, rx));
            }
            Err(e) => {
                let _ = ready.send(Err(format!(
                    "shard {id}: cannot bind {} port {port}: {e}",
                    kind.name()
                )));
                return;
            }
        }
    }
    let _ = ready.send(Ok(()));
    monoio::spawn(fanout::worker(shard.clone()));
    shard.clone().mailbox_loop().await;

    // Shutdown, phase 1: stop accepting, close sessions (their pushes go to storage).
    tracing::debug!(shard = id, "shutting down");
    shard.stopping.set(true);
    for s in stops {
        let _ = s.send(());
    }
    shard.close_all_sessions();
    shard.mesh.closed_barrier().await;
    // Phase 2: no session exists anywhere, so no new routes start; deliver (store) what is
    // still on its way until no task anywhere holds an accepted message.
    loop {
        let me = shard.clone();
        shard.mesh.drain(id, |m| me.handle_mail(m));
        if shard.mesh.routes_pending() == 0 && shard.mesh.inbox_empty(id) && shard.fanout.is_idle()
        {
            break;
        }
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    if let Err(e) = shard.store.flush().await {
        tracing::error!(shard = id, error = %e, "final storage flush failed");
    }
    // Give writers a moment to send DISCONNECT before the runtime (and its sockets) ends.
    monoio::time::sleep(Duration::from_millis(50)).await;
}
