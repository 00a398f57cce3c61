//! The oracle: what clients sent, what the server acknowledged, what each recipient got,
//! and the invariants over them.

use std::collections::{HashMap, HashSet};

use im_protocol::MsgId;

/// Message ids carry their origin: kind, sender, the sender's counter, and the connection
/// it was first sent on (order is promised per connection: a client that reconnects may
/// race its old connection's last publishes).
pub const DIRECT: u8 = 1;
pub const GROUP: u8 = 2;
pub const PART: u8 = 3;
pub const SYSTEM: u8 = 4;

pub fn msg_id(kind: u8, sender: u32, counter: u64, conn: u64) -> MsgId {
    let mut id = [0u8; 32];
    id[0] = kind;
    id[1..5].copy_from_slice(&sender.to_le_bytes());
    id[5..13].copy_from_slice(&counter.to_le_bytes());
    id[13..21].copy_from_slice(&conn.to_le_bytes());
    id
}

/// The connection a message was first sent on.
pub fn conn_of(id: &MsgId) -> u64 {
    let mut c = [0u8; 8];
    c.copy_from_slice(&id[13..21]);
    u64::from_le_bytes(c)
}

pub fn parse(id: &MsgId) -> (u8, u32, u64) {
    let sender = u32::from_le_bytes([id[1], id[2], id[3], id[4]]);
    let mut c = [0u8; 8];
    c.copy_from_slice(&id[5..13]);
    (id[0], sender, u64::from_le_bytes(c))
}

/// A message the server acknowledged to its sender.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub recipients: Vec<u32>,
    /// Crash epoch when it was acknowledged.
    pub epoch: u32,
}

#[derive(Default)]
pub struct Ledger {
    /// Intended recipients of every message sent, by id.
    pub sent: HashMap<MsgId, Vec<u32>>,
    /// Sent more than once, or refused once: exempt from the order check.
    pub retried: HashSet<MsgId>,
    pub accepted: HashMap<MsgId, Accepted>,
    /// Per user: messages received (any session, any epoch).
    pub got: HashMap<u32, HashSet<MsgId>>,
    /// Per user: messages acked, with the emit number of the ack (cleared at a crash:
    /// a removal not yet durable may bring a message back).
    pub acked: HashMap<u32, HashMap<MsgId, u64>>,
    pub epoch: u32,
    pub stats: Stats,
}

#[derive(Default, Debug, Clone, Copy)]
pub struct Stats {
    pub accepted: u64,
    pub received: u64,
    pub redelivered: u64,
    pub crashes: u64,
    pub refused: u64,
}

impl Ledger {
    pub fn crash(&mut self) {
        self.epoch += 1;
        self.acked.clear();
        self.stats.crashes += 1;
    }

    /// The server acknowledged `id` to its sender.
    pub fn server_acked(&mut self, id: &MsgId) {
        if self.accepted.contains_key(id) {
            return;
        }
        if let Some(r) = self.sent.get(id) {
            self.stats.accepted += 1;
            self.accepted.insert(
                *id,
                Accepted {
                    recipients: r.clone(),
                    epoch: self.epoch,
                },
            );
        }
    }

    /// Every acknowledged message reached every recipient, except (under `on_failure`)
    /// those acknowledged before a crash, which the docs allow to be lost.
    pub fn check_all_delivered(&self, on_failure: bool) -> Result<(), String> {
        let mut lost = Vec::new();
        for (id, a) in &self.accepted {
            if on_failure && a.epoch < self.epoch {
                continue;
            }
            for r in &a.recipients {
                if !self.got.get(r).is_some_and(|g| g.contains(id)) {
                    lost.push((parse(id), *r, a.epoch));
                }
            }
        }
        if lost.is_empty() {
            Ok(())
        } else {
            lost.sort();
            Err(format!(
                "{} acknowledged message(s) never reached a recipient ((kind, sender, n), recipient, epoch): {:?}",
                lost.len(),
                &lost[..lost.len().min(10)]
            ))
        }
    }
}
