//! TLS for `wss://:8443/wss` and TCP+TLS on 19443 (rustls, ring provider).
//!
//! A TLS connection is accepted like any other: the accepting shard does the handshake and
//! reads CONNECT, then the connection moves to its user's owner shard. What makes this
//! delicate is the hand-off: the TLS session state (`rustls::ServerConnection`) moves with
//! the socket, and so must every byte already read from the socket. So rustls is driven
//! directly, with our own ciphertext buffers: [`PreTls`] before authentication, then on the
//! owner shard [`resume`] feeds the remainder back and splits the session into a reader
//! and a writer that share the rustls state but no I/O buffer.
//!
//! Why not `monoio-rustls` (0.4): its stream keeps read-ahead ciphertext in a private buffer
//! that `into_parts` drops (bytes a client pipelined after CONNECT would be lost at the
//! hand-off), and used through split halves it writes an alert from the read side on a
//! protocol error while the write side may be mid-write on the same buffer, which panics
//! ("buffer mut expected") — a hostile client could take a shard down with a bad record.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConnection;

/// How to make a development certificate (printed with the configuration error).
pub const SELF_SIGNED_HINT: &str = "openssl req -x509 -newkey rsa:2048 -nodes -days 365 \
     -subj /CN=localhost -keyout key.pem -out cert.pem";

/// The TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "tls.enabled is set but tls.cert_path / tls.key_path are empty; for development: {SELF_SIGNED_HINT}"
    )]
    Missing,
    #[error("cannot read {what} {path}: {why}")]
    Read {
        what: &'static str,
        path: String,
        why: String,
    },
    #[error("invalid certificate or key: {0}")]
    Invalid(#[from] rustls::Error),
}

/// Loads the certificate chain and key into a server configuration.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    if cert.as_os_str().is_empty() || key.as_os_str().is_empty() {
        return Err(TlsError::Missing);
    }
    let read = |what, p: &Path, why: String| TlsError::Read {
        what,
        path: p.display().to_string(),
        why,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read("certificate", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| read("certificate", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(read(
            "certificate",
            cert,
            "no certificate in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read("key", key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(cfg))
}

/// What moves with a TLS connection to its owner shard.
pub(crate) struct TlsState {
    pub conn: Box<ServerConnection>,
    /// Ciphertext read from the socket and not yet given to rustls.
    pub cipher: Vec<u8>,
}

/// The pre-authentication side of a TLS connection: rustls driven by hand so that nothing
/// read from the socket is ever hidden in a buffer we cannot hand over.
pub(crate) struct PreTls {
    tcp: TcpStream,
    conn: ServerConnection,
    cipher: Vec<u8>,
    eof: bool,
}

pub(crate) fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl PreTls {
    pub fn new(tcp: TcpStream, cfg: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let conn = ServerConnection::new(cfg).map_err(invalid)?;
        Ok(Self {
            tcp,
            conn,
            cipher: Vec::new(),
            eof: false,
        })
    }

    /// Writes whatever rustls has queued.
    async fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            let mut out = Vec::new();
            self.conn.write_tls(&mut out)?;
            let (r, _) = self.tcp.write_all(out).await;
            r?;
        }
        Ok(())
    }

    /// Gives rustls more ciphertext (reading the socket when none is buffered) and
    /// processes it. Returns false at end of stream.
    async fn pump(&mut self) -> io::Result<bool> {
        if self.cipher.is_empty() {
            if self.eof {
                return Ok(false);
            }
            let (r, buf) = self.tcp.read(Vec::with_capacity(16 * 1024)).await;
            if r? == 0 {
                self.eof = true;
                return Ok(false);
            }
            self.cipher = buf;
        }
        let n = self.conn.read_tls(&mut &self.cipher[..])?;
        self.cipher.drain(..n);
        let state = self.conn.process_new_packets().map_err(invalid);
        // Alerts rustls queued for the peer go out even on errors.
        self.flush_tls().await?;
        state?;
        Ok(true)
    }

    /// Completes the handshake.
    pub async fn handshake(&mut self) -> io::Result<()> {
        loop {
            self.flush_tls().await?;
            if !self.conn.is_handshaking() {
                return Ok(());
            }
            if !self.pump().await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "eof in TLS handshake",
                ));
            }
        }
    }

    /// Gives up the socket and the session state for the owner shard.
    pub fn into_parts(self) -> (TcpStream, TlsState) {
        (
            self.tcp,
            TlsState {
                conn: Box::new(self.conn),
                cipher: self.cipher,
            },
        )
    }
}

impl AsRawFd for PreTls {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}

impl PlainSource for PreTls {
    fn take_plain(&mut self, out: &mut [u8]) -> io::Result<Option<usize>> {
        would_block_to_none(self.conn.reader().read(out))
    }

    async fn pump(&mut self) -> io::Result<bool> {
        PreTls::pump(self).await
    }
}

impl PlainSink for PreTls {
    fn put_plain(&mut self, data: &[u8]) -> io::Result<usize> {
        self.conn.writer().write(data)
    }

    async fn flush_tls(&mut self) -> io::Result<()> {
        PreTls::flush_tls(self).await
    }
}

impl AsyncReadRent for PreTls {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        read_plain(self, buf).await
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        readv_plain(self, buf).await
    }
}

impl AsyncWriteRent for PreTls {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        write_plain(self, buf).await
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        writev_plain(self, buf).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.flush_tls().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush_tls().await?;
        self.tcp.shutdown().await
    }
}

/// Where plaintext comes from: what rustls has decrypted, or more ciphertext fed to it.
pub(crate) trait PlainSource {
    /// Decrypted bytes into `out`; `None` when rustls needs more ciphertext.
    fn take_plain(&mut self, out: &mut [u8]) -> io::Result<Option<usize>>;
    /// Feeds rustls more ciphertext; false at the end of the stream.
    async fn pump(&mut self) -> io::Result<bool>;
}

/// Where plaintext goes: into rustls, then the socket.
pub(crate) trait PlainSink {
    /// Hands plaintext to rustls; it takes at most its buffer limit (64 KiB) at a time.
    fn put_plain(&mut self, data: &[u8]) -> io::Result<usize>;
    /// Sends everything rustls has queued.
    async fn flush_tls(&mut self) -> io::Result<()>;
}

pub(crate) fn would_block_to_none(r: io::Result<usize>) -> io::Result<Option<usize>> {
    match r {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// `AsyncReadRent::read` over a [`PlainSource`].
pub(crate) async fn read_plain<S: PlainSource, T: IoBufMut>(
    s: &mut S,
    mut buf: T,
) -> BufResult<usize, T> {
    let len = buf.bytes_total();
    let ptr = buf.write_ptr();
    // SAFETY: `write_ptr` points to `bytes_total` writable bytes that `buf` owns and nothing
    // else references for this call (monoio's `IoBufMut` contract). They may be
    // uninitialised, and a `&mut [u8]` over uninitialised memory is undefined behaviour, so
    // they are zeroed first (a memset of the read buffer, TLS reads only) and only then
    // borrowed as a slice; rustls' `Read` then sees initialised bytes as it requires.
    let slice = unsafe {
        std::ptr::write_bytes(ptr, 0, len);
        std::slice::from_raw_parts_mut(ptr, len)
    };
    loop {
        match s.take_plain(slice) {
            Ok(Some(n)) => {
                // SAFETY: every byte of the slice is initialised (zeroed above), and rustls
                // wrote its plaintext into the first `n <= len` of them.
                unsafe { buf.set_init(n) };
                return (Ok(n), buf);
            }
            Ok(None) => {}
            Err(e) => return (Err(e), buf),
        }
        match s.pump().await {
            Ok(true) => {}
            Ok(false) => return (Ok(0), buf),
            Err(e) => return (Err(e), buf),
        }
    }
}

/// `AsyncReadRent::readv` over a [`PlainSource`] (into the first buffer).
pub(crate) async fn readv_plain<S: PlainSource, T: IoVecBufMut>(
    s: &mut S,
    mut buf: T,
) -> BufResult<usize, T> {
    // SAFETY: the iovec's first buffer is valid and writable for as long as `buf` lives
    // (monoio's `IoVecBufMut` contract), and `buf` outlives the `RawBuf` (used only in the
    // awaited call below).
    let n = match unsafe { RawBuf::new_from_iovec_mut(&mut buf) } {
        Some(raw) => read_plain(s, raw).await.0,
        None => Ok(0),
    };
    if let Ok(n) = n {
        // SAFETY: `read_plain` initialised `n` bytes of the first buffer.
        unsafe { buf.set_init(n) };
    }
    (n, buf)
}

/// `AsyncWriteRent::write` over a [`PlainSink`]: all of `buf`, flushing as rustls fills.
pub(crate) async fn write_plain<S: PlainSink, T: IoBuf>(s: &mut S, buf: T) -> BufResult<usize, T> {
    // SAFETY: `read_ptr` / `bytes_init` describe the buffer's initialised bytes (monoio's
    // `IoBuf` contract); `buf` is owned by this (pinned) future and neither moved, written
    // nor dropped while the slice lives, so the bytes stay valid and unchanged.
    let slice = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
    let mut done = 0;
    while done < slice.len() {
        match s.put_plain(&slice[done..]) {
            Ok(n) => done += n,
            Err(e) => return (Err(e), buf),
        }
        if let Err(e) = s.flush_tls().await {
            return (Err(e), buf);
        }
    }
    (Ok(done), buf)
}

/// `AsyncWriteRent::writev` over a [`PlainSink`] (the first buffer).
pub(crate) async fn writev_plain<S: PlainSink, T: IoVecBuf>(
    s: &mut S,
    buf: T,
) -> BufResult<usize, T> {
    // SAFETY: the iovec's first buffer is valid for as long as `buf` lives (monoio's
    // `IoVecBuf` contract), and `buf` outlives the `RawBuf` (used only in the awaited call).
    let n = match unsafe { RawBuf::new_from_iovec(&buf) } {
        Some(raw) => write_plain(s, raw).await.0,
        None => Ok(0),
    };
    (n, buf)
}
