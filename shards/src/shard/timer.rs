//! The shard's timer task: engine timers, stalled writes, and handing freed memory back.

use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;

use super::{now, Shard};
use crate::config::CoreConfig;
use crate::engine::Event;
use crate::net::conn;

/// What [`crate::set_memory_trim`] set: called on each shard's thread.
pub(crate) static MEMORY_TRIM: OnceLock<fn()> = OnceLock::new();
/// How often the timer considers calling it,
const TRIM_EVERY_US: u64 = 1_000_000;
/// and the most events the shard may have had since for it to do so.
const TRIM_QUIET_EVENTS: u64 = 5_000;

impl Shard {
    /// Fires the engine's timers (heartbeat, redelivery) every tick and ends writes stuck
    /// past the write timeout (shutting the socket down fails the write).
    pub(super) async fn timer(self: Rc<Self>) {
        let period = tick_period(&self.cfg);
        let write_timeout_us = self.cfg.session.write_timeout_ms * 1000;
        let (mut trimmed, mut events_then) = (now(), 0);
        loop {
            monoio::time::sleep(period).await;
            self.dispatch(Event::Tick);
            let t = now();
            let stuck = self.conns.borrow_mut().overdue_writes(t, write_timeout_us);
            for fd in stuck {
                conn::shutdown(fd, libc::SHUT_RDWR);
            }
            // Only on a quiet shard: under load the freed pages are about to be used again,
            // and handing them back would cost a page fault each.
            if t.micros_since(trimmed) >= TRIM_EVERY_US {
                // Once a second, the sweep of quiet connections (see `net::plain`).
                let sleeping = {
                    let mut conns = self.conns.borrow_mut();
                    conns.ask_to_sleep();
                    conns.sleeping()
                };
                self.stats.set_sleeping(sleeping);
                let quiet = self.events.get() - events_then < TRIM_QUIET_EVENTS;
                (trimmed, events_then) = (t, self.events.get());
                if let (true, Some(trim)) = (quiet, MEMORY_TRIM.get()) {
                    trim();
                }
            }
        }
    }
}

/// How often the timers are checked: a fraction of the shortest timer.
fn tick_period(c: &CoreConfig) -> Duration {
    let shortest = c
        .session
        .heartbeat_interval_ms
        .min(c.session.heartbeat_timeout_ms)
        .min(c.delivery.redelivery_interval_ms);
    Duration::from_millis((shortest / 4).clamp(10, 500))
}
