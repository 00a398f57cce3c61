//! What the application receives: events and messages.

use bytes::Bytes;
use im_protocol::{cmd, MsgId};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::command::Command;
use crate::error::Error;

/// What kind of push a message came as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A 1:1 message (PUBLISH).
    Direct,
    /// A group message (GROUP_PUBLISH) to group `gid`.
    Group {
        /// The group id.
        gid: u32,
    },
    /// A message to some members of group `gid` (GROUP_PART_PUBLISH), with the target list.
    Part {
        /// The group id.
        gid: u32,
        /// The members the sender listed.
        targets: Vec<u32>,
    },
}

impl Kind {
    /// The command that acknowledges this kind of push (4, 6 or 12).
    pub(crate) fn ack_cmd(&self) -> u8 {
        match self {
            Kind::Direct => cmd::PUB_ACK,
            Kind::Group { .. } => cmd::GROUP_PUB_ACK,
            Kind::Part { .. } => cmd::GROUP_PART_PUB_ACK,
        }
    }
}

/// The JSON envelope the server wraps around a payload (`delivery.envelope = "json"`, the
/// default): `{"from":"42","to":"43","role":"0","content":"hi"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Envelope {
    /// The sender's uid as the server asserts it; `"0"` for server-side sends.
    pub from: String,
    /// The recipient uid (1:1) or the group id.
    pub to: String,
    /// The sender's CONNECT role.
    pub role: String,
    /// The sender's payload as text.
    pub content: String,
}

/// A message pushed by the server.
#[derive(Debug)]
pub struct Message {
    /// The sender's message id (32 bytes; 32 hex characters from most clients).
    pub id: MsgId,
    /// 1:1, group or part group.
    pub kind: Kind,
    /// The payload as pushed: the JSON envelope by default, the sender's bytes in `raw`
    /// envelope mode.
    pub payload: Bytes,
    pub(crate) acker: Option<mpsc::UnboundedSender<Command>>,
}

impl Message {
    /// The payload's JSON envelope, if it has one.
    pub fn envelope(&self) -> Option<Envelope> {
        serde_json::from_slice(&self.payload).ok()
    }

    /// The sender's uid from the envelope.
    pub fn sender(&self) -> Option<u32> {
        self.envelope()?.from.parse().ok()
    }

    /// The sender's text from the envelope, or the payload as text (raw mode).
    pub fn text(&self) -> String {
        match self.envelope() {
            Some(e) => e.content,
            None => String::from_utf8_lossy(&self.payload).into_owned(),
        }
    }

    /// The message id as text (32 hex characters from this library and most clients).
    pub fn id_str(&self) -> String {
        String::from_utf8_lossy(&self.id).into_owned()
    }

    /// Acknowledges the message to the server (manual acks; a no-op under
    /// [`AckMode::Auto`](crate::AckMode::Auto), which acknowledged it already). After a
    /// reconnect the acknowledgement goes to the new session, which holds the same message.
    pub fn ack(&self) {
        if let Some(tx) = &self.acker {
            // A stopped client has nobody to tell; the server keeps the message.
            let _ = tx.send(Command::Ack {
                id: self.id,
                ack_cmd: self.kind.ack_cmd(),
            });
        }
    }
}

/// What happens to the client, in order.
#[derive(Debug)]
pub enum Event {
    /// A session was (re-)established; `reconnect` is false for the first one.
    Connected {
        /// False for the first session.
        reconnect: bool,
    },
    /// A message for this user.
    Message(Message),
    /// The connection was lost; the client reconnects by itself.
    Disconnected {
        /// What happened, for logs.
        reason: String,
    },
    /// The server logged this session out because the same user logged in elsewhere
    /// (LOGOUT). The client has stopped and does not reconnect: that would log the other
    /// device out in turn.
    LoggedOut,
    /// The client stopped for good: closed by the application, or a reconnect was refused
    /// for bad credentials (`Some(error)`). No event follows.
    Stopped(Option<Error>),
}
