//! The one task of a plain connection (TCP or WebSocket, no TLS) on its owner shard, and
//! how a quiet one sleeps.
//!
//! [`PlainConn`] does what a TLS connection's reader and writer ([`crate::net::conn`]) do,
//! in one state machine polled by one task: it takes queued output and writes it (one
//! io_uring write at a time, coalesced up to 64 KiB), reads and parses input when the
//! engine lets it, and closes the same way (flush, half-close, linger while discarding
//! input, shut down). One task instead of two halves what an open connection costs in
//! tasks and wakers.
//!
//! **Sleep.** Once a second the shard's timer asks every plain connection whose task is
//! parked with nothing to write ([`ConnTable::ask_to_sleep`]). A task that has neither
//! read nor written for [`SLEEP_AFTER_US`], holds no partial frame and waits for input
//! arms the shard's sleep set with its socket, hands the socket to its table entry and
//! ends. A sleeping connection costs its session, its table entry and its socket: no
//! task, no future, no waker. Output for it (a push, a heartbeat ping, a close) or input
//! reported by the sleep set gives it a new task ([`plain_conn`] via the shard's wake
//! task). A connection busy at least once a second never sleeps, so a chat in progress
//! pays nothing for this.
//!
//! [`ConnTable::ask_to_sleep`]: crate::net::table::ConnTable::ask_to_sleep

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use monoio::io::{AsyncWriteRentExt, OwnedWriteHalf};
use monoio::net::TcpStream;

use crate::engine::{CloseReason, ConnId, Event as In, Out, Time};
use crate::net::conn::{fill, parse, shutdown, Host};
use crate::net::input::{Input, SocketInput};
use crate::net::transport::Framing;

/// How long a connection must have been quiet before it may sleep.
pub(crate) const SLEEP_AFTER_US: u64 = 1_000_000;

/// Most reads and writes per poll before the task yields to the shard's others.
const ROUNDS: usize = 32;

type WriteHalf = OwnedWriteHalf<TcpStream>;
/// A write in progress: it owns the write half and the buffer and gives both back.
type Writing = Pin<Box<dyn Future<Output = (WriteHalf, io::Result<usize>, Vec<u8>)>>>;

/// What the read side does.
enum Reading {
    /// Parses packets for the session.
    Packets,
    /// The session is over: reads and throws input away until EOF, so that unread input
    /// does not turn our close into a reset that would discard the last packet we sent.
    Discard,
    /// EOF or a read error: nothing more to read.
    Ended,
}

/// Where the close stands.
enum Closing {
    Open,
    /// `Out::Close` was taken: finish the write in progress, then close.
    Flush,
    /// Half-closed; the client gets this long to read our last packet and go away.
    Linger(Pin<Box<dyn Future<Output = ()>>>),
}

/// The task of a connection that has a session and a table entry on `shard`.
pub(crate) fn plain_conn<H: Host>(
    shard: Rc<H>,
    conn: ConnId,
    input: SocketInput,
    framing: Framing,
    wr: WriteHalf,
    fd: RawFd,
) -> PlainConn<H, impl Future<Output = io::Result<()>>> {
    let last_busy = shard.now();
    PlainConn {
        shard,
        conn,
        fd,
        input: Some(input),
        framing,
        wr: Some(wr),
        writing: None,
        items: 0,
        batch: VecDeque::new(),
        wait: None,
        waiting: false,
        new_wait: SocketInput::wait_ready,
        reading: Reading::Packets,
        closing: Closing::Open,
        held: false,
        last_busy,
        fresh: true,
        write_later: false,
    }
}

/// `W`: the socket's wait for input (a named type so that one allocation serves every
/// wait of the connection's life).
pub(crate) struct PlainConn<H: Host, W> {
    shard: Rc<H>,
    conn: ConnId,
    fd: RawFd,
    /// `None` only once the task has ended (the socket went to sleep).
    input: Option<SocketInput>,
    framing: Framing,
    /// The write half while no write is in progress.
    wr: Option<WriteHalf>,
    writing: Option<Writing>,
    /// Items in the write in progress (the engine is told when it ends).
    items: usize,
    /// Taken from the connection's queue by swapping; it and the write buffer belong to
    /// the shard's pools while the task is parked.
    batch: VecDeque<Out>,
    /// The wait for input: in progress while `waiting`; reused for the next one.
    wait: Option<Pin<Box<W>>>,
    waiting: bool,
    new_wait: fn(&SocketInput) -> W,
    reading: Reading,
    closing: Closing,
    /// The engine held reads back at the last poll (the task must stay awake for it).
    held: bool,
    /// The last read or write.
    last_busy: Time,
    /// What arrived with the CONNECT is still to be parsed.
    fresh: bool,
    /// A read handed packets to the engine in this poll: their output (acks, and pushes
    /// to sessions on this shard) is written on the next poll, after the shard's other
    /// tasks have run and queued theirs.
    write_later: bool,
}

impl<H: Host, W: Future<Output = io::Result<()>>> PlainConn<H, W> {
    /// Finishes a write, or starts one with what is queued. True: something changed.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> bool {
        let (shard, conn) = (&self.shard, self.conn);
        if let Some(w) = self.writing.as_mut() {
            let Poll::Ready((wr, res, buf)) = w.as_mut().poll(cx) else {
                return false;
            };
            self.writing = None;
            self.wr = Some(wr);
            {
                let mut conns = shard.conns().borrow_mut();
                conns.write_finished(conn);
                conns.give_buf(buf);
            }
            if res.is_err() {
                shard.dispatch(In::Closed {
                    conn,
                    reason: CloseReason::WriteFailed,
                });
            }
            self.last_busy = shard.now();
            shard.dispatch(In::Written {
                conn,
                n: std::mem::take(&mut self.items),
            });
            return true;
        }
        if !matches!(self.closing, Closing::Open) || self.write_later {
            return false;
        }
        if self.batch.is_empty() {
            match shard
                .conns()
                .borrow_mut()
                .poll_out(conn, cx, &mut self.batch)
            {
                Poll::Ready(true) => {}
                // Gone from the table: only this task removes it, so this does not happen.
                Poll::Ready(false) => {
                    self.closing = Closing::Flush;
                    return true;
                }
                Poll::Pending => return false,
            }
        }
        let mut wbuf = shard.conns().borrow_mut().take_buf();
        let (items, close) = fill(&self.framing, &mut self.batch, &mut wbuf);
        if close {
            self.closing = Closing::Flush;
        }
        // No write half with something to write cannot happen: the half is away only
        // while a write is in progress, and then nothing new is taken.
        let wr = match self.wr.take() {
            Some(wr) if !wbuf.is_empty() => wr,
            wr => {
                debug_assert!(wbuf.is_empty(), "output without a write half");
                self.wr = wr;
                shard.conns().borrow_mut().give_buf(wbuf);
                shard.dispatch(In::Written { conn, n: items });
                return true;
            }
        };
        shard.conns().borrow_mut().write_started(conn, shard.now());
        self.items = items;
        self.writing = Some(Box::pin(async move {
            let mut wr = wr;
            let (res, buf) = wr.write_all(wbuf).await;
            (wr, res, buf)
        }));
        // Polled at once by the caller's next round: the write is submitted now.
        true
    }

    /// Moves the close along once the last write is done. `Ready`: the task is over.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.closing {
            Closing::Open => Poll::Pending,
            Closing::Flush if self.writing.is_some() => Poll::Pending,
            Closing::Flush => {
                // A peer that closed first has read all it will: dropping the socket is
                // enough.
                let linger = !self.shard.conns().borrow().peer_closed(self.conn);
                self.shard.conn_done(self.conn);
                if !linger {
                    return Poll::Ready(());
                }
                shutdown(self.fd, libc::SHUT_WR);
                let ms = self.shard.cfg().session.close_linger_ms;
                self.closing =
                    Closing::Linger(Box::pin(monoio::time::sleep(Duration::from_millis(ms))));
                self.poll_close(cx)
            }
            // The client went away first (EOF while discarding), or its time is up.
            Closing::Linger(_) if matches!(self.reading, Reading::Ended) => Poll::Ready(()),
            Closing::Linger(t) => {
                std::task::ready!(t.as_mut().poll(cx));
                shutdown(self.fd, libc::SHUT_RDWR);
                Poll::Ready(())
            }
        }
    }

    /// Reads once if the engine lets it, or waits for input. True: something changed.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> bool {
        if matches!(self.reading, Reading::Ended) {
            return false;
        }
        // A wait for input in flight comes first: until it completes there is nothing to
        // read, and the engine's gates need not be asked (most wake-ups of a busy
        // connection are for its output).
        if let (true, Some(wait)) = (self.waiting, self.wait.as_mut()) {
            let Poll::Ready(r) = wait.as_mut().poll(cx) else {
                return false;
            };
            self.waiting = false;
            if r.is_err() {
                self.read_failed();
                return true;
            }
        }
        let (shard, conn) = (&self.shard, self.conn);
        let Some(input) = self.input.as_mut() else {
            return false;
        };
        self.held = false;
        if matches!(self.reading, Reading::Packets) {
            if !shard.is_open(conn) {
                self.reading = Reading::Discard;
                return true;
            }
            if shard.poll_readable(conn, cx).is_pending() {
                self.held = true;
                return false;
            }
        }
        let discard = matches!(self.reading, Reading::Discard);
        let max = shard.cfg().net.max_frame;
        let framing = &mut self.framing;
        if std::mem::take(&mut self.fresh) && !discard {
            input.consume_pending(|bytes| parse(shard, conn, bytes, framing, max).0);
            return true;
        }
        let got = input.try_read(shard.read_scratch(), |bytes| {
            if discard {
                bytes.len()
            } else {
                parse(shard, conn, bytes, framing, max).0
            }
        });
        match got {
            // Nothing there: wait for input (polled once now, which submits the wait).
            None => {
                let next = (self.new_wait)(input);
                let wait = match self.wait.as_mut() {
                    Some(w) => {
                        w.set(next);
                        w
                    }
                    None => self.wait.insert(Box::pin(next)),
                };
                self.waiting = true;
                let Poll::Ready(r) = wait.as_mut().poll(cx) else {
                    return false;
                };
                self.waiting = false;
                if r.is_err() {
                    self.read_failed();
                }
            }
            Some(Ok(true)) => {
                self.last_busy = shard.now();
                self.write_later |= !discard;
            }
            Some(Ok(false)) if !discard => {
                shard.conns().borrow_mut().set_peer_closed(conn);
                self.closed_by_peer();
            }
            Some(Ok(false)) => self.reading = Reading::Ended,
            Some(Err(_)) => self.read_failed(),
        }
        true
    }

    /// A read (or the wait for one) failed: the session is over as if the peer closed.
    fn read_failed(&mut self) {
        if matches!(self.reading, Reading::Packets) {
            self.closed_by_peer();
        } else {
            self.reading = Reading::Ended;
        }
    }

    fn closed_by_peer(&mut self) {
        self.reading = Reading::Ended;
        self.shard.dispatch(In::Closed {
            conn: self.conn,
            reason: CloseReason::PeerClosed,
        });
    }

    /// Ends the task leaving the socket asleep, when the sweep asked, the connection has
    /// been quiet long enough and nothing would be lost. True: the task is over.
    fn sleep(&mut self) -> bool {
        let quiet = matches!(self.reading, Reading::Packets)
            && matches!(self.closing, Closing::Open)
            && !self.held
            && self.waiting
            && self.writing.is_none()
            && self.batch.is_empty()
            && self.framing.is_idle()
            && self.input.as_ref().is_some_and(SocketInput::is_idle);
        let (shard, conn) = (&self.shard, self.conn);
        // The clock before the table: most polls of a busy connection end here.
        if !quiet
            || shard.now().micros_since(self.last_busy) < SLEEP_AFTER_US
            || !shard.conns().borrow_mut().take_sleep_request(conn)
            || !shard.conns().borrow_mut().arm_sleep(conn)
        {
            return false;
        }
        // The wait holds a handle to the socket: dropping it cancels the poll.
        self.wait = None;
        self.waiting = false;
        let (Some(input), Some(wr)) = (self.input.take(), self.wr.take()) else {
            return false;
        };
        match input.into_half().reunite(wr) {
            Ok(stream) => {
                shard.conns().borrow_mut().put_to_sleep(conn, stream);
                true
            }
            Err(e) => {
                // Halves of two sockets: cannot happen (both came from one split).
                tracing::error!(session = conn, error = %e, "cannot put connection to sleep");
                self.input = Some(SocketInput::resume(e.0, self.fd, false));
                self.wr = Some(e.1);
                false
            }
        }
    }
}

impl<H: Host, W: Future<Output = io::Result<()>>> Future for PlainConn<H, W> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        for _ in 0..ROUNDS {
            // Input first, so that a poll woken by input writes what reading it produced
            // together with what was already queued.
            let read = this.poll_read(cx);
            let wrote = this.poll_write(cx);
            if this.poll_close(cx).is_ready() {
                return Poll::Ready(());
            }
            if !wrote && !read {
                if std::mem::take(&mut this.write_later) {
                    // Reading is done for now; write once the others have run (see
                    // `write_later`): fewer, larger writes. Flat out, 0.049 sends per
                    // delivery without this and 0.046 with it (separate reader and
                    // writer tasks did 0.039: see benches/PROFILE.md).
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                if this.sleep() {
                    return Poll::Ready(());
                }
                return Poll::Pending;
            }
        }
        // Busy all along: let the shard's other tasks run before going on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
