//! The clients of the simulated world: logins, publishes, retransmissions, reading and
//! acking what the server wrote, disconnects, server-side sends, and the clients' view of
//! the invariants (no push after its ack, redelivery bounds, per-sender order).

use im_protocol::packet::{cmd, push_msg_id};
use im_protocol::{ClientPacket, MsgId, ServerPacket, Targets};
use im_shards::control::{SystemMessage, Target};
use im_shards::engine::CloseReason;
use im_shards::owner_of;

use super::*;

impl World {
    pub(super) fn live_conns(&self) -> Vec<(usize, ConnId)> {
        let mut v: Vec<_> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.gone && !c.closing)
            .map(|(k, _)| *k)
            .collect();
        v.sort_unstable();
        v
    }

    pub(super) fn connect(&mut self, uid: u32) -> Result<(), String> {
        let shard = owner_of(uid, self.setup.shards);
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            (shard, conn),
            Conn {
                uid,
                wire: VecDeque::new(),
                closing: false,
                gone: false,
                slow: false,
                to_ack: Vec::new(),
                receipts: HashMap::new(),
                pushed_at: HashMap::new(),
                order: HashMap::new(),
                acked_here: HashMap::new(),
            },
        );
        self.feed(
            shard,
            Event::Open {
                conn,
                uid,
                role: 1,
                ext: true,
                kind: im_shards::engine::TransportKind::Tcp,
            },
        )
    }

    /// The client sends these packets in one read (if the server reads it now).
    pub(super) fn send(&mut self, key: (usize, ConnId), packets: &[Vec<u8>]) -> Result<(), String> {
        let (shard, conn) = key;
        if !self.engines[shard].is_open(conn) || !self.engines[shard].may_read(conn) {
            return Ok(()); // not read (yet): the client's bytes wait, as on a socket
        }
        for p in packets {
            self.feed(shard, Event::Packet { conn, bytes: p })?;
        }
        self.feed(shard, Event::ReadDone { conn, stop: None })
    }

    pub(super) fn next_counter(&mut self, uid: u32) -> u64 {
        let c = self.counters.entry(uid).or_default();
        *c += 1;
        *c
    }

    pub(super) fn publish(&mut self, key: (usize, ConnId)) -> Result<(), String> {
        let uid = self.conns[&key].uid;
        let n = self.rng.range(1, 3);
        let mut packets = Vec::new();
        for _ in 0..n {
            let counter = self.next_counter(uid);
            let (id, recipients, packet) = match self.rng.below(3) {
                0 => {
                    let to = self.rng.range(1, self.setup.users as u64) as u32;
                    let id = ledger::msg_id(ledger::DIRECT, uid, counter, key.1);
                    let p = ClientPacket::Publish {
                        to,
                        msg_id: &id,
                        payload: b"hi",
                    }
                    .to_vec();
                    (id, vec![to], p)
                }
                1 => {
                    let gid = self.rng.range(1, 3) as u32; // 3: no such group
                    let id = ledger::msg_id(ledger::GROUP, uid, counter, key.1);
                    let members = self.groups.get(&gid).cloned().unwrap_or_default();
                    let r = members.into_iter().filter(|m| *m != uid).collect();
                    let p = ClientPacket::GroupPublish {
                        group: gid,
                        msg_id: &id,
                        payload: b"all",
                    }
                    .to_vec();
                    (id, r, p)
                }
                _ => {
                    let gid = self.rng.range(1, 2) as u32;
                    let id = ledger::msg_id(ledger::PART, uid, counter, key.1);
                    let mut targets: Vec<u32> = (1..=self.setup.users)
                        .filter(|_| self.rng.chance(0.4))
                        .collect();
                    if targets.is_empty() {
                        targets.push(1);
                    }
                    let raw: Vec<u8> = targets.iter().flat_map(|t| t.to_be_bytes()).collect();
                    let p = ClientPacket::GroupPartPublish {
                        group: gid,
                        msg_id: &id,
                        targets: Targets::from_raw(&raw).ok_or("targets")?,
                        payload: b"some",
                    }
                    .to_vec();
                    let r = targets.into_iter().filter(|m| *m != uid).collect();
                    (id, r, p)
                }
            };
            if tracing() {
                eprintln!(
                    "t={} user {uid} conn {} sends {:?}",
                    self.now.0,
                    key.1,
                    ledger::parse(&id)
                );
            }
            self.ledger.sent.insert(id, recipients);
            self.unacked.insert(id, (packet.clone(), self.now));
            packets.push(packet);
        }
        self.send(key, &packets)
    }

    /// A client sends again a publish it has no answer for (same id).
    pub(super) fn retransmit(&mut self, key: (usize, ConnId)) -> Result<(), String> {
        let uid = self.conns[&key].uid;
        // Within the dedupe window only: a retransmission after it is a new message.
        let window = self.cfg.delivery.dedupe_window_ms / 2;
        let now = self.now;
        let mut mine: Vec<MsgId> = self
            .unacked
            .iter()
            .filter(|(id, (_, at))| ledger::parse(id).1 == uid && at.plus_ms(window) > now)
            .map(|(id, _)| *id)
            .collect();
        mine.sort_unstable();
        if mine.is_empty() {
            return Ok(());
        }
        let id = *self.rng.pick(&mine);
        let p = self.unacked[&id].0.clone();
        self.ledger.retried.insert(id);
        self.send(key, &[p])
    }

    /// The client reads what the server wrote and reacts (acks most pushes).
    pub(super) fn read(&mut self, key: (usize, ConnId), ack_p: f64) -> Result<(), String> {
        let Some(c) = self.conns.get_mut(&key) else {
            return Ok(());
        };
        if c.gone {
            return Ok(());
        }
        let items: Vec<(u64, Out)> = c.wire.drain(..).collect();
        if items.is_empty() {
            return Ok(());
        }
        let n = items.len();
        let mut ping = false;
        for (e, out) in items {
            let bytes = match &out {
                Out::Close => {
                    self.conns.get_mut(&key).ok_or("conn")?.gone = true;
                    continue;
                }
                Out::Raw(_) => continue,
                o => o.packet().ok_or("packet")?.to_vec(),
            };
            let p =
                ServerPacket::decode(&bytes).map_err(|e| format!("server sent garbage: {e}"))?;
            match p {
                ServerPacket::PubAck { msg_id }
                | ServerPacket::GroupPubAck { msg_id }
                | ServerPacket::GroupPartPubAck { msg_id } => {
                    let id = *msg_id;
                    self.unacked.remove(&id);
                    self.ledger.server_acked(&id);
                }
                ServerPacket::PubErr { msg_id, .. } => {
                    let id = *msg_id;
                    self.ledger.stats.refused += 1;
                    self.ledger.retried.insert(id);
                }
                ServerPacket::Push { .. }
                | ServerPacket::GroupPush { .. }
                | ServerPacket::GroupPartPush { .. } => self.receive(key, e, &bytes)?,
                ServerPacket::Ping => ping = true,
                other => {
                    if tracing() {
                        let uid = self.conns[&key].uid;
                        eprintln!("t={} user {uid} conn {}: {other:?}", self.now.0, key.1);
                    }
                }
            }
        }
        let (shard, conn) = key;
        self.feed(shard, Event::Written { conn, n })?;
        let mut packets = Vec::new();
        if ping {
            packets.push(ClientPacket::PingResp.to_vec());
        }
        let uid = self.conns[&key].uid;
        // Acks count only if the server reads them (a closed or busy session does not).
        let read_now = !self.conns[&key].gone
            && self.engines[shard].is_open(conn)
            && self.engines[shard].may_read(conn);
        if !read_now {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.conns.get_mut(&key).ok_or("conn")?.to_ack);
        let mut keep = Vec::new();
        for (ack, id) in pending {
            if self.rng.chance(ack_p) {
                let p = match ack {
                    cmd::PUB_ACK => ClientPacket::PubAck { msg_id: &id },
                    cmd::GROUP_PUB_ACK => ClientPacket::GroupPubAck { msg_id: &id },
                    _ => ClientPacket::GroupPartPubAck { msg_id: &id },
                };
                packets.push(p.to_vec());
                if tracing() {
                    eprintln!(
                        "t={} user {uid} conn {} acks {:?}",
                        self.now.0,
                        key.1,
                        ledger::parse(&id)
                    );
                }
                self.emit += 1;
                let e = self.emit;
                self.ledger.acked.entry(uid).or_default().insert(id, e);
                self.conns
                    .get_mut(&key)
                    .ok_or("conn")?
                    .acked_here
                    .insert(id, e);
            } else {
                keep.push((ack, id));
            }
        }
        self.conns.get_mut(&key).ok_or("conn")?.to_ack = keep;
        if !packets.is_empty() {
            self.send(key, &packets)?;
        }
        Ok(())
    }

    /// A push arrived on a session: the duplicate, order and redelivery invariants.
    pub(super) fn receive(
        &mut self,
        key: (usize, ConnId),
        emitted: u64,
        frame: &[u8],
    ) -> Result<(), String> {
        let id = *push_msg_id(frame).ok_or("push without id")?;
        let ack = cmd::ack_for_push(frame[0]).ok_or("not a push")?;
        let (kind, sender, counter) = ledger::parse(&id);
        let multi = self.setup.policy == DuplicateLogin::Multi;
        let max = self.cfg.delivery.redelivery_max as u32;
        // Under `multi` + `on_failure` a device that goes away stores its unacked pushes
        // then, so another device may find them after newer ones (see docs/architecture.md).
        let ordered = !(multi && self.setup.persist == Persist::OnFailure);
        let retried = self.ledger.retried.contains(&id);
        let c = self.conns.get_mut(&key).ok_or("conn")?;
        let uid = c.uid;
        let acked_at = if multi {
            c.acked_here.get(&id).copied()
        } else {
            self.ledger
                .acked
                .get(&uid)
                .and_then(|m| m.get(&id))
                .copied()
        };
        if let Some(a) = acked_at {
            if emitted > a {
                return Err(format!(
                    "user {uid} got {:?} on conn {} (emit {emitted}) again after acking it (emit {a})",
                    (kind, sender, counter),
                    key.1
                ));
            }
        }
        let n = c.receipts.entry(id).or_default();
        *n += 1;
        if tracing() {
            eprintln!(
                "t={} user {uid} conn {} got {:?} (copy {}, emit {emitted})",
                self.now.0,
                key.1,
                (kind, sender, counter),
                n
            );
        }
        if *n > 1 + max {
            return Err(format!(
                "session {} got {:?} {} times (at most 1 + {max})",
                key.1,
                (kind, sender, counter),
                n
            ));
        }
        if *n > 1 {
            self.ledger.stats.redelivered += 1;
        } else if ordered && kind != ledger::SYSTEM && !retried && sender != uid {
            let class = (sender, ledger::conn_of(&id), kind == ledger::DIRECT);
            let last = c.order.entry(class).or_default();
            if counter <= *last {
                return Err(format!(
                    "user {uid}: {:?} after counter {} from the same sender",
                    (kind, sender, counter),
                    *last
                ));
            }
            *last = counter;
        }
        if !c.to_ack.iter().any(|(_, x)| *x == id) {
            c.to_ack.push((ack, id));
        }
        self.ledger.stats.received += 1;
        self.ledger.got.entry(uid).or_default().insert(id);
        Ok(())
    }

    pub(super) fn disconnect(&mut self, key: (usize, ConnId)) -> Result<(), String> {
        let (shard, conn) = key;
        if self.rng.chance(0.5) {
            self.send(key, &[ClientPacket::Disconnect.to_vec()])?;
        }
        if let Some(c) = self.conns.get_mut(&key) {
            c.gone = true;
        }
        self.feed(
            shard,
            Event::Closed {
                conn,
                reason: CloseReason::PeerClosed,
            },
        )
    }

    pub(super) fn system_send(&mut self) -> Result<(), String> {
        self.replies += 1;
        let reply = self.replies;
        let to = self.rng.range(1, self.setup.users as u64) as u32;
        let id = ledger::msg_id(ledger::SYSTEM, 0, reply, 0);
        self.ledger.sent.insert(id, vec![to]);
        let msg = SystemMessage {
            from: 0,
            to: Target::User(to),
            msg_id: id,
            payload: b"notice".to_vec(),
        };
        self.feed(owner_of(to, self.setup.shards), Event::Send { msg, reply })
    }
}
