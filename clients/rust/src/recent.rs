//! The ids of messages recently handed to the application, so a redelivered copy (the
//! server resends an unacknowledged push, and drains it again after a reconnect) is not
//! handed over twice. Bounded by count: the oldest id is forgotten first.

use std::collections::{HashMap, VecDeque};

use im_protocol::MsgId;

/// Where a message handed to the application stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handed {
    /// The application has it and has not acknowledged it yet (manual acks).
    Unacked,
    /// Acknowledged with this ack command (4, 6 or 12): a redelivered copy is acknowledged
    /// again without bothering the application.
    Acked(u8),
}

pub(crate) struct Recent {
    cap: usize,
    order: VecDeque<MsgId>,
    state: HashMap<MsgId, Handed>,
}

impl Recent {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            order: VecDeque::new(),
            state: HashMap::new(),
        }
    }

    pub(crate) fn get(&self, id: &MsgId) -> Option<Handed> {
        self.state.get(id).copied()
    }

    /// Records a message handed to the application, forgetting the oldest beyond the cap.
    pub(crate) fn insert(&mut self, id: MsgId, h: Handed) {
        if self.state.insert(id, h).is_none() {
            self.order.push_back(id);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.state.remove(&old);
                }
            }
        }
    }

    /// Marks a known message acknowledged (an unknown one is already forgotten).
    pub(crate) fn acked(&mut self, id: &MsgId, ack_cmd: u8) {
        if let Some(h) = self.state.get_mut(id) {
            *h = Handed::Acked(ack_cmd);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MsgId {
        [n; 32]
    }

    #[test]
    fn remembers_state_and_forgets_the_oldest() {
        let mut r = Recent::new(3);
        r.insert(id(1), Handed::Unacked);
        r.acked(&id(1), 4);
        assert_eq!(r.get(&id(1)), Some(Handed::Acked(4)));
        r.insert(id(2), Handed::Unacked);
        r.insert(id(3), Handed::Unacked);
        r.insert(id(3), Handed::Unacked); // no second slot for the same id
        r.insert(id(4), Handed::Unacked);
        assert_eq!(r.len(), 3);
        assert_eq!(r.get(&id(1)), None, "oldest forgotten");
        assert_eq!(r.get(&id(4)), Some(Handed::Unacked));
        r.acked(&id(9), 4); // unknown: nothing happens
        assert_eq!(r.get(&id(9)), None);
    }
}
