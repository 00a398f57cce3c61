//! What the simulated world does with an engine's actions (writes to clients, mail to other
//! shards, store operations, group look-ups) and with the jobs it scheduled for later (mail
//! arriving, store operations and their answers).

use super::*;

impl World {
    pub(super) fn carry_out(&mut self, shard: usize, a: Action) -> Result<(), String> {
        match a {
            Action::Write { conn, out } => {
                self.emit += 1;
                let e = self.emit;
                if tracing() {
                    if let Some(id) = out.packet().and_then(push_msg_id) {
                        eprintln!(
                            "t={} conn {conn} <- {:?} (emit {e})",
                            self.now.0,
                            ledger::parse(id)
                        );
                    }
                }
                let interval = self.cfg.delivery.redelivery_interval_ms;
                if let Some(c) = self.conns.get_mut(&(shard, conn)) {
                    if c.closing {
                        return Err(format!("write to conn {conn} after its close"));
                    }
                    // Redelivery is spaced by the interval: a copy sooner is a second push.
                    let now = self.now;
                    if let Some(id) = out.packet().and_then(push_msg_id) {
                        if let Some(prev) = c.pushed_at.insert(*id, now) {
                            if prev.plus_ms(interval) > now {
                                return Err(format!(
                                    "conn {conn}: {:?} pushed again {} ms after the last copy (interval {interval} ms)",
                                    ledger::parse(id),
                                    now.micros_since(prev) / 1000
                                ));
                            }
                        }
                    }
                    c.closing = out == Out::Close;
                    c.wire.push_back((e, out));
                }
            }
            Action::Deliver { shard: to, d } => self.mail(shard, to, Mail::Deliver(d)),
            Action::Fanout { shard: to, b } => self.mail(shard, to, Mail::Fanout(b)),
            Action::Append { token, msgs } => {
                trace_frames(self.now, shard, "appends", &msgs);
                let fail = self.rng.chance(self.setup.store_fail);
                self.store_op(StoreOp::Append {
                    shard,
                    token: Some(token),
                    msgs,
                    fail,
                });
            }
            Action::Store { msgs } => {
                trace_frames(self.now, shard, "stores", &msgs);
                self.store_op(StoreOp::Append {
                    shard,
                    token: None,
                    msgs,
                    fail: false,
                })
            }
            Action::Remove { uid, seqs } => {
                if tracing() {
                    eprintln!(
                        "t={} shard {shard} removes {seqs:?} for user {uid}",
                        self.now.0
                    );
                }
                self.store_op(StoreOp::Remove { uid, seqs })
            }
            Action::Fetch {
                token,
                uid,
                after,
                limit,
            } => {
                let fail = self.rng.chance(self.setup.store_fail);
                self.store_op(StoreOp::Fetch {
                    shard,
                    token,
                    uid,
                    after,
                    limit,
                    fail,
                });
            }
            Action::Resolve { token, gid } => {
                let at = self.latency(10);
                let fail = self.rng.chance(self.setup.store_fail);
                self.schedule(
                    at,
                    Job::Resolve {
                        shard,
                        token,
                        gid,
                        fail,
                    },
                );
            }
            Action::Replied { reply, result } => {
                if result.is_ok() {
                    self.ledger
                        .server_acked(&ledger::msg_id(ledger::SYSTEM, 0, reply, 0));
                }
            }
            Action::Resume { .. } => {}
            // The simulated world is one node: its engines never learn of other nodes.
            Action::Forward { node, .. } => {
                return Err(format!(
                    "shard {shard} forwarded to node {node} outside a cluster"
                ))
            }
        }
        Ok(())
    }

    pub(super) fn run_job(&mut self, job: Job) -> Result<(), String> {
        match job {
            Job::Mail { to, mail } => match mail {
                Mail::Deliver(d) => self.feed(to, Event::Deliver(d)),
                Mail::Fanout(b) => self.feed(to, Event::Fanout(b)),
            },
            Job::Resolve {
                shard,
                token,
                gid,
                fail,
            } => {
                let result = if fail {
                    Err(Failed)
                } else {
                    let m = self.groups.get(&gid).cloned().unwrap_or_default();
                    Ok(Arc::new(Members::new(m, self.setup.shards)))
                };
                self.feed(shard, Event::Resolved { token, result })
            }
            Job::Store(StoreOp::Append {
                shard,
                token,
                msgs,
                fail,
            }) => {
                let result = if fail {
                    Err(Failed)
                } else {
                    let mut seqs = Vec::with_capacity(msgs.len());
                    for (uid, frame) in msgs {
                        if tracing() {
                            if let Some(id) = push_msg_id(&frame) {
                                eprintln!(
                                    "t={} stored seq {} = {:?} for user {uid}",
                                    self.now.0,
                                    self.next_seq,
                                    ledger::parse(id)
                                );
                            }
                        }
                        let seq = self.next_seq;
                        self.next_seq += 1;
                        self.store.entry(uid).or_default().insert(seq, frame);
                        seqs.push(seq);
                    }
                    Ok(seqs)
                };
                match token {
                    Some(token) => self.feed(shard, Event::Appended { token, result }),
                    None => Ok(()),
                }
            }
            Job::Store(StoreOp::Remove { uid, seqs }) => {
                if tracing() {
                    eprintln!("t={} applied remove {seqs:?} for user {uid}", self.now.0);
                }
                if let Some(m) = self.store.get_mut(&uid) {
                    for s in seqs {
                        m.remove(&s);
                    }
                }
                Ok(())
            }
            Job::Store(StoreOp::Fetch {
                shard,
                token,
                uid,
                after,
                limit,
                fail,
            }) => {
                if tracing() {
                    eprintln!(
                        "t={} applied fetch for user {uid} after {after} (fail {fail})",
                        self.now.0
                    );
                }
                let result = if fail {
                    Err(Failed)
                } else {
                    Ok(self
                        .store
                        .get(&uid)
                        .map(|m| {
                            m.range(after + 1..)
                                .take(limit)
                                .map(|(seq, frame)| StoredMessage {
                                    seq: *seq,
                                    frame: frame.clone(),
                                })
                                .collect()
                        })
                        .unwrap_or_default())
                };
                self.feed(shard, Event::Fetched { token, result })
            }
        }
    }
}
