//! One shard's driver: a monoio runtime on its own (pinned) thread that feeds the shard's
//! [`Engine`] events and carries out its actions, never blocking the thread.
//!
//! Tasks on a shard: the listeners (pre-auth, [`crate::listener`]), one task per plain
//! connection that is awake ([`crate::net::plain`]; a quiet one sleeps without a task
//! until the wake task gives it one again), a reader and a writer per TLS connection
//! ([`crate::conn`]), the mailbox loop (mail from other shards and
//! the control plane), the fan-out worker (one step of a large group batch at a time,
//! yielding to the runtime between steps), the timer (heartbeats, redelivery) and one
//! short task per storage or group-store operation awaiting its reply. Every one of them
//! reaches the engine through [`Shard::dispatch`]; waits are wake-ups, not polls: a full
//! mailbox parks its mail in a local outbox drained by a task woken when there is room,
//! storage operations are queued without blocking, and readers stop reading while their
//! publishes are committed, the outbox holds mail or the storage queue is over its limit.
//!
//! Lifecycle: bind listeners → serve → on shutdown: stop accepting, close every session
//! (unacked pushes go to storage), wait for all shards to get there, then deliver (that is,
//! store) whatever is still in the mailboxes, flush storage, exit.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use im_storage::{GroupStore, StoreHandle};
use monoio::io::Splitable;
use monoio::net::TcpStream;
use rustc_hash::FxHashMap as HashMap;

use crate::auth::callback::AuthCallback;
use crate::auth::limiter::AuthLimiter;
use crate::auth::TokenAuth;
use crate::config::CoreConfig;
use crate::engine::requests::ControlError;
use crate::engine::{Action, ConnId, Engine, Event, Time, Token};
use crate::membership::GroupCache;
use crate::net::conn;
use crate::net::handoff::{Arrival, Handoff};
use crate::net::input::{OwnedInput, SocketInput};
use crate::net::listener;
use crate::net::plain::plain_conn;
use crate::net::sleep::Sleepers;
use crate::net::table::ConnTable;
use crate::net::tls_session;
use crate::net::transport::TransportKind;
use crate::route::link::ClusterLink;
use crate::route::mailbox::Mesh;
use crate::route::nodes::NodeMap;
use crate::route::{Mail, Request};
use crate::stats::ShardStats;

mod actions;
mod ports;
mod timer;
mod wake;

pub(crate) use timer::MEMORY_TRIM;

/// What every shard shares (read-only) with the others.
pub struct Shared {
    pub cfg: Arc<CoreConfig>,
    pub mesh: Arc<Mesh<Mail>>,
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
    /// The way to other nodes, and the live set at start (in a cluster).
    pub cluster: Option<(Arc<dyn ClusterLink>, Arc<NodeMap>)>,
}

/// The engine's clock: microseconds since the first call in this process (one origin for
/// every shard, so times carried in mail compare).
pub(crate) fn now() -> Time {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    Time(ORIGIN.get_or_init(Instant::now).elapsed().as_micros() as u64)
}

/// Mail that found its destination's queue full, in order, per destination.
#[derive(Default)]
struct Outbox {
    queues: Vec<VecDeque<Mail>>,
    /// A task is sending `queues[i]`.
    flushing: Vec<bool>,
    len: usize,
    /// Readers waiting for the outbox to empty.
    waiting: Vec<Waker>,
}

/// Tasks parked on the engine's counters.
#[derive(Default)]
struct Wakers {
    /// The fan-out worker, waiting for work.
    fanout: Option<Waker>,
    /// The fan-out worker, waiting for the writes of its last step.
    writes: Option<Waker>,
    /// The mailbox loop, waiting for the fan-out backlog to come down.
    backlog: Option<Waker>,
    /// Shutdown, waiting for the writers to finish.
    conns: Option<Waker>,
}

pub(crate) struct Shard {
    pub id: usize,
    pub cfg: Arc<CoreConfig>,
    pub mesh: Arc<Mesh<Mail>>,
    pub store: StoreHandle,
    pub auth: Arc<TokenAuth>,
    pub limiter: Arc<AuthLimiter>,
    pub callback: Option<Arc<dyn AuthCallback>>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub stats: Arc<ShardStats>,
    /// The way to other nodes (in a cluster).
    cluster: Option<Arc<dyn ClusterLink>>,
    groups: Rc<GroupCache>,
    engine: RefCell<Engine>,
    /// Reused action buffer.
    actions: RefCell<Vec<Action>>,
    /// Answers the driver has at once (a cached membership): handled right after the
    /// actions of the event that asked, in order, without a task.
    ready: RefCell<VecDeque<Event<'static>>>,
    conns: RefCell<ConnTable>,
    /// The read buffer plain sockets' readers share (see [`SocketInput`]).
    read_buf: RefCell<Vec<u8>>,
    next_conn: Cell<ConnId>,
    replies: RefCell<HashMap<Token, oneshot::Sender<Result<(), ControlError>>>>,
    next_reply: Cell<Token>,
    outbox: RefCell<Outbox>,
    wakers: RefCell<Wakers>,
    /// Counted in the mesh's pending routes (holds accepted messages not yet handed on).
    busy: Cell<bool>,
    stopping: Cell<bool>,
    /// Events handed to the engine so far (the timer trims memory only when few arrive).
    events: Cell<u64>,
}

impl Shard {
    fn new(id: usize, shared: &Shared) -> Rc<Self> {
        let shards = shared.mesh.shards();
        let mut engine = Engine::new(id, shards, shared.cfg.clone(), shared.stats[id].clone());
        let cluster = shared.cluster.as_ref().map(|(link, map)| {
            engine.handle(now(), Event::Nodes(map.clone()), &mut Vec::new());
            link.clone()
        });
        Rc::new(Self {
            id,
            cfg: shared.cfg.clone(),
            mesh: shared.mesh.clone(),
            store: shared.store.clone(),
            auth: shared.auth.clone(),
            limiter: shared.limiter.clone(),
            callback: shared.callback.clone(),
            tls: shared.tls.clone(),
            stats: shared.stats[id].clone(),
            cluster,
            groups: Rc::new(GroupCache::new(
                shared.groups.clone(),
                Duration::from_millis(shared.cfg.groups.cache_ttl_ms),
                shared.cfg.groups.cache_max_groups,
                shards,
            )),
            engine: RefCell::new(engine),
            actions: RefCell::new(Vec::new()),
            ready: RefCell::new(VecDeque::new()),
            conns: RefCell::new(ConnTable::with_sleepers(
                Sleepers::new()
                    .inspect_err(
                        |e| tracing::warn!(shard = id, error = %e, "connections will not sleep"),
                    )
                    .ok(),
            )),
            read_buf: RefCell::new(Vec::new()),
            next_conn: Cell::new(0),
            replies: RefCell::new(HashMap::default()),
            next_reply: Cell::new(0),
            outbox: RefCell::new(Outbox {
                queues: (0..shards).map(|_| VecDeque::new()).collect(),
                flushing: vec![false; shards],
                ..Outbox::default()
            }),
            wakers: RefCell::new(Wakers::default()),
            busy: Cell::new(false),
            stopping: Cell::new(false),
            events: Cell::new(0),
        })
    }

    /// Hands the engine one event and carries out what it asks for.
    pub fn dispatch(self: &Rc<Self>, ev: Event<'_>) {
        self.feed(now(), ev);
        self.after_dispatch();
    }

    /// [`Shard::dispatch`] at a given time and without waking parked tasks: for several
    /// events in a row (the packets of one read, the mail of one drain), followed by one
    /// [`Shard::after_dispatch`].
    pub fn feed(self: &Rc<Self>, t: Time, ev: Event<'_>) {
        self.events.set(self.events.get() + 1);
        let mut actions = self.actions.take();
        self.engine.borrow_mut().handle(t, ev, &mut actions);
        for a in actions.drain(..) {
            self.execute(a);
        }
        loop {
            let next = self.ready.borrow_mut().pop_front();
            let Some(ev) = next else { break };
            self.engine.borrow_mut().handle(t, ev, &mut actions);
            for a in actions.drain(..) {
                self.execute(a);
            }
        }
        self.actions.replace(actions);
    }

    /// Wakes the tasks parked on the engine's counters that moved.
    pub fn after_dispatch(&self) {
        let (backlog, writes, commits) = {
            let e = self.engine.borrow();
            (e.fanout_backlog(), e.queued_writes(), e.commits_pending())
        };
        let mut w = self.wakers.borrow_mut();
        if backlog > 0 {
            if let Some(k) = w.fanout.take() {
                k.wake();
            }
        }
        if backlog <= self.cfg.groups.fanout_backlog {
            if let Some(k) = w.backlog.take() {
                k.wake();
            }
        }
        if writes <= self.cfg.groups.fanout_chunk {
            if let Some(k) = w.writes.take() {
                k.wake();
            }
        }
        drop(w);
        self.set_busy(commits > 0 || self.outbox.borrow().len > 0);
        if self.stopping.get() {
            self.mesh.wake(self.id);
        }
    }

    fn set_busy(&self, busy: bool) {
        if self.busy.replace(busy) != busy {
            if busy {
                self.mesh.route_started();
            } else {
                self.mesh.route_done();
            }
        }
    }

    /// Mails another shard. A full queue parks the mail (in order) in the outbox, sent by
    /// a task that waits for room; readers stop reading until the outbox is empty.
    fn mail(self: &Rc<Self>, to: usize, m: Mail) {
        let mut ob = self.outbox.borrow_mut();
        let m = if ob.flushing[to] {
            m
        } else {
            match self.mesh.try_send(self.id, to, m) {
                Ok(()) => return,
                Err(back) => back,
            }
        };
        ob.queues[to].push_back(m);
        ob.len += 1;
        if !ob.flushing[to] {
            ob.flushing[to] = true;
            monoio::spawn(self.clone().flush_outbox(to));
        }
    }

    async fn flush_outbox(self: Rc<Self>, to: usize) {
        loop {
            let next = {
                let mut ob = self.outbox.borrow_mut();
                let m = ob.queues[to].pop_front();
                if m.is_none() {
                    ob.flushing[to] = false;
                }
                m
            };
            let Some(m) = next else { break };
            self.mesh.send(self.id, to, m).await;
            let waiting = {
                let mut ob = self.outbox.borrow_mut();
                ob.len -= 1;
                if ob.len == 0 {
                    std::mem::take(&mut ob.waiting)
                } else {
                    Vec::new()
                }
            };
            waiting.into_iter().for_each(Waker::wake);
        }
        self.after_dispatch();
    }

    /// The connection has a live session that reads input.
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.engine.borrow().is_open(conn)
    }

    /// Ready when the connection may read more input: its publishes are committed, no mail
    /// waits for room and the storage queue is below its limit. Otherwise the task is
    /// woken when that may have changed.
    pub fn poll_readable(&self, conn: ConnId, cx: &mut Context<'_>) -> Poll<()> {
        if !self.engine.borrow().may_read(conn) {
            self.conns.borrow_mut().park_reader(conn, cx.waker());
            return Poll::Pending;
        }
        let mut ob = self.outbox.borrow_mut();
        if ob.len > 0 {
            ob.waiting.push(cx.waker().clone());
            return Poll::Pending;
        }
        self.store.poll_room(cx)
    }

    /// The writer of `conn` is done: the connection leaves the shard.
    pub fn conn_done(&self, conn: ConnId) {
        let mut conns = self.conns.borrow_mut();
        conns.remove(conn);
        if conns.is_empty() {
            if let Some(w) = self.wakers.borrow_mut().conns.take() {
                w.wake();
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
        // No `set_nonblocking` (an ioctl per login): the epoll driver accepts with
        // SOCK_NONBLOCK already, and on io_uring every operation on the socket is a ring
        // operation or a `recv` with MSG_DONTWAIT, which never block either way.
        let stream = match TcpStream::from_std(std::net::TcpStream::from(fd)) {
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
                let pending = std::mem::take(&mut h.leftover);
                let conn = self.open(fd, &h, true);
                let input = SocketInput::new(rd, fd, pending);
                monoio::spawn(plain_conn(self.clone(), conn, input, h.framing, wr, fd));
            }
            Some(st) => match tls_session::resume(stream, st, &mut h.leftover) {
                Ok((rd, wr)) => {
                    let pending = std::mem::take(&mut h.leftover);
                    let conn = self.open(fd, &h, false);
                    let kind = h.framing.kind;
                    monoio::spawn(conn::write_loop(self.clone(), conn, kind, fd, wr));
                    let input = OwnedInput::new(rd, pending);
                    monoio::spawn(conn::read_loop(self.clone(), conn, input, h.framing));
                }
                Err(e) => tracing::debug!(error = %e, "TLS session could not be resumed"),
            },
        }
    }

    /// Gives an adopted connection its id, table entry and session.
    fn open(self: &Rc<Self>, fd: RawFd, h: &Arrival, plain: bool) -> ConnId {
        let conn = self.next_conn.get();
        self.next_conn.set(conn + 1);
        let kind: TransportKind = h.framing.kind;
        self.conns.borrow_mut().insert(conn, fd, kind, plain);
        self.dispatch(Event::Open {
            conn,
            uid: h.uid,
            role: h.role,
            ext: h.flags & im_protocol::packet::FLAG_EXTENSIONS != 0,
            kind,
        });
        conn
    }

    fn handle_mail(self: &Rc<Self>, t: Time, mail: Mail) {
        match mail {
            Mail::Deliver(d) => self.feed(t, Event::Deliver(d)),
            Mail::Fanout(b) => self.feed(t, Event::Fanout(b)),
            Mail::Handoff(h) => self.attach(h),
            Mail::Control(r) => self.handle_control(r),
            Mail::Nodes(map) => self.feed(t, Event::Nodes(map)),
            Mail::Evicted => self.feed(t, Event::Evicted),
        }
    }

    fn handle_control(self: &Rc<Self>, req: Request) {
        match req {
            Request::Ping { reply } => {
                let _ = reply.send(());
            }
            Request::Online { uid, reply } => {
                let _ = reply.send(self.engine.borrow().sessions_info(uid));
            }
            Request::Send { msg, reply } => {
                let token = self.next_reply.get() + 1;
                self.next_reply.set(token);
                self.replies.borrow_mut().insert(token, reply);
                self.dispatch(Event::Send { msg, reply: token });
            }
        }
    }

    /// Serves mail until shutdown is requested.
    async fn mailbox_loop(self: Rc<Self>) {
        while !self.mesh.shutdown_requested() {
            self.mesh.ready(self.id).await;
            // Too much fan-out queued: leave the mail where it is (senders wait on full
            // mailboxes) until the fan-out worker catches up. The worker keeps serving
            // during shutdown too, so this always ends.
            let limit = self.cfg.groups.fanout_backlog;
            poll_fn(|cx| {
                if self.engine.borrow().fanout_backlog() <= limit {
                    Poll::Ready(())
                } else {
                    self.wakers.borrow_mut().backlog = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            let t = now();
            self.mesh.drain(self.id, |m| self.handle_mail(t, m));
            self.after_dispatch();
        }
    }

    /// Serves the engine's fan-out queue step by step until the runtime ends. Between
    /// steps it lets the writes of the last step reach the kernel first: otherwise one
    /// io_uring submission (or epoll round) would carry thousands of writes, and every
    /// other session's packet on the shard would queue behind them.
    async fn fanout_worker(self: Rc<Self>) {
        let low_water = self.cfg.groups.fanout_chunk;
        loop {
            poll_fn(|cx| {
                if self.engine.borrow().fanout_backlog() > 0 {
                    Poll::Ready(())
                } else {
                    self.wakers.borrow_mut().fanout = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            self.dispatch(Event::FanoutStep);
            yield_now().await;
            let drained = poll_fn(|cx| {
                if self.engine.borrow().queued_writes() <= low_water {
                    Poll::Ready(())
                } else {
                    self.wakers.borrow_mut().writes = Some(cx.waker().clone());
                    Poll::Pending
                }
            });
            // A few clients that stopped reading must not stall fan-out for everyone.
            let _ = monoio::time::timeout(WRITE_WAIT, drained).await;
        }
    }
}

/// Longest the fan-out worker waits for the writes of its last step before going on.
const WRITE_WAIT: Duration = Duration::from_millis(20);

/// Yields once to the runtime (other tasks and I/O completions run first).
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
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
        match listener::bind(&shard.cfg, port) {
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
    monoio::spawn(shard.clone().fanout_worker());
    monoio::spawn(shard.clone().timer());
    monoio::spawn(shard.clone().wake_loop());
    shard.clone().mailbox_loop().await;

    // Shutdown, phase 1: stop accepting, close sessions (their pushes go to storage).
    tracing::debug!(shard = id, "shutting down");
    shard.stopping.set(true);
    for s in stops {
        let _ = s.send(());
    }
    shard.dispatch(Event::Shutdown);
    shard.mesh.closed_barrier(id).await;
    // Phase 2: no session exists anywhere, so no new routes start; deliver (store) what is
    // still on its way until no shard holds an accepted message. Woken by mail, by the
    // local fan-out worker and by the last shard to finish its routes.
    loop {
        shard.mesh.drain(id, |m| shard.handle_mail(now(), m));
        shard.after_dispatch();
        let idle =
            || shard.mesh.routes_pending() == 0 && shard.engine.borrow().fanout_backlog() == 0;
        if idle() && shard.mesh.inbox_empty(id) {
            break;
        }
        shard.mesh.wait(id, idle).await;
    }
    if let Err(e) = shard.store.flush().await {
        tracing::error!(shard = id, error = %e, "final storage flush failed");
    }
    // Let the writers send their last packets (DISCONNECT) before the runtime ends.
    let writers_done = poll_fn(|cx| {
        if shard.conns.borrow().is_empty() {
            Poll::Ready(())
        } else {
            shard.wakers.borrow_mut().conns = Some(cx.waker().clone());
            Poll::Pending
        }
    });
    let _ = monoio::time::timeout(Duration::from_secs(1), writers_done).await;
}
