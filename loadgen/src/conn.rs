//! Transport: opening a connection (from one of several loopback source addresses, through
//! TLS and the WebSocket upgrade where asked) and moving framed messages over it. Above this
//! layer everything is message bodies; below it, bytes. Runs on whichever loadgen thread
//! opened the connection.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use bytes::BytesMut;
use im_protocol::{framing, ws, ClientPacket, FrameError};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use monoio_rustls::{ClientTlsStream, TlsConnector};
use rustls::pki_types::ServerName;

/// Largest message accepted from the target.
pub const MAX_FRAME: usize = 1 << 20;

/// How messages are delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The IM protocol's 4-byte big-endian length prefix (also the echo baseline).
    Prefix,
    /// WebSocket binary frames (client frames masked).
    Ws,
    /// MQTT's own fixed header: the bytes go up unparsed, [`crate::mqtt`] reads them.
    Mqtt,
}

/// Where and how to connect; shared by every thread.
#[derive(Clone)]
pub struct Endpoint {
    /// Where connection `n` goes: `addrs[n % len]` (one address unless `--targets`).
    pub addrs: Arc<Vec<SocketAddrV4>>,
    /// Cluster runs (`--targets` or `--connect-home`): users' home nodes, asked of the token
    /// endpoint, to split delivery latency into same-node and cross-node.
    pub homes: Option<Arc<Homes>>,
    /// `--connect-home`: each user connects to its home instead of `addrs`.
    pub connect_home: bool,
    pub framing: Framing,
    /// `Some` for WebSocket: the path of the upgrade request.
    pub ws_path: Option<String>,
    /// `Some` for TLS.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Source addresses used in turn; empty: let the kernel choose.
    pub sources: Arc<Vec<Ipv4Addr>>,
}

type Tls = ClientTlsStream<TcpStream>;

enum Rd {
    Plain(OwnedReadHalf<TcpStream>),
    Tls(OwnedReadHalf<Tls>),
}

enum Wr {
    Plain(OwnedWriteHalf<TcpStream>),
    Tls(OwnedWriteHalf<Tls>),
}

/// The receiving half: bytes accumulate in `buf` until whole messages can be taken out.
pub struct Reader {
    io: Rd,
    framing: Framing,
    pub buf: BytesMut,
    chunk: Vec<u8>,
}

/// The sending half: writes buffers of messages framed by the connection's [`Framer`].
pub struct Writer {
    io: Wr,
}

/// Frames message bodies for one connection (WebSocket frames need a mask per frame).
pub struct Framer {
    framing: Framing,
    mask_state: u32,
}

impl Endpoint {
    /// The address connection `n` (a uid) goes to.
    pub fn addr(&self, n: usize) -> SocketAddrV4 {
        if let Some(h) = self.homes.as_ref().filter(|_| self.connect_home) {
            if let Some(a) = h.home(n as u32) {
                return a;
            }
        }
        self.addrs[n % self.addrs.len().max(1)]
    }

    /// Cluster runs: whether messages from `from` to `to` cross nodes (`None` when homes
    /// are unknown).
    pub fn crosses(&self, from: u32, to: u32) -> Option<bool> {
        let h = self.homes.as_ref()?;
        Some(h.home(from)? != h.home(to)?)
    }
}

/// Users' home nodes as the cluster's token endpoint answers them, asked once per user
/// (a blocking HTTP call at login: setup, not the measured traffic).
pub struct Homes {
    pub admin_url: String,
    pub admin_secret: String,
    cache: std::sync::Mutex<std::collections::HashMap<u32, SocketAddrV4>>,
}

impl Homes {
    pub fn new(admin_url: String, admin_secret: String) -> Self {
        Self {
            admin_url,
            admin_secret,
            cache: Default::default(),
        }
    }

    pub fn home(&self, uid: u32) -> Option<SocketAddrV4> {
        let cached = self.cache.lock().ok()?.get(&uid).copied();
        if cached.is_some() {
            return cached;
        }
        let body = serde_json::json!({"secret": self.admin_secret, "platform": 1, "uid": uid});
        let v: serde_json::Value = ureq::post(format!("{}/auth/user_token", self.admin_url))
            .send_json(&body)
            .ok()?
            .body_mut()
            .read_json()
            .ok()?;
        let addr: SocketAddrV4 = v["data"]["node"]["tcp"].as_str()?.parse().ok()?;
        self.cache.lock().ok()?.insert(uid, addr);
        Some(addr)
    }
}

/// Opens a connection; `n` picks the source address and the target.
pub async fn open(ep: &Endpoint, n: usize) -> io::Result<(Reader, Writer, Framer)> {
    let tcp = connect_from(ep, n).await?;
    tcp.set_nodelay(true)?;
    let (rd, wr) = match &ep.tls {
        None => {
            let (r, w) = tcp.into_split();
            (Rd::Plain(r), Wr::Plain(w))
        }
        Some((connector, name)) => {
            let tls = connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| io::Error::other(format!("TLS handshake: {e}")))?;
            let (r, w) = tls.into_split();
            (Rd::Tls(r), Wr::Tls(w))
        }
    };
    let mut reader = Reader {
        io: rd,
        framing: ep.framing,
        buf: BytesMut::with_capacity(16 * 1024),
        chunk: vec![0u8; 64 * 1024],
    };
    let mut writer = Writer { io: wr };
    let framer = Framer {
        framing: ep.framing,
        mask_state: 0x9e37_79b9 ^ n as u32 | 1,
    };
    if let Some(path) = &ep.ws_path {
        upgrade(&mut reader, &mut writer, &ep.addr(n), path).await?;
    }
    Ok((reader, writer, framer))
}

/// A non-blocking connect from a chosen loopback source address (monoio's connect cannot
/// bind first), then handed to the runtime.
async fn connect_from(ep: &Endpoint, n: usize) -> io::Result<TcpStream> {
    if ep.sources.is_empty() {
        return TcpStream::connect_addr(SocketAddr::V4(ep.addr(n))).await;
    }
    let src = ep.sources[n % ep.sources.len()];
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.set_nonblocking(true)?;
    // The port is picked at connect time from the full 4-tuple, not at bind time.
    bind_address_no_port(&sock)?;
    sock.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
    match sock.connect(&SocketAddr::V4(ep.addr(n)).into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let tcp = TcpStream::from_std(std::net::TcpStream::from(sock))?;
    tcp.writable(false).await?;
    // SAFETY-free check of the outcome: SO_ERROR through a borrowed socket2 view.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    let view = std::mem::ManuallyDrop::new(
        // SAFETY: `fd` is open and owned by `tcp`, which outlives `view`; ManuallyDrop keeps
        // `view` from closing it.
        unsafe { <socket2::Socket as std::os::fd::FromRawFd>::from_raw_fd(fd) },
    );
    if let Some(e) = view.take_error()? {
        return Err(e);
    }
    Ok(tcp)
}

/// IP_BIND_ADDRESS_NO_PORT (Linux 4.2+; socket2 has no setter for it).
fn bind_address_no_port(sock: &socket2::Socket) -> io::Result<()> {
    let one: libc::c_int = 1;
    let fd = std::os::fd::AsRawFd::as_raw_fd(sock);
    // SAFETY: a plain setsockopt on an open socket with a pointer to a live c_int.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The client side of the WebSocket upgrade.
async fn upgrade(
    rd: &mut Reader,
    wr: &mut Writer,
    addr: &SocketAddrV4,
    path: &str,
) -> io::Result<()> {
    let key = "bG9hZGdlbi1rZXktMDAwMQ==";
    let req = ws::client_request(&addr.to_string(), path, key);
    wr.write(req.into_bytes()).await?;
    loop {
        if let Some(end) = rd.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = rd.buf.split_to(end + 4);
            let text = String::from_utf8_lossy(&head);
            let expect = ws::accept_key(key.as_bytes());
            if !text.starts_with("HTTP/1.1 101") || !text.contains(&expect) {
                let line = text.lines().next().unwrap_or_default().to_string();
                return Err(io::Error::other(format!(
                    "WebSocket upgrade refused: {line}"
                )));
            }
            return Ok(());
        }
        if rd.buf.len() > 16 * 1024 {
            return Err(io::Error::other("WebSocket upgrade: response too long"));
        }
        if rd.fill().await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

impl Reader {
    /// Reads what is available into `buf`; 0 at end of stream.
    pub async fn fill(&mut self) -> io::Result<usize> {
        let chunk = std::mem::take(&mut self.chunk);
        let (r, chunk) = match &mut self.io {
            Rd::Plain(s) => s.read(chunk).await,
            Rd::Tls(s) => s.read(chunk).await,
        };
        let n = r?;
        self.buf.extend_from_slice(&chunk[..n]);
        self.chunk = chunk;
        Ok(n)
    }

    /// Takes the first complete message out of `buf`, leaving the rest for [`Reader::drain`]
    /// (a login takes its CONNECT_ACK this way: pushes the server sent right behind it are
    /// the connection's, not the login's). WebSocket control frames before it are skipped.
    pub fn next_packet(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        match self.framing {
            Framing::Mqtt => Ok(None),
            Framing::Prefix => match framing::check(&self.buf, MAX_FRAME)? {
                Some(len) => {
                    let frame = self.buf.split_to(framing::PREFIX + len);
                    Ok(Some(frame[framing::PREFIX..].to_vec()))
                }
                None => Ok(None),
            },
            Framing::Ws => loop {
                let Some(h) = ws::parse_header(&self.buf, MAX_FRAME)? else {
                    return Ok(None);
                };
                if self.buf.len() < h.frame_len() {
                    return Ok(None);
                }
                let frame = self.buf.split_to(h.frame_len());
                match h.opcode {
                    ws::Opcode::Binary | ws::Opcode::Text => {
                        return Ok(Some(frame[h.header_len..].to_vec()))
                    }
                    ws::Opcode::Close => return Err(FrameError::WebSocket("closed")),
                    _ => {}
                }
            },
        }
    }

    /// Takes every complete message out of `buf` (prefix or WebSocket framing), passing each
    /// body to `f`. WebSocket control frames are skipped; a close frame ends the stream.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> Result<bool, FrameError> {
        match self.framing {
            // MQTT packets are taken out by `crate::proto`, which parses them itself.
            Framing::Mqtt => Ok(true),
            Framing::Prefix => {
                let used = framing::for_each(&self.buf, MAX_FRAME, |p| {
                    f(p);
                    Ok::<(), ()>(())
                })
                .map_err(|e| match e {
                    framing::FramedError::Frame(e) => e,
                    framing::FramedError::Handler(()) => FrameError::WebSocket("handler"),
                })?;
                let _ = self.buf.split_to(used);
                Ok(true)
            }
            Framing::Ws => {
                let mut pos = 0;
                let mut open = true;
                while let Some(h) = ws::parse_header(&self.buf[pos..], MAX_FRAME)? {
                    if self.buf.len() - pos < h.frame_len() {
                        break;
                    }
                    let body = &self.buf[pos + h.header_len..pos + h.frame_len()];
                    match h.opcode {
                        ws::Opcode::Binary | ws::Opcode::Text => f(body),
                        ws::Opcode::Close => open = false,
                        _ => {}
                    }
                    pos += h.frame_len();
                }
                let _ = self.buf.split_to(pos);
                Ok(open)
            }
        }
    }
}

impl Framer {
    /// Appends the packet `p` framed for this connection to `out`, encoded in place (no
    /// intermediate buffer: this runs for every publish and every ack).
    pub fn packet(&mut self, out: &mut Vec<u8>, p: &ClientPacket<'_>) {
        let len = p.encoded_len();
        match self.framing {
            Framing::Prefix => {
                framing::put_prefix(out, len);
                p.encode(out);
            }
            Framing::Ws => {
                let mask = self.next_mask();
                ws::put_header(out, ws::Opcode::Binary, len, Some(mask));
                let start = out.len();
                p.encode(out);
                ws::apply_mask(&mut out[start..], mask);
            }
            Framing::Mqtt => p.encode(out),
        }
    }

    /// xorshift: masks need not be secret here, only present.
    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        x.to_be_bytes()
    }
}

impl Writer {
    /// Writes all of `buf`, handing the buffer back for reuse.
    pub async fn write(&mut self, buf: Vec<u8>) -> io::Result<Vec<u8>> {
        let (r, buf) = match &mut self.io {
            Wr::Plain(s) => s.write_all(buf).await,
            Wr::Tls(s) => s.write_all(buf).await,
        };
        r?;
        Ok(buf)
    }

    pub async fn shutdown(&mut self) {
        let _ = match &mut self.io {
            Wr::Plain(s) => s.shutdown().await,
            Wr::Tls(s) => s.shutdown().await,
        };
    }
}
