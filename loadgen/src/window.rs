//! What a sending connection shares with its thread's bookkeeping: its publishes not yet
//! answered and not yet received everywhere, whether it has closed, and the sender waiting
//! for room. The thread's [`crate::local::Local`] updates it from what arrives; the
//! connection ([`crate::link::Link`]) reads it before each publish. Kept apart so that
//! neither of those two names the other.

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::Duration;

#[derive(Default)]
pub struct Window {
    /// Publishes not yet acked (or refused).
    pub inflight: Cell<u32>,
    /// Publishes not yet received by every recipient (tracked for the streams registered
    /// with `Local::track`; the end-to-end window of the timed scenarios).
    pub undelivered: Cell<u32>,
    pub closed: Cell<bool>,
    /// The sender, waiting for its window to open.
    sender_waker: Cell<Option<Waker>>,
}

impl Window {
    /// One more publish on its way.
    pub fn sent(&self) {
        self.inflight.set(self.inflight.get() + 1);
        self.undelivered.set(self.undelivered.get() + 1);
    }

    /// A publish was answered (acked or refused).
    pub fn answered(&self) {
        self.inflight.set(self.inflight.get().saturating_sub(1));
        self.wake_sender();
    }

    /// A publish reached every recipient (or was refused: it never will).
    pub fn completed(&self) {
        self.undelivered
            .set(self.undelivered.get().saturating_sub(1));
        self.wake_sender();
    }

    /// The connection is closing: a waiting sender stops waiting.
    pub fn close(&self) {
        self.closed.set(true);
        self.wake_sender();
    }

    fn wake_sender(&self) {
        if let Some(w) = self.sender_waker.take() {
            w.wake();
        }
    }

    /// Whether a sender with this `window` may publish now: fewer than `window` publishes
    /// unanswered and, end to end, fewer than `window` not yet received everywhere.
    pub fn has_room(&self, window: u32, end_to_end: bool) -> bool {
        self.inflight.get() < window && (!end_to_end || self.undelivered.get() < window)
    }

    /// Waits until [`Window::has_room`], the connection closes, or `max` has passed.
    pub async fn open(&self, window: u32, end_to_end: bool, max: Duration) {
        let wait = poll_fn(|cx| {
            if self.has_room(window, end_to_end) || self.closed.get() {
                Poll::Ready(())
            } else {
                self.sender_waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        });
        let _ = monoio::time::timeout(max, wait).await;
    }
}
