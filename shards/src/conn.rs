//! The two tasks of an established connection on its owner shard.
//!
//! - The reader owns the read half and the transport decoder: it parses everything a read
//!   brought, hands packets to the command layer, commits the read's publishes, then reads
//!   again. It is never cancelled mid-read (io_uring reads own their buffer); the session is
//!   ended from elsewhere by shutting the socket down, which completes the read.
//! - The writer owns the write half: it coalesces queued frames into one write, runs the
//!   session's timers between writes, and on `Out::Close` flushes, half-closes, lingers so
//!   the client can read the last packet, then shuts the socket down.

use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use im_protocol::ServerPacket;
use local_sync::mpsc::unbounded::Rx;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use crate::delivery::{self, Accepted};
use crate::session::{CloseReason, Out, Session};
use crate::transport::{Event, Framing, TransportKind};

/// Initial read buffer; it grows to the largest frame seen and shrinks back when empty.
const READ_INITIAL: usize = 1024;
const READ_SHRINK_ABOVE: usize = 64 * 1024;
/// Most bytes coalesced into one write.
const WRITE_BATCH: usize = 64 * 1024;

pub(crate) async fn read_loop(
    s: Rc<Session>,
    mut rd: impl AsyncReadRent,
    mut buf: Vec<u8>,
    mut framing: Framing,
) {
    let max = s.shard.cfg.net.max_frame;
    loop {
        let mut accepted: Vec<Accepted> = Vec::new();
        let mut stop = None;
        let mut pos = 0;
        // A session closed elsewhere (kick, shutdown) accepts nothing more: during shutdown
        // no new message may start its way to another shard.
        while stop.is_none() && !s.is_closed() {
            let (used, ev) = match framing.next(&mut buf[pos..], max) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(uid = s.uid, error = %e, "bad input");
                    stop = Some(CloseReason::InvalidPacket);
                    break;
                }
            };
            let base = pos;
            pos += used;
            stop = match ev {
                Event::Packet { start, end } => {
                    delivery::handle_packet(&s, &buf[base + start..base + end], &mut accepted)
                }
                Event::Assembled(p) => delivery::handle_packet(&s, &p, &mut accepted),
                Event::Reply(bytes) => {
                    s.send(Out::Raw(bytes));
                    None
                }
                Event::Skip => None,
                Event::Close(reply) => {
                    s.send(Out::Raw(reply));
                    Some(CloseReason::WsClose)
                }
            };
        }
        buf.drain(..pos);
        if !accepted.is_empty() {
            delivery::commit(&s, accepted).await;
        }
        if let Some(reason) = stop {
            s.close(reason);
        }
        if s.is_closed() {
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
        match res {
            Ok(n) if n > 0 => s.touch(),
            _ => {
                s.close(CloseReason::PeerClosed);
                break;
            }
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

pub(crate) async fn write_loop(s: Rc<Session>, mut wr: impl AsyncWriteRent, mut rx: Rx<Out>) {
    let cfg = &s.shard.cfg;
    let framing = Framing::new(s.kind);
    let tick = tick_period(&s);
    let write_timeout = Duration::from_millis(cfg.session.write_timeout_ms);
    let mut next_tick = Instant::now() + tick;
    let mut wbuf: Vec<u8> = Vec::new();
    loop {
        let now = Instant::now();
        if now >= next_tick {
            s.tick(now);
            next_tick = now + tick;
        }
        let first =
            match monoio::time::timeout(next_tick - Instant::now().min(next_tick), rx.recv()).await
            {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(_) => continue,
            };
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
            match monoio::time::timeout(write_timeout, wr.write_all(wbuf)).await {
                Ok((Ok(_), b)) => {
                    wbuf = b;
                    wbuf.clear();
                    if wbuf.capacity() > WRITE_BATCH * 2 {
                        wbuf = Vec::new();
                    }
                }
                Ok((Err(_), b)) => {
                    wbuf = b;
                    wbuf.clear();
                    s.close(CloseReason::WriteFailed);
                }
                Err(_) => {
                    wbuf = Vec::new();
                    s.close(CloseReason::WriteFailed);
                }
            }
        }
        s.written(items);
        if close {
            break;
        }
    }
    // Half-close so the client sees our last packet and then EOF; wait for it to go away
    // (the reader keeps draining), then shut down both directions, which ends the reader.
    shutdown(s.fd, libc::SHUT_WR);
    monoio::time::sleep(Duration::from_millis(cfg.session.close_linger_ms)).await;
    shutdown(s.fd, libc::SHUT_RDWR);
}

/// How often a session's timers are checked: a fraction of the shortest timer.
fn tick_period(s: &Session) -> Duration {
    let c = &s.shard.cfg;
    let shortest = c
        .session
        .heartbeat_interval_ms
        .min(c.session.heartbeat_timeout_ms)
        .min(c.delivery.redelivery_interval_ms);
    Duration::from_millis((shortest / 4).clamp(10, 500))
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

/// [`refuse_and_close`] for a connection already split into its two halves.
pub(crate) async fn refuse_and_close_split(
    rd: impl AsyncReadRent,
    mut wr: impl AsyncWriteRent,
    fd: RawFd,
    kind: TransportKind,
    packet: Option<ServerPacket<'_>>,
    linger: Duration,
) {
    let out = refusal(kind, packet);
    if !out.is_empty() {
        let _ = monoio::time::timeout(linger, wr.write_all(out)).await;
    }
    finish(rd, fd, linger).await;
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
