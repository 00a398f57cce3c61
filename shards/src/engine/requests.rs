//! What the control plane (the HTTP API) asks of an engine and what it gets back: a
//! server-side send, a user's open sessions, and why a request failed.

use im_protocol::MsgId;

/// One open session of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub session: u64,
    pub transport: &'static str,
    /// The client set the extension flag.
    pub extensions: bool,
}

/// Who gets a server-side message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    User(u32),
    Group(u32),
}

/// A message sent by the server on behalf of `from` (0: the system).
#[derive(Debug, Clone)]
pub struct SystemMessage {
    pub from: u32,
    pub to: Target,
    pub msg_id: MsgId,
    pub payload: Vec<u8>,
}

/// A control request could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("the shard's control queue is full; retry")]
    Busy,
    #[error("the server is shutting down")]
    Gone,
    /// Refused like a client publish, with the PUB_ERR code.
    #[error("refused ({code}): {why}")]
    Refused { code: u32, why: &'static str },
}
