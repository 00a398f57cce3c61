//! An authenticated connection on its way to the owner shard of its user: the socket (as a
//! plain file descriptor, detached from the accepting shard's driver), the transport state
//! and any bytes the client already sent after CONNECT.

use std::os::fd::OwnedFd;

use crate::transport::Framing;

pub(crate) struct Handoff {
    pub fd: OwnedFd,
    pub framing: Framing,
    /// Bytes received after the CONNECT packet, not yet parsed.
    pub leftover: Vec<u8>,
    pub uid: u32,
    pub role: u8,
    pub flags: u8,
}
