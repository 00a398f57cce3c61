//! Requests from the control plane (the HTTP API on its own tokio thread) to the shards.
//!
//! Each shard's mailbox has one extra queue fed by the control plane ([`Mesh`]'s external
//! slot): a request goes to the shard that owns the user it concerns, runs there like any
//! other mail, and answers over a oneshot channel any executor can await. A full queue
//! answers `Busy` at once; the HTTP side turns that into 503.

use std::sync::Arc;

use futures_channel::oneshot;

pub use crate::engine::requests::{ControlError, SessionInfo, SystemMessage, Target};
use crate::route::mailbox::Mesh;
use crate::route::routing::owner_of;
use crate::route::{Mail, Request};

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
