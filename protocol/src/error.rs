//! Errors of the codec. Wire errors only: they say what is wrong with the bytes, never what
//! the server decided to do about it.

use thiserror::Error;

/// Why a packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The buffer ends before the packet does. On a framed transport (every transport of
    /// this protocol) a complete frame holding an incomplete packet is a truncated packet.
    #[error("truncated packet: {needed} more byte(s) needed")]
    Incomplete { needed: usize },
    /// The packet is empty (a frame of length zero has no command byte).
    #[error("empty packet")]
    Empty,
    /// The command byte is not one this direction of the protocol carries.
    #[error("unknown command {0}")]
    UnknownCommand(u8),
    /// Bytes left over after a complete packet.
    #[error("{extra} trailing byte(s) after command {cmd}")]
    TrailingBytes { cmd: u8, extra: usize },
}

/// Why a transport frame (TCP length prefix or WebSocket frame) is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The announced frame length is above the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: u64, max: usize },
    /// A WebSocket frame breaks RFC 6455 (reserved bits, unmasked client frame, ...).
    #[error("websocket protocol error: {0}")]
    WebSocket(&'static str),
    /// The WebSocket upgrade request is not one we accept.
    #[error("bad websocket handshake: {0}")]
    Handshake(&'static str),
}
