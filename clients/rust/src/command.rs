//! What the [`Client`](crate::Client) handle and [`Message::ack`](crate::Message::ack) send
//! to the session task.

use bytes::Bytes;
use im_protocol::MsgId;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::error::SendError;

/// One request to the session task.
pub(crate) enum Command {
    Publish {
        id: MsgId,
        frame: Bytes,
        reply: oneshot::Sender<Result<MsgId, SendError>>,
        permit: OwnedSemaphorePermit,
    },
    Ack {
        id: MsgId,
        ack_cmd: u8,
    },
    Close {
        done: Option<oneshot::Sender<()>>,
    },
}
