//! Committing accepted publishes: per the persistence mode, store first (`before_ack`: one
//! storage write for the 1:1 messages of a read, one per group message) or not
//! (`on_failure`), then ack the sender and route each message to its owner shard.
//!
//! A group message first needs its membership (the driver resolves it, cached), then the
//! checks, then the stored copies. Commits of one connection run strictly in order (a
//! queue per connection; the connection reads no more input until its queue is empty),
//! so acks and deliveries keep the order the client sent. A server-side send from the
//! control plane is a queue of its own, answered with [`Action::Replied`].

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use im_protocol::packet::pub_err as code;
use im_protocol::{MsgId, ServerPacket};

use super::dedupe::Seen;
use super::envelope;
use super::requests::{ControlError, SystemMessage, Target};
use super::{Action, Batch, ConnId, Delivery, Engine, Failed, Members, Token, Uids, Waiter};
use crate::config::Persist;
use crate::stats::Msg;

/// A publish that passed validation, waiting for its read to end.
#[derive(Debug)]
pub(crate) enum Accepted {
    Direct {
        to: u32,
        msg_id: MsgId,
        frame: Bytes,
    },
    Group {
        gid: u32,
        msg_id: MsgId,
        frame: Bytes,
        /// GROUP_PART_PUBLISH: the listed uids, ascending, once each.
        targets: Option<Vec<u32>>,
    },
}

/// Whose commits a queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum QueueKey {
    Conn(ConnId),
    /// A server-side send, named by its reply token.
    System(Token),
}

/// Who sent what is being committed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    pub uid: u32,
    /// The sending session: it gets no copy and the sender must be a member. `None` for a
    /// server-side send: no membership needed, and the sender's own sessions (if it is a
    /// member) receive it like everyone else's.
    pub session: Option<ConnId>,
}

/// Commits in order for one origin.
#[derive(Debug)]
pub(crate) struct CommitQueue {
    origin: Origin,
    items: VecDeque<Commit>,
}

impl CommitQueue {
    pub fn len(&self) -> usize {
        self.items.len()
    }
}

#[derive(Debug)]
pub(crate) enum Commit {
    /// The 1:1 messages of one read; `storing` once their write was asked for.
    Direct {
        msgs: Vec<(u32, MsgId, Bytes)>,
        storing: bool,
    },
    Group {
        gid: u32,
        msg_id: MsgId,
        frame: Bytes,
        targets: Option<Vec<u32>>,
        stage: GroupStage,
    },
}

#[derive(Debug)]
pub(crate) enum GroupStage {
    Start,
    /// Waiting for the membership.
    Members,
    /// Waiting for the stored copies of these per-shard recipient lists.
    Storing {
        parts: Vec<Uids>,
        to_sender: bool,
    },
}

/// What a waiting commit is woken with.
enum Reply {
    Start,
    Appended(Result<Vec<u64>, Failed>),
    Resolved(Result<Arc<Members>, Failed>),
}

pub(crate) fn group_ack(part: bool, msg_id: &MsgId) -> ServerPacket<'_> {
    if part {
        ServerPacket::GroupPartPubAck { msg_id }
    } else {
        ServerPacket::GroupPubAck { msg_id }
    }
}

impl Engine {
    /// Queues the publishes of one read for commit.
    pub(super) fn start_commits(&mut self, conn: ConnId, uid: u32, accepted: Vec<Accepted>) {
        let key = QueueKey::Conn(conn);
        let origin = Origin {
            uid,
            session: Some(conn),
        };
        // The common case commits at once: 1:1 messages in `on_failure` mode with nothing
        // of this connection still being committed. No queue, nothing to wait for.
        if self.cfg.delivery.persist == Persist::OnFailure
            && !self.commits.contains_key(&key)
            && accepted
                .iter()
                .all(|a| matches!(a, Accepted::Direct { .. }))
        {
            let msgs: Vec<(u32, MsgId, Bytes)> = accepted
                .into_iter()
                .filter_map(|a| match a {
                    Accepted::Direct { to, msg_id, frame } => Some((to, msg_id, frame)),
                    Accepted::Group { .. } => None,
                })
                .collect();
            return self.ack_and_route(key, origin, msgs, None);
        }
        let mut direct = Vec::new();
        let mut items = VecDeque::new();
        for a in accepted {
            match a {
                Accepted::Direct { to, msg_id, frame } => direct.push((to, msg_id, frame)),
                Accepted::Group {
                    gid,
                    msg_id,
                    frame,
                    targets,
                } => items.push_back(Commit::Group {
                    gid,
                    msg_id,
                    frame,
                    targets,
                    stage: GroupStage::Start,
                }),
            }
        }
        if !direct.is_empty() {
            items.push_front(Commit::Direct {
                msgs: direct,
                storing: false,
            });
        }
        let q = self.commits.entry(key).or_insert_with(|| CommitQueue {
            origin,
            items: VecDeque::new(),
        });
        let idle = q.items.is_empty();
        q.items.extend(items);
        if idle {
            self.advance(key, Reply::Start);
        }
    }

    /// A server-side send: deduped like a client publish, then committed the same way.
    pub(super) fn system_send(&mut self, msg: SystemMessage, reply: Token) {
        // A retried request (same sender and msgID within the dedupe window) is accepted
        // again but not delivered again. Requests for one recipient (or group) always land
        // on the same shard, so its window sees every retry.
        let (from, id) = (msg.from, msg.msg_id);
        let result = match self.dedupe.admit(from, &id, self.now, true) {
            Seen::First => None,
            Seen::Committed => Some(Ok(())),
            // The first request is still being committed: its outcome is not known yet.
            Seen::Committing => Some(Err(ControlError::Busy)),
        };
        if let Some(result) = result {
            return self.out.push(Action::Replied { reply, result });
        }
        let mode = self.cfg.delivery.envelope;
        let commit = match msg.to {
            Target::User(0) => Err((code::USER_NOT_FOUND, "uid 0 is not a user")),
            Target::User(to) => envelope::push_frame(mode, from, to, 0, &id, &msg.payload)
                .map(|frame| Commit::Direct {
                    msgs: vec![(to, id, frame)],
                    storing: false,
                })
                .map_err(|_| (code::ARGS, "payload too large")),
            Target::Group(gid) => {
                envelope::group_frame(mode, from, gid, 0, &id, &msg.payload, None)
                    .map(|frame| Commit::Group {
                        gid,
                        msg_id: id,
                        frame,
                        targets: None,
                        stage: GroupStage::Start,
                    })
                    .map_err(|_| (code::ARGS, "payload too large"))
            }
        };
        let origin = Origin {
            uid: from,
            session: None,
        };
        match commit {
            Ok(c) => {
                let key = QueueKey::System(reply);
                self.commits.insert(
                    key,
                    CommitQueue {
                        origin,
                        items: VecDeque::from([c]),
                    },
                );
                self.advance(key, Reply::Start);
            }
            Err((code, why)) => self.refuse_from(origin, QueueKey::System(reply), &id, code, why),
        }
    }

    pub(super) fn on_appended(&mut self, token: Token, result: Result<Vec<u64>, Failed>) {
        if let Some(Waiter::Commit(key)) = self.waiting.remove(&token) {
            self.advance(key, Reply::Appended(result));
        }
    }

    pub(super) fn on_resolved(&mut self, token: Token, result: Result<Arc<Members>, Failed>) {
        if let Some(Waiter::Commit(key)) = self.waiting.remove(&token) {
            self.advance(key, Reply::Resolved(result));
        }
    }

    /// Runs the queue's commits until one waits or the queue is empty.
    fn advance(&mut self, key: QueueKey, mut reply: Reply) {
        loop {
            let Some(q) = self.commits.get_mut(&key) else {
                return;
            };
            let origin = q.origin;
            let Some(c) = q.items.pop_front() else {
                self.commits.remove(&key);
                if let QueueKey::Conn(conn) = key {
                    self.out.push(Action::Resume { conn });
                    self.close_if_stopped(conn);
                }
                return;
            };
            if let Some(waiting) = self.step(key, origin, c, reply) {
                if let Some(q) = self.commits.get_mut(&key) {
                    q.items.push_front(waiting);
                }
                return;
            }
            reply = Reply::Start;
        }
    }

    /// Moves one commit on; gives it back when it must wait for a reply.
    fn step(&mut self, key: QueueKey, origin: Origin, c: Commit, reply: Reply) -> Option<Commit> {
        match c {
            Commit::Direct {
                msgs,
                storing: false,
            } => match self.cfg.delivery.persist {
                Persist::OnFailure => {
                    self.ack_and_route(key, origin, msgs, None);
                    None
                }
                Persist::BeforeAck => {
                    let token = self.token(Waiter::Commit(key));
                    let copies = msgs.iter().map(|(to, _, f)| (*to, f.clone())).collect();
                    self.out.push(Action::Append {
                        token,
                        msgs: copies,
                    });
                    Some(Commit::Direct {
                        msgs,
                        storing: true,
                    })
                }
            },
            Commit::Direct {
                msgs,
                storing: true,
            } => match reply {
                Reply::Appended(Ok(seqs)) if seqs.len() == msgs.len() => {
                    self.ack_and_route(key, origin, msgs, Some(seqs));
                    None
                }
                Reply::Appended(_) => {
                    tracing::error!(n = msgs.len(), "cannot store messages; refusing them");
                    for (_, id, _) in &msgs {
                        self.refuse_from(
                            origin,
                            key,
                            id,
                            code::SERVER_INTERNAL,
                            "storage unavailable",
                        );
                    }
                    None
                }
                _ => Some(Commit::Direct {
                    msgs,
                    storing: true,
                }),
            },
            Commit::Group {
                gid,
                msg_id,
                frame,
                targets,
                stage,
            } => self.step_group(key, origin, gid, msg_id, frame, targets, stage, reply),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn step_group(
        &mut self,
        key: QueueKey,
        origin: Origin,
        gid: u32,
        msg_id: MsgId,
        frame: Bytes,
        targets: Option<Vec<u32>>,
        stage: GroupStage,
        reply: Reply,
    ) -> Option<Commit> {
        let waiting = |stage| {
            Some(Commit::Group {
                gid,
                msg_id,
                frame: frame.clone(),
                targets: targets.clone(),
                stage,
            })
        };
        match (stage, reply) {
            (GroupStage::Start, _) => {
                let token = self.token(Waiter::Commit(key));
                self.out.push(Action::Resolve { token, gid });
                waiting(GroupStage::Members)
            }
            (GroupStage::Members, Reply::Resolved(Err(Failed))) => {
                tracing::warn!(gid, "group lookup failed; refusing");
                self.refuse_from(
                    origin,
                    key,
                    &msg_id,
                    code::SERVER_INTERNAL,
                    "group store unavailable",
                );
                None
            }
            (GroupStage::Members, Reply::Resolved(Ok(members))) => {
                let (parts, to_sender) =
                    match self.check_group(origin, &members, targets.as_deref()) {
                        Ok(x) => x,
                        Err((code, why)) => {
                            self.refuse_from(origin, key, &msg_id, code, why);
                            return None;
                        }
                    };
                self.stats
                    .group_message(targets.as_ref().map_or(members.sorted.len(), Vec::len));
                match self.cfg.delivery.persist {
                    Persist::OnFailure => {
                        let seqs = vec![None; parts.len()];
                        self.ack_group(key, origin, &msg_id, targets.is_some());
                        self.route_group(origin, frame, parts, seqs, to_sender);
                        None
                    }
                    Persist::BeforeAck => {
                        // Only a sending session's user is handled apart (its other
                        // sessions, never stored).
                        let skip = origin.session.map(|_| origin.uid);
                        let parts: Vec<Uids> = parts
                            .into_iter()
                            .map(|p| {
                                Uids::Owned(
                                    p.iter().copied().filter(|u| Some(*u) != skip).collect(),
                                )
                            })
                            .collect();
                        let copies = parts
                            .iter()
                            .flat_map(|p| p.iter())
                            .map(|&uid| (uid, frame.clone()))
                            .collect();
                        let token = self.token(Waiter::Commit(key));
                        self.out.push(Action::Append {
                            token,
                            msgs: copies,
                        });
                        waiting(GroupStage::Storing { parts, to_sender })
                    }
                }
            }
            (GroupStage::Storing { parts, to_sender }, Reply::Appended(Ok(all)))
                if all.len() == parts.iter().map(|p| p.len()).sum::<usize>() =>
            {
                let mut all = all.into_iter();
                let seqs = parts
                    .iter()
                    .map(|p| Some(all.by_ref().take(p.len()).collect()))
                    .collect();
                self.ack_group(key, origin, &msg_id, targets.is_some());
                self.route_group(origin, frame, parts, seqs, to_sender);
                None
            }
            (GroupStage::Storing { .. }, Reply::Appended(_)) => {
                tracing::error!(gid, "cannot store group message; refusing it");
                self.refuse_from(
                    origin,
                    key,
                    &msg_id,
                    code::SERVER_INTERNAL,
                    "storage unavailable",
                );
                None
            }
            (stage, _) => waiting(stage),
        }
    }

    /// Membership checks; the recipients split by owner shard, and whether the sender's
    /// other sessions get a copy.
    fn check_group(
        &self,
        origin: Origin,
        members: &Members,
        targets: Option<&[u32]>,
    ) -> Result<(Vec<Uids>, bool), (u32, &'static str)> {
        if members.sorted.is_empty() {
            return Err((code::GROUP_NOT_FOUND, "group not found"));
        }
        if origin.session.is_some() && !members.contains(origin.uid) {
            return Err((code::NOT_IN_GROUP, "sender not in group"));
        }
        let parts = match targets {
            Some(t) => {
                if !t.iter().all(|u| members.contains(*u)) {
                    return Err((code::NOT_IN_GROUP, "target not in group"));
                }
                super::members::split(t, self.shards)
                    .into_iter()
                    .map(Uids::Owned)
                    .collect()
            }
            None => members.by_shard.iter().cloned().map(Uids::Shared).collect(),
        };
        let to_sender = origin.session.is_some()
            && targets.is_none_or(|t| t.binary_search(&origin.uid).is_ok());
        Ok((parts, to_sender))
    }

    fn ack_and_route(
        &mut self,
        key: QueueKey,
        origin: Origin,
        msgs: Vec<(u32, MsgId, Bytes)>,
        // The stored copies' sequence numbers (`before_ack`), aligned with `msgs`.
        seqs: Option<Vec<u64>>,
    ) {
        self.stats.message(Msg::Accepted, msgs.len() as u64);
        let mut seqs = seqs.map(Vec::into_iter);
        for (to, msg_id, frame) in msgs {
            let seq = seqs.as_mut().and_then(Iterator::next);
            self.dedupe.committed(origin.uid, &msg_id);
            match origin.session {
                Some(conn) => self.send_packet(conn, &ServerPacket::PubAck { msg_id: &msg_id }),
                None => self.reply_ok(key),
            }
            self.route(Delivery {
                to,
                accepted: self.now,
                frame,
                seq,
                hops: 0,
            });
        }
    }

    fn ack_group(&mut self, key: QueueKey, origin: Origin, msg_id: &MsgId, part: bool) {
        self.stats.message(Msg::Accepted, 1);
        self.dedupe.committed(origin.uid, msg_id);
        match origin.session {
            Some(conn) => self.send_packet(conn, &group_ack(part, msg_id)),
            None => self.reply_ok(key),
        }
    }

    fn reply_ok(&mut self, key: QueueKey) {
        if let QueueKey::System(reply) = key {
            self.out.push(Action::Replied {
                reply,
                result: Ok(()),
            });
        }
    }

    /// Pushes to the sender's other sessions and sends each owner shard its batch.
    fn route_group(
        &mut self,
        origin: Origin,
        frame: Bytes,
        parts: Vec<Uids>,
        seqs: Vec<Option<Vec<u64>>>,
        to_sender: bool,
    ) {
        if let (true, Some(conn)) = (to_sender, origin.session) {
            self.deliver_except(origin.uid, frame.clone(), conn);
        }
        let exclude = if origin.session.is_some() {
            origin.uid
        } else {
            0
        };
        for (i, (uids, seqs)) in parts.into_iter().zip(seqs).enumerate() {
            if uids.is_empty() {
                continue;
            }
            let b = Batch {
                accepted: self.now,
                frame: frame.clone(),
                uids,
                seqs,
                exclude,
                hops: 0,
            };
            if i == self.id {
                self.enqueue_fanout(b);
            } else {
                self.out.push(Action::Fanout { shard: i, b });
            }
        }
    }

    /// A refused publish: forgotten by dedupe (a retry must go through), PUB_ERR to a
    /// session that asked for extensions, an error to a server-side send.
    fn refuse_from(
        &mut self,
        origin: Origin,
        key: QueueKey,
        msg_id: &MsgId,
        code: u32,
        why: &'static str,
    ) {
        self.dedupe.forget(origin.uid, msg_id);
        match (origin.session, key) {
            (Some(conn), _) => self.refuse(conn, msg_id, code, why),
            (None, QueueKey::System(reply)) => {
                self.stats.refused(code);
                self.out.push(Action::Replied {
                    reply,
                    result: Err(ControlError::Refused { code, why }),
                });
            }
            (None, QueueKey::Conn(_)) => self.stats.refused(code),
        }
    }

    /// Ends a session told to stop once none of its publishes is being committed.
    pub(super) fn close_if_stopped(&mut self, conn: ConnId) {
        let Some(reason) = self.sessions.get(&conn).and_then(|s| s.stop) else {
            return;
        };
        if !self.commits.contains_key(&QueueKey::Conn(conn)) {
            self.close(conn, reason);
        }
    }
}
