//! The shard's live connections as its tasks see them: each one's queue of output for its
//! writer, its parked reader and writer, and the write in progress (for the write timeout).
//!
//! An idle connection holds no buffer here: output queues and write buffers come from
//! per-shard pools when a connection has something to send and go back when its writer has
//! sent it all, so memory follows the connections that are busy, not the ones that are
//! open. Write timeouts are one map of the writes in progress, checked on the shard's timer
//! tick, not a timer per write.
//!
//! A plain connection that has been quiet for a while sleeps: its task ends and its socket
//! waits here (see [`crate::net::plain`]). Output for it, or input (through the shard's
//! [`Sleepers`]), puts it on the list of connections to wake, which the shard's wake task
//! takes with [`ConnTable::poll_woken`].

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::task::{Context, Poll, Waker};

use monoio::net::TcpStream;
use rustc_hash::FxHashMap as HashMap;

use crate::engine::{ConnId, Out, Time};
use crate::net::sleep::Sleepers;
use crate::net::transport::TransportKind;

/// Spare queues and buffers kept per shard (enough for every writer busy at once).
const POOL_MAX: usize = 1024;
/// A write buffer larger than this is not pooled (one large burst does not pin memory).
const POOL_BUF_MAX: usize = 128 * 1024;

/// One connection's state in the table.
struct Conn {
    /// Items for the writer, in order.
    out: VecDeque<Out>,
    /// The writer, parked on an empty queue.
    writer: Option<Waker>,
    /// The reader, parked until the engine lets it read again.
    reader: Option<Waker>,
    /// The socket of a sleeping connection (it has no task).
    asleep: Option<Box<TcpStream>>,
    /// The socket, shut down when a write outlives the write timeout.
    fd: RawFd,
    kind: TransportKind,
    /// The reader saw the peer close its side.
    peer_closed: bool,
    /// A plain connection: it may sleep.
    plain: bool,
    /// The sweep asked its task to consider sleeping.
    sleep_asked: bool,
    /// On the list of connections to wake.
    waking: bool,
    /// The socket is in the sleep set (disarmed or armed).
    in_sleep_set: bool,
}

/// The connections of one shard (inside the shard's `RefCell`).
#[derive(Default)]
pub(crate) struct ConnTable {
    conns: HashMap<ConnId, Conn>,
    /// Writes in progress and when they started.
    writing: HashMap<ConnId, Time>,
    spare_queues: Vec<VecDeque<Out>>,
    spare_bufs: Vec<Vec<u8>>,
    /// Where sleeping sockets wait for input (none: connections never sleep).
    sleepers: Option<Sleepers>,
    /// Sleeping connections to wake, and the task that wakes them.
    woken: Vec<ConnId>,
    waker: Option<Waker>,
    asleep: usize,
}

impl ConnTable {
    /// A table whose plain connections may sleep in `sleepers`.
    pub fn with_sleepers(sleepers: Option<Sleepers>) -> Self {
        Self {
            sleepers,
            ..Self::default()
        }
    }

    /// No connection sleeps from now on (there is no way to wake them).
    pub fn disable_sleep(&mut self) {
        self.sleepers = None;
    }

    pub fn sleepers(&self) -> Option<&Sleepers> {
        self.sleepers.as_ref()
    }

    /// A new connection; `plain` ones (no TLS) may sleep.
    pub fn insert(&mut self, conn: ConnId, fd: RawFd, kind: TransportKind, plain: bool) {
        self.conns.insert(
            conn,
            Conn {
                out: VecDeque::new(),
                writer: None,
                reader: None,
                asleep: None,
                fd,
                kind,
                peer_closed: false,
                plain,
                sleep_asked: false,
                waking: false,
                in_sleep_set: false,
            },
        );
    }

    /// Forgets a connection whose writer is done.
    pub fn remove(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            if c.asleep.is_some() {
                self.asleep -= 1;
            }
            self.recycle_queue(c.out);
        }
        self.writing.remove(&conn);
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Queues an item for the connection's writer and wakes it. Nothing happens for a
    /// connection that is gone.
    pub fn push(&mut self, conn: ConnId, item: Out) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.out.capacity() == 0 {
            if let Some(q) = self.spare_queues.pop() {
                c.out = q;
            }
        }
        c.out.push_back(item);
        if let Some(w) = c.writer.take() {
            w.wake();
        } else if c.asleep.is_some() && !c.waking {
            c.waking = true;
            self.woken.push(conn);
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }

    /// Swaps the connection's queued output into `batch` (which the writer has emptied), or
    /// parks the writer when there is none — then `batch` goes back to the pool, so a
    /// parked writer holds no queue. `Ready(false)`: the connection is gone.
    pub fn poll_out(
        &mut self,
        conn: ConnId,
        cx: &mut Context<'_>,
        batch: &mut VecDeque<Out>,
    ) -> Poll<bool> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Poll::Ready(false);
        };
        if c.out.is_empty() {
            c.writer = Some(cx.waker().clone());
            let spare = std::mem::take(batch);
            self.recycle_queue(spare);
            return Poll::Pending;
        }
        std::mem::swap(&mut c.out, batch);
        Poll::Ready(true)
    }

    /// Asks every awake plain connection whose task is parked with nothing to write to
    /// consider sleeping (its task decides, from when it was last busy; a request it
    /// declines stays, and the next sweep wakes it again).
    pub fn ask_to_sleep(&mut self) {
        if self.sleepers.is_none() {
            return;
        }
        for c in self.conns.values_mut() {
            if c.plain && c.asleep.is_none() {
                if let Some(w) = c.writer.take() {
                    c.sleep_asked = true;
                    w.wake();
                }
            }
        }
    }

    /// Whether the sweep asked the connection to sleep (the request is used up).
    pub fn take_sleep_request(&mut self, conn: ConnId) -> bool {
        self.conns
            .get_mut(&conn)
            .is_some_and(|c| std::mem::take(&mut c.sleep_asked))
    }

    /// Arms the sleep set for the connection's socket. False: it cannot sleep now.
    pub fn arm_sleep(&mut self, conn: ConnId) -> bool {
        let (Some(sl), Some(c)) = (self.sleepers.as_ref(), self.conns.get_mut(&conn)) else {
            return false;
        };
        match sl.arm(c.fd, conn, c.in_sleep_set) {
            Ok(()) => {
                c.in_sleep_set = true;
                true
            }
            Err(e) => {
                tracing::debug!(session = conn, error = %e, "cannot put connection to sleep");
                false
            }
        }
    }

    /// The connection's task has ended, leaving its socket here (armed by
    /// [`ConnTable::arm_sleep`]). The task's wakers go with it. A connection with output
    /// already queued is woken at once.
    pub fn put_to_sleep(&mut self, conn: ConnId, stream: TcpStream) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.asleep = Some(Box::new(stream));
        c.reader = None;
        c.writer = None;
        self.asleep += 1;
        if !c.out.is_empty() && !c.waking {
            c.waking = true;
            self.woken.push(conn);
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }

    /// Takes a sleeping connection's socket to give it a task again. `None`: the
    /// connection is awake or gone.
    pub fn wake(&mut self, conn: ConnId) -> Option<(TcpStream, TransportKind)> {
        let c = self.conns.get_mut(&conn)?;
        c.waking = false;
        let stream = c.asleep.take()?;
        self.asleep -= 1;
        Some((*stream, c.kind))
    }

    /// Moves the connections to wake into `out`, or parks the wake task. True: some.
    pub fn poll_woken(&mut self, cx: &mut Context<'_>, out: &mut Vec<ConnId>) -> bool {
        if self.woken.is_empty() {
            self.waker = Some(cx.waker().clone());
            return false;
        }
        std::mem::swap(&mut self.woken, out);
        true
    }

    /// Connections sleeping now.
    pub fn sleeping(&self) -> usize {
        self.asleep
    }

    /// Parks the connection's reader until [`ConnTable::wake_reader`].
    pub fn park_reader(&mut self, conn: ConnId, waker: &Waker) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.reader = Some(waker.clone());
        }
    }

    pub fn wake_reader(&mut self, conn: ConnId) {
        if let Some(w) = self.conns.get_mut(&conn).and_then(|c| c.reader.take()) {
            w.wake();
        }
    }

    /// The reader saw end of input: the peer closed its side.
    pub fn set_peer_closed(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.peer_closed = true;
        }
    }

    pub fn peer_closed(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.peer_closed)
    }

    /// An empty write buffer, from the pool when it has one.
    pub fn take_buf(&mut self) -> Vec<u8> {
        self.spare_bufs.pop().unwrap_or_default()
    }

    /// Returns a write buffer to the pool (cleared; dropped when large or the pool is full).
    pub fn give_buf(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > POOL_BUF_MAX {
            return;
        }
        if self.spare_bufs.len() < POOL_MAX {
            buf.clear();
            self.spare_bufs.push(buf);
        }
    }

    fn recycle_queue(&mut self, mut q: VecDeque<Out>) {
        if q.capacity() > 0 && q.capacity() <= 4096 && self.spare_queues.len() < POOL_MAX {
            q.clear();
            self.spare_queues.push(q);
        }
    }

    pub fn write_started(&mut self, conn: ConnId, now: Time) {
        self.writing.insert(conn, now);
    }

    pub fn write_finished(&mut self, conn: ConnId) {
        self.writing.remove(&conn);
    }

    /// The sockets of writes in progress for at least `timeout_us` (each reported once;
    /// shutting the socket down makes the write fail, which closes the session).
    pub fn overdue_writes(&mut self, now: Time, timeout_us: u64) -> Vec<RawFd> {
        let mut fds = Vec::new();
        let conns = &self.conns;
        self.writing.retain(|conn, since| {
            if now.micros_since(*since) < timeout_us {
                return true;
            }
            if let Some(c) = conns.get(conn) {
                fds.push(c.fd);
            }
            false
        });
        fds
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn ping() -> Out {
        Out::Small {
            buf: [0; crate::engine::SMALL],
            len: 1,
        }
    }

    #[test]
    fn a_parked_writer_holds_no_queue_and_is_woken_in_order() {
        let mut t = ConnTable::default();
        t.insert(1, -1, TransportKind::Tcp, false);
        let count = Arc::new(Count(0.into()));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut batch = VecDeque::new();
        assert_eq!(t.poll_out(1, &mut cx, &mut batch), Poll::Pending);
        t.push(1, ping());
        t.push(1, Out::Close);
        assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(t.poll_out(1, &mut cx, &mut batch), Poll::Ready(true));
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.back(), Some(&Out::Close));
        batch.clear();
        // Parking again gives the emptied queue to the pool: the writer keeps nothing.
        assert_eq!(t.poll_out(1, &mut cx, &mut batch), Poll::Pending);
        assert_eq!(batch.capacity(), 0);
        assert_eq!(t.spare_queues.len(), 1);
        // The next push takes it back.
        t.push(1, ping());
        assert!(t.spare_queues.is_empty());
        t.remove(1);
        assert_eq!(t.poll_out(1, &mut cx, &mut batch), Poll::Ready(false));
        t.push(1, ping()); // gone: ignored
    }

    #[test]
    fn overdue_writes_are_reported_once() {
        let mut t = ConnTable::default();
        t.insert(1, 10, TransportKind::Tcp, false);
        t.insert(2, 20, TransportKind::Tcp, false);
        t.write_started(1, Time(0));
        t.write_started(2, Time(500));
        t.write_finished(2);
        assert!(t.overdue_writes(Time(999), 1000).is_empty());
        assert_eq!(t.overdue_writes(Time(1000), 1000), vec![10]);
        assert!(t.overdue_writes(Time(5000), 1000).is_empty());
    }

    #[test]
    fn pooled_buffers_are_cleared_and_bounded() {
        let mut t = ConnTable::default();
        let mut b = t.take_buf();
        b.extend_from_slice(b"abc");
        t.give_buf(b);
        let b = t.take_buf();
        assert!(b.is_empty() && b.capacity() >= 3);
        t.give_buf(vec![0; POOL_BUF_MAX + 1]);
        assert!(t.spare_bufs.is_empty());
    }
}
