//! An authenticated connection on its way to the owner shard of its user: the socket (as a
//! plain file descriptor, detached from the accepting shard's driver), the transport state
//! and any bytes the client already sent after CONNECT (for TLS, also the TLS session and
//! the ciphertext not yet decrypted). [`PreAuthIo`]: the connection before that, as the
//! pre-authentication task and the cluster relay hold it.

use std::os::fd::{AsRawFd, OwnedFd};

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

use crate::net::tls::{PreTls, TlsState};
use crate::net::transport::Framing;

pub(crate) struct Handoff {
    pub fd: OwnedFd,
    /// TLS connections: the session state and unread ciphertext.
    pub tls: Option<TlsState>,
    pub session: Arrival,
}

/// What the owner shard needs to open the session.
pub(crate) struct Arrival {
    pub framing: Framing,
    /// Bytes received after the CONNECT packet, not yet parsed (plaintext).
    pub leftover: Vec<u8>,
    pub uid: u32,
    pub role: u8,
    pub flags: u8,
}

/// A connection before authentication: plain TCP, or TLS after its handshake.
pub(crate) trait PreAuthIo: AsyncReadRent + AsyncWriteRent + AsRawFd + 'static {
    /// Gives up the socket (and the TLS session state) for the owner shard.
    fn detach(self) -> (TcpStream, Option<TlsState>);
}

impl PreAuthIo for TcpStream {
    fn detach(self) -> (TcpStream, Option<TlsState>) {
        (self, None)
    }
}

impl PreAuthIo for PreTls {
    fn detach(self) -> (TcpStream, Option<TlsState>) {
        let (tcp, st) = self.into_parts();
        (tcp, Some(st))
    }
}
