//! Accept loops and the pre-authentication phase of a connection, on whichever shard the
//! kernel gave it to (SO_REUSEPORT spreads accepts over the shards).
//!
//! Pre-auth: (WebSocket upgrade,) read the first packet within the CONNECT timeout, require
//! CONNECT, authenticate, then detach the socket from this shard's driver and hand it to the
//! owner shard of the user. Nothing here touches per-user state.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use im_protocol::packet::{connack, FLAG_RELAYED};
use im_protocol::ws::{self, Handshake};
use im_protocol::{ClientPacket, ServerPacket};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};

use crate::auth::callback::{AuthCallback, Verdict};
use crate::auth::limiter::{AuthLimiter, Recorded};
use crate::auth::TokenAuth;
use crate::config::{AuthMode, CoreConfig};
use crate::net::conn::{close_with, refuse_and_close};
use crate::net::handoff::{Arrival, Handoff, PreAuthIo};
use crate::net::relay::relay;
use crate::net::tls::PreTls;
use crate::net::transport::{Event, Framing, TransportKind};
use crate::route::mailbox::Mesh;
use crate::route::routing::owner_of;
use crate::route::Mail;
use crate::stats::ShardStats;

/// What the accept path needs from the shard it runs on (the driver implements it; this
/// module never names the driver).
pub(crate) trait Gate: 'static {
    fn id(&self) -> usize;
    fn cfg(&self) -> &CoreConfig;
    fn tls(&self) -> Option<Arc<rustls::ServerConfig>>;
    fn auth(&self) -> &TokenAuth;
    fn limiter(&self) -> &AuthLimiter;
    fn callback(&self) -> Option<&Arc<dyn AuthCallback>>;
    fn stats(&self) -> &ShardStats;
    fn mesh(&self) -> &Mesh<Mail>;
    /// Adopts an authenticated connection of a user this shard owns.
    fn attach(self: &Rc<Self>, h: Handoff);
    /// In a cluster: the plain TCP address of `uid`'s home node when that is another node.
    fn relay_to(&self, uid: u32) -> Option<std::net::SocketAddr>;
}

/// Binds a listener with SO_REUSEPORT (every shard binds the same port) and TCP_NODELAY,
/// which Linux copies to every socket the listener accepts: one `setsockopt` per listener
/// instead of one per login.
pub(crate) fn bind(cfg: &CoreConfig, port: u16) -> std::io::Result<TcpListener> {
    let addr = format!("{}:{}", cfg.net.bind, port);
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(cfg.net.backlog);
    let listener = TcpListener::bind_with_config(addr, &opts)?;
    with_socket(&listener, |s| s.set_nodelay(true))?;
    Ok(listener)
}

/// Runs `f` on the socket options of a descriptor `owner` holds open (socket2 takes a
/// borrowed descriptor; monoio's sockets only give the raw one).
fn with_socket<R>(owner: &impl AsRawFd, f: impl FnOnce(socket2::SockRef<'_>) -> R) -> R {
    // SAFETY: `owner` keeps the descriptor open for the whole call.
    let fd = unsafe { BorrowedFd::borrow_raw(owner.as_raw_fd()) };
    f(socket2::SockRef::from(&fd))
}

/// Accepts until the shard stops.
pub(crate) async fn accept_loop<G: Gate>(
    shard: Rc<G>,
    listener: TcpListener,
    kind: TransportKind,
    mut stop: local_sync::oneshot::Receiver<()>,
) {
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = &mut stop => break,
        };
        match accepted {
            Ok((stream, peer)) if kind.is_tls() => {
                monoio::spawn(pre_auth_tls(shard.clone(), stream, kind, peer.ip()));
            }
            Ok((stream, peer)) => {
                monoio::spawn(pre_auth(shard.clone(), stream, kind, peer.ip()));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, transport = kind.name(), "accept failed");
                monoio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Largest first packet (CONNECT) accepted before authentication.
const PRE_AUTH_MAX_FRAME: usize = 8 * 1024;

/// Why the first bytes of a connection are refused.
enum Refusal {
    /// Timed out or the peer went away: just close.
    Silent,
    /// Answer with these raw bytes (an HTTP error), then close.
    Http(Vec<u8>),
    /// Malformed input: INVALID_PACKET, then close.
    Invalid,
}

/// A TLS connection: handshake (within the CONNECT timeout), then as any other.
async fn pre_auth_tls<G: Gate>(shard: Rc<G>, stream: TcpStream, kind: TransportKind, peer: IpAddr) {
    let Some(cfg) = shard.tls().clone() else {
        return;
    };
    let timeout = Duration::from_millis(shard.cfg().session.connect_timeout_ms);
    let mut pre = match PreTls::new(stream, cfg) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a TLS session");
            return;
        }
    };
    match Box::pin(monoio::time::timeout(timeout, pre.handshake())).await {
        Ok(Ok(())) => pre_auth(shard, pre, kind, peer).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}

// An `async move` block, not an `async fn`: an `async fn` would hold its arguments twice
// (for TLS the whole pre-authentication rustls connection), for every login in progress.
#[allow(clippy::manual_async_fn)]
fn pre_auth<G: Gate>(
    shard: Rc<G>,
    mut stream: impl PreAuthIo,
    kind: TransportKind,
    peer: IpAddr,
) -> impl std::future::Future<Output = ()> {
    async move {
        let fd = stream.as_raw_fd();
        let cfg = &shard.cfg();
        let linger = Duration::from_millis(cfg.session.close_linger_ms);
        let timeout = Duration::from_millis(cfg.session.connect_timeout_ms);
        // Boxed here and below (the refusals box themselves): timers are large (128-byte
        // aligned), and a task's size is that of its largest state, held for every login.
        let first = Box::pin(monoio::time::timeout(
            timeout,
            read_first_packet(&*shard, &mut stream, kind),
        ))
        .await;
        let (packet, leftover, framing) = match first {
            Ok(Ok(x)) => x,
            Ok(Err(Refusal::Http(resp))) => {
                return close_with(stream, fd, resp, linger).await;
            }
            Ok(Err(Refusal::Invalid)) => {
                return refuse_and_close(
                    stream,
                    fd,
                    kind,
                    Some(ServerPacket::InvalidPacket),
                    linger,
                )
                .await;
            }
            Ok(Err(Refusal::Silent)) | Err(_) => return,
        };
        let (username, password, role, flags) = match ClientPacket::decode(&packet) {
            Ok(ClientPacket::Connect {
                username,
                password,
                role,
                flags,
            }) => (username, password, role.unwrap_or(0), flags.unwrap_or(0)),
            Ok(_) => {
                tracing::debug!("first packet is not CONNECT");
                return refuse_and_close(stream, fd, kind, None, linger).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "malformed CONNECT");
                return refuse_and_close(
                    stream,
                    fd,
                    kind,
                    Some(ServerPacket::InvalidPacket),
                    linger,
                )
                .await;
            }
        };
        let nack = |code| Some(ServerPacket::ConnectAck { code });
        if !shard.limiter().allowed(peer, Instant::now()) {
            tracing::debug!(%peer, "too many failed logins from this address; CONNECT_ACK 5");
            shard.stats().limiter(true);
            let n = nack(connack::TOO_MANY_ATTEMPTS);
            return refuse_and_close(stream, fd, kind, n, linger).await;
        }
        let uid = match (&shard.callback(), shard.cfg().auth.mode) {
            (Some(cb), AuthMode::Http) => {
                match Box::pin(cb.check(username.to_vec(), password.to_vec(), role)).await {
                    Verdict::Pass(uid) => uid,
                    Verdict::Denied => {
                        tracing::debug!("authentication callback denied");
                        shard.stats().callback_failed(true);
                        count_failure(&*shard, peer);
                        let n = nack(connack::BAD_CREDENTIALS);
                        return refuse_and_close(stream, fd, kind, n, linger).await;
                    }
                    Verdict::Unavailable(why) => {
                        tracing::warn!(%why, "authentication callback failed; CONNECT_ACK 4");
                        shard.stats().callback_failed(false);
                        let n = nack(connack::UNAVAILABLE);
                        return refuse_and_close(stream, fd, kind, n, linger).await;
                    }
                }
            }
            _ => match shard.auth().verify(username, password) {
                Ok(uid) => uid,
                Err(e) => {
                    tracing::debug!(error = %e, "authentication failed");
                    shard.stats().auth_failed(&e);
                    count_failure(&*shard, peer);
                    let n = nack(connack::BAD_CREDENTIALS);
                    return refuse_and_close(stream, fd, kind, n, linger).await;
                }
            },
        };
        // In a cluster, a user whose home is another node is relayed there.
        if flags & FLAG_RELAYED == 0 {
            if let Some(home) = shard.relay_to(uid) {
                let connect = ClientPacket::Connect {
                    username,
                    password,
                    role: Some(role),
                    flags: Some(flags | FLAG_RELAYED),
                }
                .to_vec();
                let max = cfg.net.max_frame;
                shard.stats().relayed();
                return Box::pin(relay(stream, connect, leftover, framing, home, max, linger))
                    .await;
            }
        }
        // Detach the socket from this shard's driver; the owner shard adopts it.
        let (tcp, tls) = stream.detach();
        let fd = tcp.into_raw_fd();
        // SAFETY: `into_raw_fd` gave us sole ownership of this open socket descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let handoff = Handoff {
            fd,
            tls,
            session: Arrival {
                framing,
                leftover,
                uid,
                role,
                flags,
            },
        };
        let owner = owner_of(uid, shard.mesh().shards());
        if owner == shard.id() {
            shard.attach(handoff);
        } else {
            shard
                .mesh()
                .send(shard.id(), owner, Mail::Handoff(handoff))
                .await;
        }
    }
}

/// Counts a failed login against its source address.
fn count_failure<G: Gate>(shard: &G, peer: IpAddr) {
    if shard.limiter().failed(peer, Instant::now()) == Recorded::TableFull {
        shard.stats().limiter(false);
    }
}

/// Reads until the first packet is complete. Returns it with any bytes after it.
async fn read_first_packet<G: Gate>(
    shard: &G,
    stream: &mut impl PreAuthIo,
    kind: TransportKind,
) -> Result<(Vec<u8>, Vec<u8>, Framing), Refusal> {
    // CONNECT is small: an unauthenticated peer never makes us buffer a large frame.
    let max = shard.cfg().net.max_frame.min(PRE_AUTH_MAX_FRAME);
    let mut buf = Vec::with_capacity(512);
    if kind.is_ws() {
        loop {
            read_more(stream, &mut buf).await?;
            let path = match kind {
                TransportKind::Wss => &shard.cfg().tls.wss_path,
                _ => &shard.cfg().net.ws_path,
            };
            match ws::server_handshake(&buf, path) {
                Ok(None) => continue,
                Ok(Some(Handshake::Upgrade { response, consumed })) => {
                    let (res, _) = stream.write_all(response).await;
                    res.map_err(|_| Refusal::Silent)?;
                    buf.drain(..consumed);
                    break;
                }
                Ok(Some(Handshake::Reject { response, .. })) => {
                    return Err(Refusal::Http(response))
                }
                Err(_) => {
                    let resp = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                    return Err(Refusal::Http(resp.to_vec()));
                }
            }
        }
    }
    let mut framing = Framing::new(kind);
    loop {
        let mut pos = 0;
        loop {
            match framing.next(&mut buf[pos..], max) {
                Ok(None) => break,
                Ok(Some((used, ev))) => {
                    let base = pos;
                    pos += used;
                    let packet = match ev {
                        Event::Packet { start, end } => buf[base + start..base + end].to_vec(),
                        Event::Assembled(p) => p,
                        // Control frames before CONNECT: answered by nobody, the client
                        // must send CONNECT first.
                        Event::Reply(_) | Event::Skip => continue,
                        Event::Close(_) => return Err(Refusal::Silent),
                    };
                    buf.drain(..pos);
                    return Ok((packet, buf, framing));
                }
                Err(_) => return Err(Refusal::Invalid),
            }
        }
        read_more(stream, &mut buf).await?;
    }
}

async fn read_more(stream: &mut impl AsyncReadRent, buf: &mut Vec<u8>) -> Result<(), Refusal> {
    if buf.capacity() - buf.len() < 256 {
        buf.reserve(buf.len().max(512));
    }
    let len = buf.len();
    let (res, slice) = stream.read(std::mem::take(buf).slice_mut(len..)).await;
    *buf = slice.into_inner();
    match res {
        Ok(n) if n > 0 => Ok(()),
        _ => Err(Refusal::Silent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts one connection through `bind` and returns the accepted socket's TCP_NODELAY.
    async fn accepted_nodelay() -> bool {
        let mut cfg = CoreConfig::default();
        cfg.net.bind = "127.0.0.1".into();
        let listener = bind(&cfg, 0).expect("bind");
        let addr = listener.local_addr().expect("local address");
        // The handshake completes in the kernel's backlog before anything is accepted.
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        with_socket(&stream, |s| s.nodelay()).expect("TCP_NODELAY")
    }

    /// Accepted sockets have Nagle off without a setsockopt of their own, under both drivers
    /// (the accept path no longer sets it per connection).
    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .expect("runtime");
        assert!(rt.block_on(accepted_nodelay()), "epoll driver");
        if monoio::utils::detect_uring() {
            let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .build()
                .expect("runtime");
            assert!(rt.block_on(accepted_nodelay()), "io_uring driver");
        }
    }
}
