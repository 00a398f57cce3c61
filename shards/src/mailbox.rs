//! Bounded lock-free mailboxes between shards (an N×N mesh of crossbeam `ArrayQueue`s: one
//! queue per (source, destination) pair, so each queue has a single producer thread) with a
//! cross-thread wake-up: the producer wakes the destination's mailbox task through an
//! `AtomicWaker`, which the monoio runtime turns into an eventfd notification. A full queue
//! is back-pressure: the sending task waits (and stops reading its socket) until there is
//! room; nothing grows without bound.
//!
//! Also holds the process-wide shutdown coordination (flags and counters every shard reads).

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;

use crate::control::Request;
use crate::delivery::Delivery;
use crate::fanout::Batch;
use crate::handoff::Handoff;

/// What shards send each other.
pub(crate) enum Mail {
    /// A message for a user this shard owns.
    Deliver(Delivery),
    /// An authenticated connection for a user this shard owns.
    Handoff(Handoff),
    /// A group message for the members this shard owns.
    Fanout(Batch),
    /// A request from the control plane.
    Control(Request),
}

struct Inbox {
    /// `from[i]`: mail from shard `i`; the last queue is the control plane's.
    from: Vec<ArrayQueue<Mail>>,
    waker: AtomicWaker,
}

/// All mailboxes of the process, shared by every shard thread.
pub struct Mesh {
    inboxes: Vec<Inbox>,
    shutdown: AtomicBool,
    /// Tasks that accepted a message and have not yet handed it to its owner shard.
    pending_routes: AtomicUsize,
    /// Shards that finished closing their sessions during shutdown.
    closed_shards: AtomicUsize,
    /// Times a sender found a mailbox full.
    full_events: AtomicU64,
}

impl Mesh {
    pub fn new(shards: usize, capacity: usize) -> Self {
        Self {
            inboxes: (0..shards)
                .map(|_| Inbox {
                    from: (0..=shards).map(|_| ArrayQueue::new(capacity)).collect(),
                    waker: AtomicWaker::new(),
                })
                .collect(),
            shutdown: AtomicBool::new(false),
            pending_routes: AtomicUsize::new(0),
            closed_shards: AtomicUsize::new(0),
            full_events: AtomicU64::new(0),
        }
    }

    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Asks every shard to shut down (callable from any thread).
    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        for i in &self.inboxes {
            i.waker.wake();
        }
    }

    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// How often a sender found a mailbox full since start.
    pub fn full_events(&self) -> u64 {
        self.full_events.load(Ordering::Relaxed)
    }

    /// Sends without waiting; gives the mail back when the queue is full.
    pub(crate) fn try_send(&self, from: usize, to: usize, mail: Mail) -> Result<(), Mail> {
        let inbox = &self.inboxes[to];
        inbox.from[from].push(mail)?;
        inbox.waker.wake();
        Ok(())
    }

    /// Sends from the control plane (another thread); gives the mail back when full.
    pub(crate) fn try_send_external(&self, to: usize, mail: Mail) -> Result<(), Mail> {
        self.try_send(self.shards(), to, mail)
    }

    /// Mail waiting in every queue.
    pub fn depth(&self) -> usize {
        self.inboxes
            .iter()
            .flat_map(|i| i.from.iter())
            .map(ArrayQueue::len)
            .sum()
    }

    /// Sends, waiting while the destination queue is full.
    pub(crate) async fn send(&self, from: usize, to: usize, mut mail: Mail) {
        let mut counted = false;
        loop {
            match self.try_send(from, to, mail) {
                Ok(()) => return,
                Err(back) => {
                    mail = back;
                    if !counted {
                        counted = true;
                        self.full_events.fetch_add(1, Ordering::Relaxed);
                    }
                    // The destination drains whole queues per turn; a short sleep keeps
                    // this cheap without another wake-up channel in the other direction.
                    monoio::time::sleep(Duration::from_micros(200)).await;
                }
            }
        }
    }

    /// Takes every queued mail for `me`, in per-source order.
    pub(crate) fn drain(&self, me: usize, mut f: impl FnMut(Mail)) -> usize {
        let mut n = 0;
        for q in &self.inboxes[me].from {
            // Bound one pass to what was queued when it started, so a busy producer
            // cannot starve the other queues.
            for _ in 0..q.len() {
                match q.pop() {
                    Some(m) => {
                        f(m);
                        n += 1;
                    }
                    None => break,
                }
            }
        }
        n
    }

    fn has_mail(&self, me: usize) -> bool {
        self.inboxes[me].from.iter().any(|q| !q.is_empty())
    }

    /// Resolves when `me` has mail or shutdown was requested.
    pub(crate) async fn ready(&self, me: usize) {
        poll_fn(|cx| {
            let inbox = &self.inboxes[me];
            inbox.waker.register(cx.waker());
            if self.has_mail(me) || self.shutdown_requested() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    pub(crate) fn route_started(&self) {
        self.pending_routes.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn route_done(&self) {
        self.pending_routes.fetch_sub(1, Ordering::SeqCst);
    }

    pub(crate) fn routes_pending(&self) -> usize {
        self.pending_routes.load(Ordering::SeqCst)
    }

    pub(crate) fn inbox_empty(&self, me: usize) -> bool {
        !self.has_mail(me)
    }

    /// Marks `me` as done closing sessions; returns once every shard is.
    pub(crate) async fn closed_barrier(&self) {
        self.closed_shards.fetch_add(1, Ordering::SeqCst);
        while self.closed_shards.load(Ordering::SeqCst) < self.shards() {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
