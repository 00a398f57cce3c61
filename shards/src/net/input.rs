//! Where a connection's reader gets its bytes.
//!
//! A plain socket ([`SocketInput`]) owns no read buffer while it waits: it reads with a
//! non-blocking `recv(2)` into the shard's one read buffer, hands the bytes to the reader's
//! parser right away and keeps only the tail of an incomplete frame (usually nothing). When
//! the socket has nothing, it waits for readiness (an io_uring poll, or epoll under the
//! legacy driver) without lending the kernel a buffer. That is what lets an idle connection
//! cost no read buffer at all; a busy one gets its bytes with one system call per read, as
//! under epoll. A TLS session ([`OwnedInput`]) decrypts into a buffer of its own: rustls
//! keeps per-connection buffers anyway.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, OwnedReadHalf};
use monoio::net::TcpStream;

/// Size of the shard's read buffer: the most one `recv` brings.
pub(crate) const SCRATCH: usize = 64 * 1024;
/// Initial size of an owned read buffer; it grows to the largest frame and shrinks back.
const OWNED_INITIAL: usize = 1024;
const OWNED_SHRINK_ABOVE: usize = 64 * 1024;

/// A source of input for a connection's reader: [`Input::try_read`] without waiting, and
/// [`Input::ready`] to wait when it had nothing. The parser runs inside `try_read`, so no
/// borrowed buffer or parser state is held across a wait.
pub(crate) trait Input {
    /// Bytes already received and not yet consumed (what arrived with the CONNECT).
    fn consume_pending(&mut self, f: impl FnOnce(&mut [u8]) -> usize);

    /// Reads what is there and calls `f` on every unconsumed byte (the kept tail of the
    /// last read first); `f` returns how many it consumed, the rest is kept for the next
    /// read. `None`: nothing to read now. `Some(Ok(false))`: the peer closed.
    fn try_read(
        &mut self,
        scratch: &RefCell<Vec<u8>>,
        f: impl FnOnce(&mut [u8]) -> usize,
    ) -> Option<io::Result<bool>>;

    /// Waits until [`Input::try_read`] may have something.
    async fn ready(&mut self) -> io::Result<()>;
}

/// Reads once, waiting as long as it takes: see [`Input::try_read`].
pub(crate) async fn read_with(
    input: &mut impl Input,
    scratch: &RefCell<Vec<u8>>,
    mut f: impl FnMut(&mut [u8]) -> usize,
) -> io::Result<bool> {
    loop {
        if let Some(r) = input.try_read(scratch, &mut f) {
            return r;
        }
        input.ready().await?;
    }
}

/// Reads until EOF or an error, throwing the bytes away (a closing session keeps draining so
/// that unread input does not turn our close into a reset that loses our last packet).
pub(crate) async fn drain_input(input: &mut impl Input, scratch: &RefCell<Vec<u8>>) {
    while let Ok(true) = read_with(input, scratch, |b| b.len()).await {}
}

/// A plain TCP socket (length-prefixed or WebSocket framing above it).
pub(crate) struct SocketInput {
    half: OwnedReadHalf<TcpStream>,
    fd: RawFd,
    /// The tail of an incomplete frame; empty (and unallocated) between frames.
    carry: Vec<u8>,
    /// The next read waits for readiness first instead of trying a `recv` that would most
    /// likely find nothing: nothing came with the CONNECT (the client is waiting for
    /// CONNECT_ACK), or the last `recv` did not fill the room it was given, so it took
    /// everything there was. A readiness wait on a socket that has data completes at once
    /// (under io_uring within the same submission), so this costs no latency and saves
    /// the system call of a `recv` that finds nothing after most reads.
    wait_first: bool,
}

impl SocketInput {
    pub fn new(half: OwnedReadHalf<TcpStream>, fd: RawFd, pending: Vec<u8>) -> Self {
        let wait_first = pending.is_empty();
        let carry = if wait_first { Vec::new() } else { pending };
        Self {
            half,
            fd,
            carry,
            wait_first,
        }
    }

    /// A connection woken from sleep: nothing pending. `has_input`: the sleep set reported
    /// input, so the first read does not wait for readiness first.
    pub fn resume(half: OwnedReadHalf<TcpStream>, fd: RawFd, has_input: bool) -> Self {
        Self {
            half,
            fd,
            carry: Vec::new(),
            wait_first: !has_input,
        }
    }

    /// No part of a frame is held: nothing would be lost if the connection slept.
    pub fn is_idle(&self) -> bool {
        self.carry.is_empty()
    }

    /// A wait for readiness that owns a handle to the socket (kept across polls by a task
    /// that also waits for other things).
    pub fn wait_ready(&self) -> impl Future<Output = io::Result<()>> {
        let stream = self.half.0.clone();
        async move {
            // SAFETY: monoio's split halves share the stream through an `UnsafeCell`
            // (TcpStream is `Split`: its halves may be used at the same time); `readable`
            // takes `&self` and only clones the shared descriptor into a poll operation,
            // touching nothing the write half uses. Not relaxed: under the legacy driver
            // this re-checks with poll(2), so a readiness left over from bytes we already
            // took with our own recv does not spin.
            let s = unsafe { &*stream.get() };
            s.readable(false).await
        }
    }

    /// The read half back (to be reunited with the write half when the connection sleeps).
    pub fn into_half(self) -> OwnedReadHalf<TcpStream> {
        self.half
    }

    /// Keeps what `f` left of `bytes` for the next read.
    fn keep_tail(carry: &mut Vec<u8>, bytes: &[u8], used: usize) {
        carry.clear();
        let tail = &bytes[used.min(bytes.len())..];
        if tail.is_empty() {
            *carry = Vec::new();
        } else {
            carry.extend_from_slice(tail);
        }
    }
}

impl Input for SocketInput {
    fn consume_pending(&mut self, f: impl FnOnce(&mut [u8]) -> usize) {
        if self.carry.is_empty() {
            return;
        }
        let used = f(&mut self.carry);
        self.carry.drain(..used.min(self.carry.len()));
        if self.carry.is_empty() {
            self.carry = Vec::new();
        }
    }

    fn try_read(
        &mut self,
        scratch: &RefCell<Vec<u8>>,
        f: impl FnOnce(&mut [u8]) -> usize,
    ) -> Option<io::Result<bool>> {
        if std::mem::take(&mut self.wait_first) {
            // A poll on a socket that has data completes at once: nothing is missed.
            return None;
        }
        let kept = self.carry.len();
        let got = if kept >= SCRATCH / 2 {
            // A large frame in progress: read straight into its own buffer.
            self.carry.reserve(kept.max(OWNED_INITIAL));
            let spare = self.carry.spare_capacity_mut();
            let room = spare.len();
            recv(self.fd, spare.as_mut_ptr().cast(), room).inspect(|&n| {
                self.wait_first = n > 0 && n < room;
                if n > 0 {
                    // SAFETY: recv(2) initialised the first `n` spare bytes.
                    unsafe { self.carry.set_len(kept + n) };
                    let used = f(&mut self.carry);
                    self.carry.drain(..used.min(self.carry.len()));
                }
            })
        } else {
            let mut buf = scratch.borrow_mut();
            if buf.len() < SCRATCH {
                buf.resize(SCRATCH, 0);
            }
            buf[..kept].copy_from_slice(&self.carry);
            let room = &mut buf[kept..];
            let len = room.len();
            recv(self.fd, room.as_mut_ptr(), len).inspect(|&n| {
                self.wait_first = n > 0 && n < len;
                if n > 0 {
                    let bytes = &mut buf[..kept + n];
                    let used = f(bytes);
                    Self::keep_tail(&mut self.carry, bytes, used);
                }
            })
        };
        match got {
            Ok(n) => Some(Ok(n > 0)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => Some(Err(e)),
        }
    }

    async fn ready(&mut self) -> io::Result<()> {
        self.wait_ready().await
    }
}

/// `recv(2)` without blocking; retried on EINTR.
fn recv(fd: RawFd, ptr: *mut u8, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: `ptr` points at `len` writable bytes owned by the caller for the call's
        // duration; `fd` is the connection's socket, kept open by its read half.
        let n = unsafe { libc::recv(fd, ptr.cast(), len, libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A stream read through its own buffer (TLS: the plaintext rustls hands out). Its read is
/// an owned-buffer operation, so [`Input::ready`] does the reading and `try_read` hands
/// over what it brought.
pub(crate) struct OwnedInput<R> {
    rd: R,
    buf: Vec<u8>,
    /// The result of the read [`Input::ready`] did, not yet handed over.
    fresh: Option<io::Result<usize>>,
}

impl<R: AsyncReadRent> OwnedInput<R> {
    pub fn new(rd: R, pending: Vec<u8>) -> Self {
        Self {
            rd,
            buf: pending,
            fresh: None,
        }
    }
}

impl<R: AsyncReadRent> Input for OwnedInput<R> {
    fn consume_pending(&mut self, f: impl FnOnce(&mut [u8]) -> usize) {
        if !self.buf.is_empty() {
            let used = f(&mut self.buf);
            self.buf.drain(..used.min(self.buf.len()));
        }
    }

    fn try_read(
        &mut self,
        _scratch: &RefCell<Vec<u8>>,
        f: impl FnOnce(&mut [u8]) -> usize,
    ) -> Option<io::Result<bool>> {
        match self.fresh.take()? {
            Ok(0) => Some(Ok(false)),
            Ok(_) => {
                let used = f(&mut self.buf);
                self.buf.drain(..used.min(self.buf.len()));
                Some(Ok(true))
            }
            Err(e) => Some(Err(e)),
        }
    }

    async fn ready(&mut self) -> io::Result<()> {
        if self.fresh.is_some() {
            return Ok(());
        }
        if self.buf.is_empty() && self.buf.capacity() > OWNED_SHRINK_ABOVE {
            self.buf = Vec::with_capacity(OWNED_INITIAL);
        }
        if self.buf.capacity() - self.buf.len() < OWNED_INITIAL / 2 {
            self.buf.reserve(self.buf.len().max(OWNED_INITIAL));
        }
        let len = self.buf.len();
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = self.rd.read(buf.slice_mut(len..)).await;
        self.buf = slice.into_inner();
        self.fresh = Some(res);
        Ok(())
    }
}
