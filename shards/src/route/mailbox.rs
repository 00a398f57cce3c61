//! Bounded lock-free mailboxes between shards (an N×N mesh of crossbeam `ArrayQueue`s: one
//! queue per (source, destination) pair, so each queue has a single producer thread) with a
//! cross-thread wake-up: the producer wakes the destination's mailbox task through an
//! `AtomicWaker`, which the monoio runtime turns into an eventfd notification. A full queue
//! is back-pressure: the sending task waits (and stops reading its socket) until there is
//! room; nothing grows without bound. The wait is a wake-up, not a poll: a sender that
//! finds a queue full leaves its waker on the queue, and the destination wakes every such
//! sender after it took mail out of that queue.
//!
//! Also holds the process-wide shutdown coordination (flags and counters every shard reads).

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Poll, Waker};

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;

struct Inbox<M> {
    /// `from[i]`: mail from shard `i`; the last queue is the control plane's.
    from: Vec<ArrayQueue<M>>,
    /// `space[i]`: senders waiting for room in `from[i]`.
    space: Vec<SpaceWaiters>,
    waker: AtomicWaker,
}

/// The tasks waiting for room in one queue. Touched only when a queue was found full: the
/// receiver's common path is a fence and one load of `waiting`. The mutex is held for a push
/// or a swap, never across anything that waits.
///
/// No lost wake-up: the sender stores `waiting` and then retries the push; the receiver pops
/// and then loads `waiting`. A SeqCst fence between the two steps on each side means at
/// least one of them sees the other (the retry finds room, or the load finds a waiter).
#[derive(Default)]
struct SpaceWaiters {
    waiting: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl SpaceWaiters {
    fn register(&self, w: &Waker) {
        let mut v = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if !v.iter().any(|x| x.will_wake(w)) {
            v.push(w.clone());
        }
        self.waiting.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Wakes every waiting sender (after mail was taken out of the queue).
    fn wake_all(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if !self.waiting.load(Ordering::SeqCst) {
            return;
        }
        let woken = {
            let mut v = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            self.waiting.store(false, Ordering::SeqCst);
            std::mem::take(&mut *v)
        };
        for w in woken {
            w.wake();
        }
    }
}

/// All mailboxes of the process, shared by every shard thread; `M` is what they carry.
pub struct Mesh<M> {
    inboxes: Vec<Inbox<M>>,
    shutdown: AtomicBool,
    /// Tasks that accepted a message and have not yet handed it to its owner shard.
    pending_routes: AtomicUsize,
    /// Shards that finished closing their sessions during shutdown.
    closed_shards: AtomicUsize,
    /// Times a sender found a mailbox full.
    full_events: AtomicU64,
}

impl<M> Mesh<M> {
    pub fn new(shards: usize, capacity: usize) -> Self {
        Self {
            inboxes: (0..shards)
                .map(|_| Inbox {
                    from: (0..=shards).map(|_| ArrayQueue::new(capacity)).collect(),
                    space: (0..=shards).map(|_| SpaceWaiters::default()).collect(),
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
    pub fn try_send(&self, from: usize, to: usize, mail: M) -> Result<(), M> {
        let inbox = &self.inboxes[to];
        inbox.from[from].push(mail)?;
        inbox.waker.wake();
        Ok(())
    }

    /// Sends from the control plane (another thread); gives the mail back when full.
    pub fn try_send_external(&self, to: usize, mail: M) -> Result<(), M> {
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

    /// Sends, waiting while the destination queue is full: the task sleeps until the
    /// destination has taken mail out of this queue (no polling).
    pub async fn send(&self, from: usize, to: usize, mail: M) {
        let mail = match self.try_send(from, to, mail) {
            Ok(()) => return,
            Err(back) => back,
        };
        self.full_events.fetch_add(1, Ordering::Relaxed);
        let space = &self.inboxes[to].space[from];
        let mut slot = Some(mail);
        poll_fn(|cx| {
            let Some(m) = slot.take() else {
                return Poll::Ready(());
            };
            // Register first, then retry: room made between the two is not missed.
            space.register(cx.waker());
            match self.try_send(from, to, m) {
                Ok(()) => Poll::Ready(()),
                Err(back) => {
                    slot = Some(back);
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Takes every queued mail for `me`, in per-source order.
    pub fn drain(&self, me: usize, mut f: impl FnMut(M)) -> usize {
        let mut n = 0;
        let inbox = &self.inboxes[me];
        for (q, space) in inbox.from.iter().zip(&inbox.space) {
            // Bound one pass to what was queued when it started, so a busy producer
            // cannot starve the other queues.
            let before = n;
            for _ in 0..q.len() {
                match q.pop() {
                    Some(m) => {
                        f(m);
                        n += 1;
                    }
                    None => break,
                }
            }
            if n > before {
                space.wake_all();
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
        let left = self.pending_routes.fetch_sub(1, Ordering::SeqCst) - 1;
        if left == 0 && self.shutdown_requested() {
            self.wake_all();
        }
    }

    pub(crate) fn routes_pending(&self) -> usize {
        self.pending_routes.load(Ordering::SeqCst)
    }

    pub(crate) fn inbox_empty(&self, me: usize) -> bool {
        !self.has_mail(me)
    }

    /// Wakes `me`'s mailbox task.
    pub(crate) fn wake(&self, me: usize) {
        self.inboxes[me].waker.wake();
    }

    fn wake_all(&self) {
        for i in &self.inboxes {
            i.waker.wake();
        }
    }

    /// Resolves when `me` has mail or `cond` holds; woken by mail and by [`Mesh::wake`]
    /// (whoever changes what `cond` reads must wake `me`).
    pub(crate) async fn wait(&self, me: usize, cond: impl Fn() -> bool) {
        poll_fn(|cx| {
            self.inboxes[me].waker.register(cx.waker());
            if self.has_mail(me) || cond() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Marks `me` as done closing sessions; returns once every shard is (woken by the
    /// last one to get there).
    pub(crate) async fn closed_barrier(&self, me: usize) {
        let n = self.shards();
        if self.closed_shards.fetch_add(1, Ordering::SeqCst) + 1 == n {
            self.wake_all();
        }
        poll_fn(|cx| {
            self.inboxes[me].waker.register(cx.waker());
            if self.closed_shards.load(Ordering::SeqCst) >= n {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::engine::{Batch, Time, Uids};

    type Mail = Batch;

    fn mail(n: u32) -> Mail {
        Batch {
            accepted: Time::default(),
            frame: Bytes::new(),
            uids: Uids::Shared(Arc::from(vec![n])),
            seqs: None,
            exclude: 0,
            hops: 0,
        }
    }

    fn uid(m: &Mail) -> u32 {
        match &m.uids {
            Uids::Shared(u) => u[0],
            _ => u32::MAX,
        }
    }

    /// Senders that find a queue full sleep until the destination, on another thread, takes
    /// mail out of it; then every one of them gets through, in order per sender, without a
    /// timer (the runtime here has no timer driver: a sleep would panic).
    #[test]
    fn full_queue_waits_for_a_wake_up_not_a_timer() {
        let mesh = Arc::new(Mesh::new(2, 2));
        let m = mesh.clone();
        let sender = std::thread::spawn(move || {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for t in 0..3u32 {
                    let m = m.clone();
                    tasks.push(monoio::spawn(async move {
                        for i in 0..50u32 {
                            m.send(0, 1, mail(t * 1000 + i)).await;
                        }
                    }));
                }
                for t in tasks {
                    t.await;
                }
            });
        });
        let mut got: Vec<u32> = Vec::new();
        let start = std::time::Instant::now();
        while got.len() < 150 {
            assert!(start.elapsed().as_secs() < 20, "stuck at {}", got.len());
            mesh.drain(1, |m| got.push(uid(&m)));
            std::thread::yield_now();
        }
        sender.join().expect("sender thread");
        assert!(mesh.full_events() > 0, "the queue of 2 was found full");
        for t in 0..3u32 {
            let mine: Vec<u32> = got.iter().copied().filter(|u| u / 1000 == t).collect();
            assert_eq!(mine, (0..50).map(|i| t * 1000 + i).collect::<Vec<_>>());
        }
    }
}
