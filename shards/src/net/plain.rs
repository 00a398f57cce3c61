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
//! reported by the sleep set gives it a new task ([`PlainConn::new`] via the shard's wake
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

pub(crate) struct PlainConn<H: Host> {
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
    /// A wait for input in progress.
    wait: Option<Pin<Box<dyn Future<Output = io::Result<()>>>>>,
    reading: Reading,
    closing: Closing,
    /// The engine held reads back at the last poll (the task must stay awake for it).
    held: bool,
    /// The last read or write.
    last_busy: Time,
    /// What arrived with the CONNECT is still to be parsed.
    fresh: bool,
}

impl<H: Host> PlainConn<H> {
    /// The task of a connection that has a session and a table entry on `shard`.
    pub fn new(
        shard: Rc<H>,
        conn: ConnId,
        input: SocketInput,
        framing: Framing,
        wr: WriteHalf,
        fd: RawFd,
    ) -> Self {
        let last_busy = shard.now();
        Self {
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
            reading: Reading::Packets,
            closing: Closing::Open,
            held: false,
            last_busy,
            fresh: true,
        }
    }

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
        if !matches!(self.closing, Closing::Open) {
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
        let (shard, conn) = (&self.shard, self.conn);
        let Some(input) = self.input.as_mut() else {
            return false;
        };
        self.held = false;
        match self.reading {
            Reading::Ended => return false,
            Reading::Packets if !shard.is_open(conn) => {
                self.reading = Reading::Discard;
                return true;
            }
            Reading::Packets => {
                if shard.poll_readable(conn, cx).is_pending() {
                    self.held = true;
                    return false;
                }
            }
            Reading::Discard => {}
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
        let got = match got {
            Some(r) => r,
            None => {
                let wait = self.wait.get_or_insert_with(|| input.wait_ready());
                match wait.as_mut().poll(cx) {
                    Poll::Pending => return false,
                    Poll::Ready(r) => {
                        self.wait = None;
                        match r {
                            Ok(()) => return true,
                            Err(e) => Err(e),
                        }
                    }
                }
            }
        };
        match got {
            Ok(true) => self.last_busy = shard.now(),
            Ok(false) if !discard => {
                shard.conns().borrow_mut().set_peer_closed(conn);
                self.closed_by_peer();
            }
            Ok(false) => self.reading = Reading::Ended,
            Err(_) if !discard => self.closed_by_peer(),
            Err(_) => self.reading = Reading::Ended,
        }
        true
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
            && self.wait.is_some()
            && self.writing.is_none()
            && self.batch.is_empty()
            && self.framing.is_idle()
            && self.input.as_ref().is_some_and(SocketInput::is_idle);
        let (shard, conn) = (&self.shard, self.conn);
        if !quiet || !shard.conns().borrow_mut().take_sleep_request(conn) {
            return false;
        }
        if shard.now().micros_since(self.last_busy) < SLEEP_AFTER_US
            || !shard.conns().borrow_mut().arm_sleep(conn)
        {
            return false;
        }
        // The wait holds a handle to the socket: dropping it cancels the poll.
        self.wait = None;
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

impl<H: Host> Future for PlainConn<H> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        for _ in 0..ROUNDS {
            let wrote = this.poll_write(cx);
            if this.poll_close(cx).is_ready() {
                return Poll::Ready(());
            }
            let read = this.poll_read(cx);
            if !wrote && !read {
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
