//! An authenticated connection on its way to the owner shard of its user: the socket (as a
//! plain file descriptor, detached from the accepting shard's driver), the transport state
//! and any bytes the client already sent after CONNECT (for TLS, also the TLS session and
//! the ciphertext not yet decrypted).

use std::os::fd::OwnedFd;

use crate::net::tls::TlsState;
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
