//! Requests from the control plane (the HTTP API on its own tokio thread) to the shards.
//!
//! Each shard's mailbox has one extra queue fed by the control plane ([`Mesh`]'s external
//! slot): a request goes to the shard that owns the user it concerns, runs there like any
//! other mail, and answers over a oneshot channel any executor can await. A full queue
//! answers `Busy` at once; the HTTP side turns that into 503.

use std::sync::Arc;

use futures_channel::oneshot;

pub use crate::engine::requests::{ControlError, SessionInfo, SystemMessage, Target};
use crate::engine::{Batch, Uids};
use crate::route::link::Forward;
use crate::route::mailbox::Mesh;
use crate::route::nodes::NodeMap;
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

    /// Hands mail from another node to the owner shards of its recipients. What a full
    /// queue did not take comes back (split per shard), to be offered again.
    pub fn arrive(&self, f: Forward) -> Result<(), Vec<Forward>> {
        let shards = self.mesh.shards();
        let parts = match f {
            Forward::One(d) => vec![(owner_of(d.to, shards), Forward::One(d))],
            Forward::Group(b) => split_batch(b, shards),
        };
        let mut left = Vec::new();
        for (shard, f) in parts {
            let mail = match f {
                Forward::One(d) => Mail::Deliver(d),
                Forward::Group(b) => Mail::Fanout(b),
            };
            if let Err(m) = self.mesh.try_send_external(shard, mail) {
                left.push(match m {
                    Mail::Deliver(d) => Forward::One(d),
                    Mail::Fanout(b) => Forward::Group(b),
                    _ => continue,
                });
            }
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(left)
        }
    }

    /// Tells shard `shard` the cluster's new live set; `false` when its queue is full.
    pub fn set_nodes(&self, shard: usize, map: Arc<NodeMap>) -> bool {
        self.mesh.try_send_external(shard, Mail::Nodes(map)).is_ok()
    }

    /// Tells shard `shard` that the other nodes counted this one dead for a while, so it
    /// closes every session; `false` when its queue is full.
    pub fn evicted(&self, shard: usize) -> bool {
        self.mesh.try_send_external(shard, Mail::Evicted).is_ok()
    }

    /// Shards of this process.
    pub fn shards(&self) -> usize {
        self.mesh.shards()
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

/// A batch from another node, split by owner shard (stored-copy seqs follow their members).
fn split_batch(b: Batch, shards: usize) -> Vec<(usize, Forward)> {
    let mut parts: Vec<(Vec<u32>, Vec<u64>)> = vec![(Vec::new(), Vec::new()); shards];
    for (i, uid) in b.uids.iter().enumerate() {
        let p = &mut parts[owner_of(*uid, shards)];
        p.0.push(*uid);
        if let Some(s) = b.seqs.as_ref().and_then(|s| s.get(i)) {
            p.1.push(*s);
        }
    }
    parts
        .into_iter()
        .enumerate()
        .filter(|(_, (uids, _))| !uids.is_empty())
        .map(|(shard, (uids, seqs))| {
            let seqs = (b.seqs.is_some() && seqs.len() == uids.len()).then_some(seqs);
            let part = Batch {
                accepted: b.accepted,
                frame: b.frame.clone(),
                uids: Uids::Owned(uids),
                seqs,
                exclude: b.exclude,
                hops: b.hops,
            };
            (shard, Forward::Group(part))
        })
        .collect()
}
