//! Group fan-out on a member's owner shard.
//!
//! The sender's shard sends each owner shard one [`Batch`] per message: the members that
//! shard owns and the encoded push frame, both reference-counted and shared, never copied
//! per member. Here each member gets the frame on every session (tracked for its ack like
//! any push), or, when offline, a stored copy; the offline members of a step go to storage
//! in one batched write.
//!
//! A batch larger than one step (`groups.fanout_chunk` members) is queued and served step
//! by step by a worker task that yields to the runtime between steps, so a 10,000-member
//! group never holds up the shard's other sessions. Batches are served in arrival order, so
//! group messages keep their order per recipient.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::ops::{Deref, Range};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use im_storage::OfflineMessage;

use crate::session::{Session, Tracked};
use crate::shard::Shard;
use crate::stats::Msg;

/// The recipients of a batch: a cached membership slice (shared) or an explicit list.
pub(crate) enum Uids {
    Shared(Arc<[u32]>),
    Owned(Vec<u32>),
}

impl Deref for Uids {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        match self {
            Uids::Shared(a) => a,
            Uids::Owned(v) => v,
        }
    }
}

/// One group message for the members one shard owns.
pub(crate) struct Batch {
    /// When the sender's publish was accepted.
    pub accepted: Instant,
    pub frame: Bytes,
    pub uids: Uids,
    /// Stored-copy sequence numbers (`before_ack` mode), aligned with `uids`.
    pub seqs: Option<Vec<u64>>,
    /// Not delivered here: the sender (its other devices are served by its own shard).
    pub exclude: u32,
}

/// A shard's fan-out queue.
#[derive(Default)]
pub(crate) struct Fanout {
    /// Batches with the index of the next member to serve.
    queue: RefCell<VecDeque<(Batch, usize)>>,
    /// Members still to serve, over all queued batches.
    backlog: Cell<usize>,
    /// The mailbox loop, waiting for `backlog` to come down to the given level.
    backlog_waker: RefCell<Option<(usize, Waker)>>,
    waker: RefCell<Option<Waker>>,
    /// Packets queued for writing on this shard's sessions and not yet written.
    writes: Cell<usize>,
    /// The worker, waiting for `writes` to come down.
    write_waker: RefCell<Option<Waker>>,
    /// `writes` at or below which the worker goes on.
    low_water: Cell<usize>,
}

impl Fanout {
    /// Resolves once at most `n` members wait to be served; woken by the worker (no
    /// polling).
    pub async fn backlog_at_most(&self, n: usize) {
        poll_fn(|cx| {
            if self.backlog.get() <= n {
                Poll::Ready(())
            } else {
                *self.backlog_waker.borrow_mut() = Some((n, cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// The worker served `k` members.
    fn served(&self, k: usize) {
        let left = self.backlog.get().saturating_sub(k);
        self.backlog.set(left);
        let mut waiter = self.backlog_waker.borrow_mut();
        if waiter.as_ref().is_some_and(|(n, _)| left <= *n) {
            if let Some((_, w)) = waiter.take() {
                w.wake();
            }
        }
    }

    pub fn is_idle(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    /// A session queued a packet for its writer.
    pub fn write_queued(&self) {
        self.writes.set(self.writes.get() + 1);
    }

    /// Writers wrote `n` queued packets.
    pub fn writes_done(&self, n: usize) {
        let left = self.writes.get().saturating_sub(n);
        self.writes.set(left);
        if left <= self.low_water.get() {
            if let Some(w) = self.write_waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    fn wake(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

impl Shard {
    /// Delivers a batch: at once when it is one step and nothing is queued, else queued.
    pub fn fanout(&self, b: Batch) {
        let chunk = self.cfg.groups.fanout_chunk;
        if b.uids.len() <= chunk && self.fanout.is_idle() {
            self.deliver_range(&b, 0..b.uids.len());
            return;
        }
        self.fanout
            .backlog
            .set(self.fanout.backlog.get() + b.uids.len());
        self.fanout.queue.borrow_mut().push_back((b, 0));
        self.fanout.wake();
    }

    /// Serves `b.uids[range]`.
    fn deliver_range(&self, b: &Batch, range: Range<usize>) {
        let expires_at_ms = self.expiry_ms();
        let mut offline = Vec::new();
        let mut sessions: Vec<Rc<Session>> = Vec::new();
        for i in range {
            let uid = b.uids[i];
            if uid == b.exclude {
                continue;
            }
            let seq = b.seqs.as_ref().and_then(|s| s.get(i).copied());
            sessions.clear();
            self.sessions_of(uid, &mut sessions);
            if sessions.is_empty() {
                if seq.is_none() {
                    offline.push(OfflineMessage {
                        uid,
                        frame: b.frame.clone(),
                        expires_at_ms,
                    });
                }
                continue;
            }
            let track = Tracked::new(
                uid,
                b.frame.clone(),
                seq,
                sessions.len() as u32,
                Some(b.accepted),
            );
            for s in sessions.drain(..) {
                s.push(track.clone());
            }
        }
        if !offline.is_empty() {
            self.stats.message(Msg::StoredOffline, offline.len() as u64);
            self.store.append_detached(offline);
        }
    }
}

/// Yields once to the runtime (other tasks and I/O completions run first).
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Longest the worker waits for the writes of its last step before going on anyway (a few
/// clients that stopped reading must not stall fan-out for everyone).
const WRITE_WAIT: Duration = Duration::from_millis(20);

/// Waits until the shard's queued writes are down to the low-water mark (or [`WRITE_WAIT`]).
async fn writes_drained(f: &Fanout) {
    let wait = poll_fn(|cx| {
        if f.writes.get() <= f.low_water.get() {
            Poll::Ready(())
        } else {
            *f.write_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    });
    let _ = monoio::time::timeout(WRITE_WAIT, wait).await;
}

/// Serves queued batches step by step until the shard's runtime ends. Between steps it
/// lets the writes of the last step reach the kernel first: otherwise one io_uring
/// submission (or epoll round) would carry thousands of writes, and every other session's
/// packet on the shard would queue behind them.
pub(crate) async fn worker(shard: Rc<Shard>) {
    let chunk = shard.cfg.groups.fanout_chunk;
    shard.fanout.low_water.set(chunk);
    loop {
        poll_fn(|cx| {
            if shard.fanout.is_idle() {
                *shard.fanout.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        // Take the step out of the queue so delivering (which may close sessions, and
        // so on) never runs with the queue borrowed.
        let step = {
            let mut q = shard.fanout.queue.borrow_mut();
            q.pop_front().map(|(b, at)| {
                let end = (at + chunk).min(b.uids.len());
                (b, at, end)
            })
        };
        let Some((b, at, end)) = step else { continue };
        shard.deliver_range(&b, at..end);
        shard.fanout.served(end - at);
        if end < b.uids.len() {
            shard.fanout.queue.borrow_mut().push_front((b, end));
        }
        yield_now().await;
        writes_drained(&shard.fanout).await;
    }
}
