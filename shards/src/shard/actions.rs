//! Carrying out the engine's actions: writes, mail to other shards, storage operations and
//! their answers as events, group look-ups, replies to the control plane, forwards to other
//! nodes of a cluster.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use im_storage::{now_ms, OfflineMessage};

use super::Shard;
use crate::engine::{Action, Event, Failed, Forward};
use crate::route::Mail;
use crate::stats::Msg;

impl Shard {
    pub(super) fn execute(self: &Rc<Self>, a: Action) {
        match a {
            Action::Write { conn, out } => self.conns.borrow_mut().push(conn, out),
            Action::Deliver { shard, d } => self.mail(shard, Mail::Deliver(d)),
            Action::Fanout { shard, b } => self.mail(shard, Mail::Fanout(b)),
            Action::Append { token, msgs } => {
                // Enqueued now (not when first polled), so storage sees our order.
                let done = self.store.append(self.offline(msgs));
                let me = self.clone();
                monoio::spawn(async move {
                    let result = done.await.map_err(|e| {
                        tracing::error!(error = %e, "storage write failed");
                        Failed
                    });
                    me.dispatch(Event::Appended { token, result });
                });
            }
            Action::Store { msgs } => self.store.append_detached(self.offline(msgs)),
            Action::Remove { uid, seqs } => self.store.remove(uid, seqs),
            Action::Fetch {
                token,
                uid,
                after,
                limit,
            } => {
                let done = self.store.fetch(uid, after, limit);
                let me = self.clone();
                monoio::spawn(async move {
                    let result = done.await.map_err(|e| {
                        tracing::error!(uid, error = %e, "offline fetch failed");
                        Failed
                    });
                    me.dispatch(Event::Fetched { token, result });
                });
            }
            Action::Resolve { token, gid } => {
                if let Some(m) = self.groups.cached(gid) {
                    self.ready.borrow_mut().push_back(Event::Resolved {
                        token,
                        result: Ok(m),
                    });
                    return;
                }
                let me = self.clone();
                let groups = self.groups.clone();
                monoio::spawn(async move {
                    let result = groups.members(gid).await.map_err(|e| {
                        tracing::warn!(gid, error = %e, "group lookup failed");
                        Failed
                    });
                    me.dispatch(Event::Resolved { token, result });
                });
            }
            Action::Replied { reply, result } => {
                if let Some(tx) = self.replies.borrow_mut().remove(&reply) {
                    let _ = tx.send(result);
                }
            }
            Action::Resume { conn } => self.conns.borrow_mut().wake_reader(conn),
            Action::Forward { node, f } => self.forward(&node, f),
        }
    }

    /// Hands `f` to the cluster link; what cannot be queued is stored offline (the
    /// recipient's home drains it at the next login), unless a stored copy exists already.
    fn forward(&self, node: &Arc<str>, f: Forward) {
        let Some(link) = &self.cluster else {
            return;
        };
        let Err(f) = link.forward(node, f) else {
            return;
        };
        tracing::warn!(node = %node, "cannot forward to this node now; storing offline");
        let msgs = match f {
            Forward::One(d) if d.seq.is_none() => vec![(d.to, d.frame)],
            Forward::One(_) => Vec::new(),
            Forward::Group(b) if b.seqs.is_none() => {
                b.uids.iter().map(|u| (*u, b.frame.clone())).collect()
            }
            Forward::Group(_) => Vec::new(),
        };
        if !msgs.is_empty() {
            self.stats.message(Msg::StoredOffline, msgs.len() as u64);
            self.store.append_detached(self.offline(msgs));
        }
    }

    /// Stored copies with their expiry.
    fn offline(&self, msgs: Vec<(u32, Bytes)>) -> Vec<OfflineMessage> {
        let expires_at_ms =
            now_ms().saturating_add(self.cfg.delivery.retention_days * 24 * 3600 * 1000);
        msgs.into_iter()
            .map(|(uid, frame)| OfflineMessage {
                uid,
                frame,
                expires_at_ms,
            })
            .collect()
    }
}
