//! Sockets: the listeners and pre-authentication, the hand-off of an authenticated socket
//! to its owner shard, the read and write tasks of a connection, transport framing (TCP
//! length prefix, WebSocket) and TLS.

pub(crate) mod conn;
pub(crate) mod handoff;
pub(crate) mod input;
pub(crate) mod listener;
pub(crate) mod relay;
pub(crate) mod table;
pub mod tls;
pub(crate) mod tls_session;
pub(crate) mod transport;
