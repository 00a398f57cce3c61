//! Wire codec of the seed binary IM protocol (`docs/protocol.md`), shared by the server, the load
//! generator, the tests and the fuzz targets.
//!
//! Nothing here does I/O. Decoders take a byte slice and say one of three things: here is a
//! complete item (and how many bytes it used), more bytes are needed (`Ok(None)` or
//! [`DecodeError::Incomplete`]), or the bytes are invalid. Encoders write into a buffer the
//! caller owns and can say their exact size beforehand.
//!
//! - [`packet`]: every packet of the protocol, in both directions.
//! - [`framing`]: the TCP transport's 4-byte big-endian length prefix.
//! - [`ws`]: the WebSocket transport (RFC 6455 frames and the upgrade handshake).

pub mod error;
pub mod framing;
pub mod packet;
pub mod ws;

pub use error::{DecodeError, FrameError};
pub use packet::{cmd, ClientPacket, MsgId, ServerPacket, Targets};
