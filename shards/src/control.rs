//! Requests from the control plane (the HTTP API on its own tokio thread) to the shards.
//!
//! Each shard's mailbox has one extra queue fed by the control plane ([`Mesh`]'s external
//! slot): a request goes to the shard that owns the user it concerns, runs there like any
//! other mail, and answers over a oneshot channel any executor can await. A full queue
//! answers `Busy` at once; the HTTP side turns that into 503.

use std::sync::Arc;

use futures_channel::oneshot;
use im_protocol::MsgId;

use crate::route::mailbox::Mesh;
use crate::route::routing::owner_of;
use crate::route::Mail;

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

pub(crate) enum Request {
    Ping {
        reply: oneshot::Sender<()>,
    },
    Online {
        uid: u32,
        reply: oneshot::Sender<Vec<SessionInfo>>,
    },
    Send {
        msg: SystemMessage,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
}

/// The control plane's way into the shards. Cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct ControlHandle {
    mesh: Arc<Mesh<Mail>>,
}

impl ControlHandle {
    pub(crate) fn new(mesh: Arc<Mesh<Mail>>) -> Self {
        Self { mesh }
    }

    async fn ask<T>(
        &self,
        shard: usize,
        req: Request,
        rx: oneshot::Receiver<T>,
    ) -> Result<T, ControlError> {
        if self.mesh.shutdown_requested() {
            return Err(ControlError::Gone);
        }
        self.mesh
            .try_send_external(shard, Mail::Control(req))
            .map_err(|_| ControlError::Busy)?;
        rx.await.map_err(|_| ControlError::Gone)
    }

    /// Every shard answers a no-op request (its mailbox loop is alive).
    pub async fn ping_all(&self) -> Result<(), ControlError> {
        for shard in 0..self.mesh.shards() {
            let (reply, rx) = oneshot::channel();
            self.ask(shard, Request::Ping { reply }, rx).await?;
        }
        Ok(())
    }

    /// The open sessions of `uid`.
    pub async fn online(&self, uid: u32) -> Result<Vec<SessionInfo>, ControlError> {
        let (reply, rx) = oneshot::channel();
        let shard = owner_of(uid, self.mesh.shards());
        self.ask(shard, Request::Online { uid, reply }, rx).await
    }

    /// Sends a message as the server, with the guarantees of a client PUBLISH: it returns
    /// once the message is accepted (in `before_ack` mode: stored).
    pub async fn send(&self, msg: SystemMessage) -> Result<(), ControlError> {
        let shards = self.mesh.shards();
        let shard = match msg.to {
            Target::User(uid) => owner_of(uid, shards),
            Target::Group(gid) => gid as usize % shards,
        };
        let (reply, rx) = oneshot::channel();
        self.ask(shard, Request::Send { msg, reply }, rx).await?
    }

    /// Mail waiting in every shard's queues (all sources).
    pub fn mailbox_depth(&self) -> usize {
        self.mesh.depth()
    }

    /// Times a sender found a mailbox full since start.
    pub fn mailbox_full_events(&self) -> u64 {
        self.mesh.full_events()
    }
}
