//! What can go wrong: connecting, and sending one message.

use thiserror::Error;

/// Connecting, configuring or running a client.
#[derive(Debug, Error)]
pub enum Error {
    /// The endpoint string is not `tcp://`, `tls://`, `ws://` or `wss://` with a host and
    /// port.
    #[error("invalid endpoint {0:?}: expected tcp://HOST:PORT, tls://HOST:PORT, ws://HOST:PORT/PATH or wss://HOST:PORT/PATH")]
    Endpoint(String),
    /// TCP, TLS or the WebSocket upgrade failed.
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The server answered CONNECT with a code other than 0 (1 already connected under the
    /// `reject` policy, 3 bad credentials, 4 cannot check credentials now, 5 too many
    /// failed logins).
    #[error("login refused with CONNECT_ACK code {0}")]
    Refused(u8),
    /// No CONNECT_ACK within the connect timeout.
    #[error("no answer to CONNECT within the connect timeout")]
    Timeout,
    /// The server sent something that is not a valid packet.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Why a message was not accepted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The server refused it with a PUB_ERR code (500, 1001, 1101, 1201, 1203: see the
    /// protocol document). A corrected retry may reuse the id.
    #[error("refused by the server with code {0}")]
    Refused(u32),
    /// The client stopped ([`Client::close`](crate::Client::close), a logout by another
    /// login, or bad credentials on reconnect) before the server acknowledged it: it may or
    /// may not have been delivered.
    #[error("the client stopped before the server acknowledged the message")]
    Stopped,
    /// A part publish with no target or more than 65,535 targets, or a payload over 65,535
    /// bytes.
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}
