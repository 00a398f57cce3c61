//! Sockets: the listeners and pre-authentication, the hand-off of an authenticated socket
//! to its owner shard, the task of a plain connection and the read and write tasks of a
//! TLS one, the set sleeping connections wait in, transport framing (TCP
//! length prefix, WebSocket) and TLS.

pub(crate) mod conn;
pub(crate) mod handoff;
pub(crate) mod input;
pub(crate) mod listener;
pub(crate) mod plain;
pub(crate) mod relay;
pub(crate) mod sleep;
pub(crate) mod table;
pub mod tls;
pub(crate) mod tls_session;
pub(crate) mod transport;
