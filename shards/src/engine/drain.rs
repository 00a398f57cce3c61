//! The offline drain: a new session's stored messages are pushed in order, right after
//! CONNECT_ACK 0, one page at a time. The next page is fetched once the client has acked
//! half of the last one, so a large backlog never sits in memory at once and in-flight
//! pushes stay bounded. Live messages that arrive meanwhile are held and pushed after the
//! backlog (skipping those the drain already pushed).

use std::rc::Rc;

use im_storage::StoredMessage;

use super::session::PendingPush;
use super::{Action, ConnId, Engine, Failed, Token, Waiter};
use crate::stats::Msg;

/// Drained messages a session remembers (live copies of the newest stored messages may
/// still be on their way, or held, when the drain pushes them).
const RECENT: usize = 1024;

impl Engine {
    /// A page never exceeds what the session may have in flight, nor half its send queue
    /// (a page pushed at once must not look like a client that stopped reading).
    fn page(&self) -> usize {
        let c = &self.cfg;
        c.delivery
            .offline_page
            .min(c.session.max_inflight)
            .min(c.session.send_queue / 2)
            .max(1)
    }

    /// Asks for the next page of the session's backlog.
    pub(super) fn fetch_page(&mut self, conn: ConnId) {
        let (page, max) = (self.page(), self.cfg.session.max_inflight);
        let token = self.token(Waiter::Drain(conn));
        let Some(s) = self.sessions.get_mut(&conn) else {
            self.waiting.remove(&token);
            return;
        };
        // What is still in flight counts against the session's bound.
        let limit = page.min(max.saturating_sub(s.inflight.len())).max(1);
        s.drain.fetching = Some(token);
        s.drain.limit = limit;
        s.drain.wait_acks = false;
        let (uid, after) = (s.uid, s.drain.after);
        self.out.push(Action::Fetch {
            token,
            uid,
            after,
            limit,
        });
    }

    pub(super) fn on_fetched(&mut self, token: Token, result: Result<Vec<StoredMessage>, Failed>) {
        let Some(Waiter::Drain(conn)) = self.waiting.remove(&token) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        s.drain.fetching = None;
        let page = s.drain.limit;
        let (uid, mut after) = (s.uid, s.drain.after);
        let batch = match result {
            Ok(b) => b,
            Err(Failed) => {
                // The messages stay stored; the next login tries again.
                tracing::error!(uid, "offline fetch failed");
                return self.finish_drain(conn);
            }
        };
        let full = batch.len() >= page;
        for m in batch {
            after = after.max(m.seq);
            if let Some(s) = self.sessions.get_mut(&conn) {
                if s.drain.recent.len() == RECENT {
                    s.drain.recent.pop_front();
                }
                s.drain.recent.push_back((m.seq, m.frame.clone()));
            }
            self.stats.message(Msg::Drained, 1);
            self.push_now(conn, PendingPush::new(uid, m.frame, Some(m.seq), 1, None));
        }
        let Some(s) = self.sessions.get_mut(&conn) else {
            return; // pushing closed it (the client is too slow)
        };
        s.drain.after = after;
        if full {
            s.drain.wait_acks = true;
            self.drain_on_ack(conn);
        } else {
            self.finish_drain(conn);
        }
    }

    /// An ack came in: fetch the next page once in-flight is down to half a page.
    pub(super) fn drain_on_ack(&mut self, conn: ConnId) {
        let half = self.page() / 2;
        let Some(s) = self.sessions.get(&conn) else {
            return;
        };
        if s.drain.wait_acks && s.inflight.len() <= half {
            self.fetch_page(conn);
        }
    }

    /// Ends the drain: pushes the live messages held meanwhile, except those the drain
    /// already pushed from the store.
    fn finish_drain(&mut self, conn: ConnId) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        let after = s.drain.after;
        let held = s.held.take().unwrap_or_default();
        for p in held {
            if self.drained_already(conn, &p) {
                continue;
            }
            // Stored before the drain read past it, yet not read: its stored copy was
            // removed first, i.e. acked by another session of the user. Pushing it now
            // would put it behind newer ones; it is delivered.
            if p.seq.is_some_and(|seq| seq <= after) {
                self.acked(&p);
                continue;
            }
            self.push_now(conn, p);
        }
    }

    /// A live push whose stored copy the drain already pushed to this session (the live
    /// copy was on its way while the drain read the store). The drained push takes over
    /// the live one, so this session's ack or failure counts for the message as a whole
    /// and the stored copy is removed only once every session acked it.
    ///
    /// A live push without a stored copy can meet one too: under `multi`, another device
    /// that failed it stored a copy, which this session's drain then pushed. The drained
    /// copy then stands for it (same frame), and the live one's share for this session is
    /// done.
    pub(super) fn drained_already(&mut self, conn: ConnId, p: &Rc<PendingPush>) -> bool {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return false;
        };
        let Some(seq) = p.seq else {
            if s.drain.recent.iter().any(|(_, f)| *f == p.frame) {
                self.acked(p);
                return true;
            }
            return false;
        };
        if seq > s.drain.after || !s.drain.recent.iter().any(|(q, _)| *q == seq) {
            return false;
        }
        match s.inflight.iter_mut().find(|i| i.push.seq == Some(seq)) {
            Some(i) => i.push = p.clone(),
            // Already acked (and its stored copy removed): this session's share is done.
            None => self.acked(p),
        }
        true
    }
}
