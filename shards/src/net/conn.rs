//! The two tasks of an established TLS connection on its owner shard (a plain connection
//! runs both sides in one task, [`crate::net::plain`], which shares this file's `Host`,
//! `parse`, `fill` and `shutdown`).
//!
//! - The reader owns the connection's [`Input`] and transport decoder: it parses everything
//!   a read brought, hands each packet to the engine, tells it the read is done, waits
//!   until the read's publishes are committed, then reads again. It is never cancelled; the
//!   session is ended from elsewhere by shutting the socket down, which ends the read.
//! - The writer owns the write half: it takes everything queued for it in the shard's
//!   [`ConnTable`], coalesces it into writes of up to 64 KiB, reports what it wrote to the
//!   engine, and on `Out::Close` flushes, half-closes, lingers so the client can read the
//!   last packet, then shuts the socket down. A write stuck past `write_timeout_ms` is
//!   ended by the shard's timer shutting the socket down (the write fails).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use im_protocol::{framing, ServerPacket};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use crate::config::CoreConfig;
use crate::engine::{CloseReason, ConnId, Event as In, Out, Time};
use crate::net::input::{drain_input, Input};
use crate::net::table::ConnTable;
use crate::net::transport::{Event, Framing, TransportKind};

/// What a connection's tasks need from the shard that runs them (the driver implements it;
/// the tasks never name it, so sockets and the driver do not import each other).
pub(crate) trait Host: 'static {
    fn cfg(&self) -> &CoreConfig;
    /// The engine's clock.
    fn now(&self) -> Time;
    /// Hands the engine an event at `t` without waking parked tasks yet.
    fn feed(self: &Rc<Self>, t: Time, ev: In<'_>);
    /// Wakes the tasks parked on what the fed events changed.
    fn after_dispatch(&self);
    /// [`Host::feed`] now, then [`Host::after_dispatch`].
    fn dispatch(self: &Rc<Self>, ev: In<'_>);
    /// The connection has a live session that reads input.
    fn is_open(&self, conn: ConnId) -> bool;
    /// A hint that this packet of `conn` will be fed soon (see [`Lookahead`]).
    fn prefetch(&self, conn: ConnId, packet: &[u8]);
    /// Ready when the connection may read more input; otherwise the task is woken when it
    /// may.
    fn poll_readable(&self, conn: ConnId, cx: &mut Context<'_>) -> Poll<()>;
    /// The writer of `conn` is done.
    fn conn_done(&self, conn: ConnId);
    /// The shard's read buffer, lent to a plain socket's reader for one `recv` at a time.
    fn read_scratch(&self) -> &RefCell<Vec<u8>>;
    /// The shard's connections: output queues, parked tasks, writes in progress, pools.
    fn conns(&self) -> &RefCell<ConnTable>;
}

/// Most bytes coalesced into one write.
const WRITE_BATCH: usize = 64 * 1024;

// Both loops return an `async move` block instead of being `async fn`s: the block keeps its
// captured arguments once, where an `async fn` would also copy them into its body's state
// (a larger task for every connection).
#[allow(clippy::manual_async_fn)]
pub(crate) fn read_loop<H: Host>(
    shard: Rc<H>,
    conn: ConnId,
    mut input: impl Input,
    mut framing: Framing,
) -> impl Future<Output = ()> {
    async move {
        let max = shard.cfg().net.max_frame;
        // What arrived with the CONNECT first, then one read at a time.
        let mut open = shard.is_open(conn);
        let mut peer_closed = false;
        if open {
            input.consume_pending(|bytes| {
                let (used, more) = parse(&shard, conn, bytes, &mut framing, max);
                open = more;
                used
            });
        }
        while open && shard.is_open(conn) {
            // Wait until the last read's publishes are committed (and mail has room).
            poll_fn(|cx| shard.poll_readable(conn, cx)).await;
            if !shard.is_open(conn) {
                break;
            }
            // The parser runs inside the read: nothing borrowed is held while waiting.
            let got = loop {
                let read = input.try_read(shard.read_scratch(), |bytes| {
                    let (used, more) = parse(&shard, conn, bytes, &mut framing, max);
                    open = more;
                    used
                });
                if let Some(r) = read {
                    break r;
                }
                if let Err(e) = input.ready().await {
                    break Err(e);
                }
            };
            if !matches!(got, Ok(true)) {
                if matches!(got, Ok(false)) {
                    peer_closed = true;
                    shard.conns().borrow_mut().set_peer_closed(conn);
                }
                shard.dispatch(In::Closed {
                    conn,
                    reason: CloseReason::PeerClosed,
                });
                break;
            }
        }
        // Keep draining input until the writer shuts the socket down, so that unread input does
        // not turn our close into a reset that would discard the last packet we sent. Boxed:
        // only a closing connection needs this future's state. After EOF there is nothing
        // left to drain.
        if !peer_closed {
            Box::pin(drain_input(&mut input, shard.read_scratch())).await;
        }
    }
}

/// Hands the engine every packet in `buf` (one clock reading and one wake-up pass for all
/// of them), then tells it the read is done. Returns the bytes consumed and whether the
/// session still reads input.
pub(crate) fn parse<H: Host>(
    shard: &Rc<H>,
    conn: ConnId,
    buf: &mut [u8],
    framing: &mut Framing,
    max: usize,
) -> (usize, bool) {
    let mut stop = None;
    let mut pos = 0;
    let t = shard.now();
    let mut ahead = Lookahead::new(framing);
    // A session told to stop (or closed elsewhere: kick, shutdown) accepts nothing more:
    // during shutdown no new message may start its way to another shard.
    while stop.is_none() && shard.is_open(conn) {
        ahead.hint(buf, pos, max, |packet| shard.prefetch(conn, packet));
        let (used, ev) = match framing.next(&mut buf[pos..], max) {
            Ok(Some(x)) => x,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(session = conn, error = %e, "bad input");
                stop = Some(CloseReason::InvalidPacket);
                break;
            }
        };
        let base = pos;
        pos += used;
        match ev {
            Event::Packet { start, end } => shard.feed(
                t,
                In::Packet {
                    conn,
                    bytes: &buf[base + start..base + end],
                },
            ),
            Event::Assembled(p) => shard.feed(t, In::Packet { conn, bytes: &p }),
            Event::Reply(bytes) => shard.feed(t, In::Reply { conn, bytes }),
            Event::Skip => {}
            Event::Close(bytes) => {
                shard.feed(t, In::Reply { conn, bytes });
                stop = Some(CloseReason::WsClose);
            }
        }
    }
    shard.feed(t, In::ReadDone { conn, stop });
    shard.after_dispatch();
    (pos, shard.is_open(conn))
}

/// How many packets ahead of the one being fed [`Lookahead`] hints.
pub(crate) const LOOKAHEAD: usize = 8;

/// Hints the engine about the packets a few frames ahead of the one being fed
/// ([`Host::prefetch`]), so that the cache misses of a read's packets overlap instead of
/// each waiting for the one before. Flat out a read brings tens of packets; on a quiet
/// connection it brings one, and the hint is a wasted decode. Length-prefixed framing
/// only: there a frame can be found without changing the framing state (WebSocket frames
/// are unmasked in place as they are parsed).
struct Lookahead {
    /// Where the next frame to hint starts; `None`: no hints (WebSocket, or the input
    /// ahead is incomplete or bad, which the parse loop itself will find).
    at: Option<usize>,
    /// Frames hinted and not yet fed.
    lead: usize,
}

impl Lookahead {
    fn new(framing: &Framing) -> Self {
        Self {
            at: (!framing.kind.is_ws()).then_some(0),
            lead: 0,
        }
    }

    /// Called before feeding the frame at `pos`: hints frames (calls `hint` with each
    /// packet) until [`LOOKAHEAD`] are ahead of it.
    fn hint(&mut self, buf: &[u8], pos: usize, max: usize, mut hint: impl FnMut(&[u8])) {
        let Some(mut at) = self.at else {
            return;
        };
        // The frame at `pos` is about to be fed: it no longer counts as ahead.
        if at > pos {
            self.lead = self.lead.saturating_sub(1);
        }
        while self.lead < LOOKAHEAD {
            match buf.get(at..).map(|rest| framing::check(rest, max)) {
                Some(Ok(Some(len))) => {
                    let start = at + framing::PREFIX;
                    hint(&buf[start..start + len]);
                    at = start + len;
                    self.lead += 1;
                }
                _ => {
                    self.at = None;
                    return;
                }
            }
        }
        self.at = Some(at);
    }
}

/// Reads and throws away input until EOF or an error.
async fn discard_until_eof(rd: &mut impl AsyncReadRent, mut buf: Vec<u8>) {
    loop {
        let (res, b) = rd.read(buf).await;
        buf = b;
        buf.clear();
        if !matches!(res, Ok(n) if n > 0) {
            break;
        }
    }
}

#[allow(clippy::manual_async_fn)] // see `read_loop`
pub(crate) fn write_loop<H: Host>(
    shard: Rc<H>,
    conn: ConnId,
    kind: TransportKind,
    fd: RawFd,
    mut wr: impl AsyncWriteRent,
) -> impl Future<Output = ()> {
    async move {
        let framing = Framing::new(kind);
        // Taken from the connection's queue by swapping; emptied before each swap back. It and
        // the write buffer belong to the shard's pools while the writer is parked.
        let mut batch: VecDeque<Out> = VecDeque::new();
        let mut close = false;
        while !close
            && poll_fn(|cx| shard.conns().borrow_mut().poll_out(conn, cx, &mut batch)).await
        {
            while !close && !batch.is_empty() {
                let mut wbuf = shard.conns().borrow_mut().take_buf();
                let items;
                (items, close) = fill(&framing, &mut batch, &mut wbuf);
                if !wbuf.is_empty() {
                    shard.conns().borrow_mut().write_started(conn, shard.now());
                    // Boxed: the write's state exists only while one is in progress.
                    let (res, b) = Box::pin(wr.write_all(wbuf)).await;
                    wbuf = b;
                    shard.conns().borrow_mut().write_finished(conn);
                    if res.is_err() {
                        shard.dispatch(In::Closed {
                            conn,
                            reason: CloseReason::WriteFailed,
                        });
                    }
                }
                shard.conns().borrow_mut().give_buf(wbuf);
                shard.dispatch(In::Written { conn, n: items });
            }
        }
        // A peer that closed first has read all it will: dropping the socket is enough.
        let linger = !shard.conns().borrow().peer_closed(conn);
        shard.conn_done(conn);
        if linger {
            // Half-close so the client sees our last packet and then EOF; wait for it to go
            // away (the reader keeps draining), then shut down both directions, which ends
            // the reader. Boxed: a timer is large, and only a closing connection needs one.
            shutdown(fd, libc::SHUT_WR);
            let linger = Duration::from_millis(shard.cfg().session.close_linger_ms);
            Box::pin(monoio::time::sleep(linger)).await;
            shutdown(fd, libc::SHUT_RDWR);
        }
    }
}

/// Frames queued items into `wbuf` until it holds [`WRITE_BATCH`] bytes, the queue is
/// empty or a close comes. Returns the items taken (the close too) and whether it was a
/// close.
pub(crate) fn fill(
    framing: &Framing,
    batch: &mut VecDeque<Out>,
    wbuf: &mut Vec<u8>,
) -> (usize, bool) {
    let mut items = 0;
    while let Some(item) = batch.pop_front() {
        items += 1;
        match item {
            Out::Packet(p) => framing.put_packet(wbuf, &p),
            Out::Push(p) => framing.put_packet(wbuf, p.frame()),
            Out::Small { buf, len } => framing.put_packet(wbuf, &buf[..len as usize]),
            Out::Raw(r) => wbuf.extend_from_slice(&r),
            Out::Close => return (items, true),
        }
        if wbuf.len() >= WRITE_BATCH {
            break;
        }
    }
    (items, false)
}

/// `shutdown(2)` on a socket we still own (its halves are alive until the tasks end).
pub(crate) fn shutdown(fd: std::os::fd::RawFd, how: libc::c_int) {
    // SAFETY: `fd` is the connection's socket, kept open by the read and write halves this
    // session's tasks still hold; shutdown(2) neither closes nor invalidates it.
    unsafe {
        libc::shutdown(fd, how);
    }
}

/// Writes one packet on a connection that has no session (pre-auth refusals), then closes.
/// `fd` is the stream's socket. See [`close_with`].
pub(crate) fn refuse_and_close<S: AsyncReadRent + AsyncWriteRent>(
    stream: S,
    fd: RawFd,
    kind: TransportKind,
    packet: Option<ServerPacket<'_>>,
    linger: Duration,
) -> Pin<Box<impl Future<Output = ()>>> {
    close_with(stream, fd, refusal(kind, packet), linger)
}

/// Writes `out` (if any) on a connection that has no session, then closes it. Boxed: its
/// timers are large and only refused connections need them, so the login task that awaits
/// it stays small for every login.
pub(crate) fn close_with<S: AsyncReadRent + AsyncWriteRent>(
    mut stream: S,
    fd: RawFd,
    out: Vec<u8>,
    linger: Duration,
) -> Pin<Box<impl Future<Output = ()>>> {
    Box::pin(async move {
        if !out.is_empty() {
            let _ = monoio::time::timeout(linger, stream.write_all(out)).await;
        }
        finish(stream, fd, linger).await;
    })
}

/// The last packet (if any) and, on WebSocket, the close frame.
fn refusal(kind: TransportKind, packet: Option<ServerPacket<'_>>) -> Vec<u8> {
    let framing = Framing::new(kind);
    let mut out = Vec::new();
    if let Some(p) = packet {
        framing.put_packet(&mut out, &p.to_vec());
    }
    out.extend_from_slice(&framing.close_frame(1000));
    out
}

/// Half-closes, drains input briefly so our last bytes are not lost to a reset, closes.
pub(crate) async fn finish(mut stream: impl AsyncReadRent, fd: RawFd, linger: Duration) {
    shutdown(fd, libc::SHUT_WR);
    let drain = discard_until_eof(&mut stream, Vec::with_capacity(512));
    let _ = monoio::time::timeout(linger, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz_api::parse_reads;

    /// Length-prefixed frames, packet `i` being `i` repeated `i % 5 + 1` times.
    fn frames(n: u8) -> Vec<u8> {
        let mut buf = Vec::new();
        for i in 0..n {
            let packet = vec![i; usize::from(i % 5) + 1];
            framing::put_prefix(&mut buf, packet.len());
            buf.extend_from_slice(&packet);
        }
        buf
    }

    /// Every complete frame is hinted once, in order, at most LOOKAHEAD frames before the
    /// parse loop feeds it; an incomplete tail is not hinted.
    #[test]
    fn hints_each_frame_once_a_bounded_way_ahead() {
        let mut buf = frames(30);
        buf.extend_from_slice(&[0, 0, 0, 9, 1]); // a frame still arriving
        let p = parse_reads(false, &[&buf], 1024);
        let expect: Vec<Vec<u8>> = (0..30u8).map(|i| vec![i; usize::from(i % 5) + 1]).collect();
        assert_eq!(p.hinted, expect);
        assert_eq!(p.fed, expect);
        for (fed, &n) in p.hinted_at_feed.iter().enumerate() {
            assert!(n > fed, "frame {fed} hinted before it is fed");
            assert!(n <= fed + LOOKAHEAD, "{n} hinted when feeding frame {fed}");
        }
    }

    /// No hints past a frame the parser will refuse, and none on WebSocket.
    #[test]
    fn stops_at_bad_input_and_skips_websocket() {
        let mut buf = frames(3);
        buf.extend_from_slice(&[0, 0, 1, 0]); // 256 bytes: over the limit below
        buf.extend_from_slice(&frames(3));
        let p = parse_reads(false, &[&buf], 100);
        assert_eq!(p.hinted.len(), 3);
        assert!(p.stopped);
        // Three masked binary WebSocket frames from a client.
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut ws = Vec::new();
        for payload in [&b"one"[..], b"two", b"three"] {
            ws.extend_from_slice(&[0x82, 0x80 | payload.len() as u8]);
            ws.extend_from_slice(&mask);
            ws.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        }
        let p = parse_reads(true, &[&ws], 100);
        assert_eq!(p.fed, [&b"one"[..], b"two", b"three"]);
        assert!(p.hinted.is_empty());
    }
}
