//! Pushes a user's stored messages to a new session, in order, right after CONNECT_ACK 0.
//! Runs as a task on the owner shard. Pages through the store so a large backlog never sits
//! in memory at once, and waits for the client to ack a page before fetching more.

use std::rc::Rc;

use crate::session::{Session, Tracked};
use crate::stats::Msg;

pub(crate) async fn drain(s: Rc<Session>) {
    // A page never exceeds what the session may have in flight.
    let cfg = &s.shard.cfg;
    let page = cfg.delivery.offline_page.min(cfg.session.max_inflight);
    let mut after = 0u64;
    loop {
        let batch = match s.shard.store.fetch(s.uid, after, page).await {
            Ok(b) => b,
            Err(e) => {
                // The messages stay stored; the next login tries again.
                tracing::error!(uid = s.uid, error = %e, "offline fetch failed");
                break;
            }
        };
        if s.is_closed() {
            return;
        }
        let full = batch.len() == page;
        for m in batch {
            after = m.seq;
            s.shard.stats.message(Msg::Drained, 1);
            s.push_now(Tracked::new(s.uid, m.frame, Some(m.seq), 1, None));
        }
        if !full {
            break;
        }
        // Let the client ack before the next page (bounded memory, bounded in-flight).
        s.inflight_at_most(page / 2).await;
        if s.is_closed() {
            return;
        }
    }
    s.finish_drain(after);
}
