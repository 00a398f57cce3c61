//! In a cluster, a client that logged in on a node other than its home is relayed there.
//!
//! After its CONNECT passed authentication here, the relay opens a plain TCP connection to
//! the home node's TCP port, sends the client's CONNECT there (the home authenticates it
//! again, so a relay grants nothing a direct connection would not), and then copies packets
//! both ways, translating the framing: the client keeps its transport (TCP, WebSocket,
//! either in TLS, terminated here); the hop to the home is length-prefixed TCP. WebSocket
//! pings are answered here. Everything per user — sessions, acks, redelivery, offline
//! drain, the duplicate-login policy — happens on the home node as for a direct client.
//!
//! Three tasks per relayed client: client → home, home → client, and the client's writer
//! (so WebSocket control replies and home packets share one writer). Either side ending
//! ends both: a client that goes away half-closes the hop (the home sees EOF and ends the
//! session); a home that closes the session (logout, kick, its own shutdown) has its last
//! packets written to the client, which is then closed.
//!
//! Clients reach their home directly when they ask the HTTP login endpoint where to
//! connect; the relay is for clients behind a load balancer that picks any node.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use im_protocol::packet::connack;
use im_protocol::ServerPacket;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

use crate::net::conn::{refuse_and_close, shutdown};
use crate::net::handoff::PreAuthIo;
use crate::net::input::{read_with, OwnedInput};
use crate::net::tls_session;
use crate::net::transport::{Event, Framing, TransportKind};

/// Chunks queued for the client's writer before the home side stops reading.
const CLIENT_QUEUE: usize = 64;

/// Relays an authenticated client (its CONNECT packet and what it sent after it) to its
/// home node at `home`.
pub(crate) async fn relay<S: PreAuthIo>(
    stream: S,
    connect: Vec<u8>,
    leftover: Vec<u8>,
    framing: Framing,
    home: SocketAddr,
    max_frame: usize,
    linger: Duration,
) {
    let kind = framing.kind;
    let client_fd = stream.as_raw_fd();
    let dial = monoio::time::timeout(linger.max(Duration::from_secs(2)), TcpStream::connect(home));
    let hop = match Box::pin(dial).await {
        Ok(Ok(s)) => s,
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".into(),
            };
            tracing::warn!(%home, %why, "cannot reach the user's home node; CONNECT_ACK 4");
            let n = Some(ServerPacket::ConnectAck {
                code: connack::UNAVAILABLE,
            });
            return refuse_and_close(stream, client_fd, kind, n, linger).await;
        }
    };
    let _ = hop.set_nodelay(true);
    let hop_fd = hop.as_raw_fd();
    let (hop_rd, mut hop_wr) = hop.into_split();
    let tcp = Framing::new(TransportKind::Tcp);
    let mut first = Vec::with_capacity(connect.len() + 4);
    tcp.put_packet(&mut first, &connect);
    let (res, _) = hop_wr.write_all(first).await;
    if res.is_err() {
        shutdown(client_fd, libc::SHUT_RDWR);
        return;
    }
    let (tcp_stream, tls) = stream.detach();
    let (tx, rx) = local_sync::mpsc::bounded::channel::<Vec<u8>>(CLIENT_QUEUE);
    match tls {
        None => {
            let (rd, wr) = tcp_stream.into_split();
            monoio::spawn(client_writer(wr, rx, client_fd, linger));
            let input = OwnedInput::new(rd, leftover);
            monoio::spawn(home_to_client(hop_rd, Framing::new(kind), tx.clone()));
            client_to_home(input, framing, hop_wr, hop_fd, tx, max_frame).await;
        }
        Some(st) => {
            let mut plain = leftover;
            let Ok((rd, wr)) = tls_session::resume(tcp_stream, st, &mut plain) else {
                shutdown(hop_fd, libc::SHUT_RDWR);
                return;
            };
            monoio::spawn(client_writer(wr, rx, client_fd, linger));
            let input = OwnedInput::new(rd, plain);
            monoio::spawn(home_to_client(hop_rd, Framing::new(kind), tx.clone()));
            client_to_home(input, framing, hop_wr, hop_fd, tx, max_frame).await;
        }
    }
}

/// Client packets to the home, reframed as length-prefixed TCP; WebSocket control frames
/// answered through the client's writer.
async fn client_to_home(
    mut input: OwnedInput<impl monoio::io::AsyncReadRent>,
    mut framing: Framing,
    mut hop: impl AsyncWriteRent,
    hop_fd: std::os::fd::RawFd,
    replies: local_sync::mpsc::bounded::Tx<Vec<u8>>,
    max_frame: usize,
) {
    let tcp = Framing::new(TransportKind::Tcp);
    let scratch = RefCell::new(Vec::new());
    let mut out = Vec::new();
    let mut control: Vec<Vec<u8>> = Vec::new();
    let mut open = true;
    while open {
        let read = read_with(&mut input, &scratch, |buf| {
            let mut pos = 0;
            while open {
                match framing.next(&mut buf[pos..], max_frame) {
                    Ok(None) => break,
                    Ok(Some((used, ev))) => {
                        let base = pos;
                        pos += used;
                        match ev {
                            Event::Packet { start, end } => {
                                tcp.put_packet(&mut out, &buf[base + start..base + end])
                            }
                            Event::Assembled(p) => tcp.put_packet(&mut out, &p),
                            Event::Reply(r) => control.push(r),
                            Event::Skip => {}
                            Event::Close(r) => {
                                control.push(r);
                                open = false;
                            }
                        }
                    }
                    Err(e) => {
                        // The home would refuse it the same way; ending the relay is enough.
                        tracing::debug!(error = %e, "bad input on a relayed connection");
                        open = false;
                    }
                }
            }
            pos
        })
        .await;
        if !matches!(read, Ok(true)) {
            open = false;
        }
        if !out.is_empty() {
            let (res, mut b) = hop.write_all(std::mem::take(&mut out)).await;
            b.clear();
            out = b;
            if res.is_err() {
                open = false;
            }
        }
        for r in control.drain(..) {
            if replies.send(r).await.is_err() {
                open = false;
            }
        }
    }
    // The home sees EOF and ends the session; its side of the relay then ends the client.
    shutdown(hop_fd, libc::SHUT_WR);
}

/// Home packets to the client, in the client's framing.
async fn home_to_client(
    hop: impl monoio::io::AsyncReadRent,
    framing: Framing,
    to_client: local_sync::mpsc::bounded::Tx<Vec<u8>>,
) {
    let mut input = OwnedInput::new(hop, Vec::new());
    let mut tcp = Framing::new(TransportKind::Tcp);
    let scratch = RefCell::new(Vec::new());
    loop {
        let mut out = Vec::new();
        let mut bad = false;
        let read = read_with(&mut input, &scratch, |buf| {
            let mut pos = 0;
            loop {
                match tcp.next(&mut buf[pos..], usize::MAX) {
                    Ok(Some((used, Event::Packet { start, end }))) => {
                        framing.put_packet(&mut out, &buf[pos + start..pos + end]);
                        pos += used;
                    }
                    Ok(Some((used, _))) => pos += used,
                    Ok(None) => break,
                    Err(_) => {
                        bad = true;
                        break;
                    }
                }
            }
            pos
        })
        .await;
        if !out.is_empty() && to_client.send(out).await.is_err() {
            break;
        }
        if bad || !matches!(read, Ok(true)) {
            break;
        }
    }
    if framing.kind.is_ws() {
        let _ = to_client.send(framing.close_frame(1000)).await;
    }
    // An empty chunk tells the client's writer to close the client.
    let _ = to_client.send(Vec::new()).await;
}

/// Writes what the two directions queue for the client; when the home side is done (an
/// empty chunk) or the client cannot be written, half-closes, lingers so the client reads the last packet, and shuts down.
async fn client_writer(
    mut wr: impl AsyncWriteRent,
    mut rx: local_sync::mpsc::bounded::Rx<Vec<u8>>,
    fd: std::os::fd::RawFd,
    linger: Duration,
) {
    while let Some(chunk) = rx.recv().await {
        if chunk.is_empty() {
            break;
        }
        let (res, _) = wr.write_all(chunk).await;
        if res.is_err() {
            break;
        }
    }
    shutdown(fd, libc::SHUT_WR);
    monoio::time::sleep(linger).await;
    shutdown(fd, libc::SHUT_RDWR);
}
