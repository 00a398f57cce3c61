//! The two tasks of an established connection on its owner shard.
//!
//! - The reader owns the read half and the transport decoder: it parses everything a read
//!   brought, hands each packet to the engine, tells it the read is done, waits until the
//!   read's publishes are committed, then reads again. It is never cancelled mid-read (io_uring reads own their buffer); the session is
//!   ended from elsewhere by shutting the socket down, which completes the read.
//! - The writer owns the write half: it coalesces queued frames into one write, reports
//!   what it wrote to the engine, and on `Out::Close` flushes, half-closes, lingers so the
//!   client can read the last packet, then shuts the socket down.

use std::future::Future;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use im_protocol::ServerPacket;
use local_sync::mpsc::unbounded::Rx;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use crate::config::CoreConfig;
use crate::engine::{CloseReason, ConnId, Event as In, Out, Time};
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
    /// Resolves when the connection may read more input.
    fn readable(&self, conn: ConnId) -> impl Future<Output = ()> + '_;
    /// The writer of `conn` is done.
    fn conn_done(&self, conn: ConnId);
}

/// Initial read buffer; it grows to the largest frame seen and shrinks back when empty.
const READ_INITIAL: usize = 1024;
const READ_SHRINK_ABOVE: usize = 64 * 1024;
/// Most bytes coalesced into one write.
const WRITE_BATCH: usize = 64 * 1024;

pub(crate) async fn read_loop<H: Host>(
    shard: Rc<H>,
    conn: ConnId,
    mut rd: impl AsyncReadRent,
    mut buf: Vec<u8>,
    mut framing: Framing,
) {
    let max = shard.cfg().net.max_frame;
    // A connection refused at open (duplicate login, shutdown) is never read.
    while shard.is_open(conn) {
        let mut stop = None;
        let mut pos = 0;
        // One clock reading and one wake-up pass for everything this read brought.
        let t = shard.now();
        // A session told to stop (or closed elsewhere: kick, shutdown) accepts nothing
        // more: during shutdown no new message may start its way to another shard.
        while stop.is_none() && shard.is_open(conn) {
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
        buf.drain(..pos);
        shard.feed(t, In::ReadDone { conn, stop });
        shard.after_dispatch();
        if !shard.is_open(conn) {
            break;
        }
        // Wait until this read's publishes are committed (and mail has room).
        shard.readable(conn).await;
        if !shard.is_open(conn) {
            break;
        }
        if buf.is_empty() && buf.capacity() > READ_SHRINK_ABOVE {
            buf = Vec::with_capacity(READ_INITIAL);
        }
        if buf.capacity() - buf.len() < READ_INITIAL / 2 {
            buf.reserve(buf.len().max(READ_INITIAL));
        }
        let len = buf.len();
        let (res, slice) = rd.read(buf.slice_mut(len..)).await;
        buf = slice.into_inner();
        if !matches!(res, Ok(n) if n > 0) {
            shard.dispatch(In::Closed {
                conn,
                reason: CloseReason::PeerClosed,
            });
            break;
        }
    }
    // Keep draining input until the writer shuts the socket down, so that unread input does
    // not turn our close into a reset that would discard the last packet we sent.
    buf.clear();
    discard_until_eof(&mut rd, buf).await;
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

pub(crate) async fn write_loop<H: Host>(
    shard: Rc<H>,
    conn: ConnId,
    kind: TransportKind,
    fd: RawFd,
    mut wr: impl AsyncWriteRent,
    mut rx: Rx<Out>,
) {
    let (write_timeout_ms, linger_ms) = (
        shard.cfg().session.write_timeout_ms,
        shard.cfg().session.close_linger_ms,
    );
    let framing = Framing::new(kind);
    let write_timeout = Duration::from_millis(write_timeout_ms);
    let mut wbuf: Vec<u8> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut items = 0;
        let mut close = false;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            items += 1;
            match item {
                Out::Packet(p) => framing.put_packet(&mut wbuf, &p),
                Out::Small { buf, len } => framing.put_packet(&mut wbuf, &buf[..len as usize]),
                Out::Raw(r) => wbuf.extend_from_slice(&r),
                Out::Close => {
                    close = true;
                    break;
                }
            }
            if wbuf.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !wbuf.is_empty() {
            let failed = match monoio::time::timeout(write_timeout, wr.write_all(wbuf)).await {
                Ok((Ok(_), b)) => {
                    wbuf = b;
                    wbuf.clear();
                    if wbuf.capacity() > WRITE_BATCH * 2 {
                        wbuf = Vec::new();
                    }
                    false
                }
                Ok((Err(_), b)) => {
                    wbuf = b;
                    wbuf.clear();
                    true
                }
                Err(_) => {
                    wbuf = Vec::new();
                    true
                }
            };
            if failed {
                shard.dispatch(In::Closed {
                    conn,
                    reason: CloseReason::WriteFailed,
                });
            }
        }
        shard.dispatch(In::Written { conn, n: items });
        if close {
            break;
        }
    }
    shard.conn_done(conn);
    // Half-close so the client sees our last packet and then EOF; wait for it to go away
    // (the reader keeps draining), then shut down both directions, which ends the reader.
    shutdown(fd, libc::SHUT_WR);
    monoio::time::sleep(Duration::from_millis(linger_ms)).await;
    shutdown(fd, libc::SHUT_RDWR);
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
/// `fd` is the stream's socket.
pub(crate) async fn refuse_and_close(
    mut stream: impl AsyncReadRent + AsyncWriteRent,
    fd: RawFd,
    kind: TransportKind,
    packet: Option<ServerPacket<'_>>,
    linger: Duration,
) {
    let out = refusal(kind, packet);
    if !out.is_empty() {
        let _ = monoio::time::timeout(linger, stream.write_all(out)).await;
    }
    finish(stream, fd, linger).await;
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
