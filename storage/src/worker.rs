//! The storage thread and the handle shards use to reach it.
//!
//! Runs on its own OS thread (named `im-storage`). Shards enqueue operations on a bounded
//! channel and await replies on oneshot channels, which wake the shard's task across
//! threads. Enqueuing never blocks the caller (a shard thread must not): the queue is
//! unbounded, and back-pressure is a soft limit callers wait on with a waker
//! ([`StoreHandle::poll_room`]), woken by the storage thread when it takes operations out.
//! Each turn the thread takes everything queued (up to a bound), applies all
//! appends and removals in one transaction (group commit: one disk sync for the whole turn
//! of every shard), answers them, then serves reads, which therefore see every write queued
//! before them. Operations from one shard are applied in the order it queued them.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use futures_channel::oneshot;

use crate::error::StoreError;
use crate::histogram::{AtomicHistogram, LATENCY_US};
use crate::offline::{now_ms, OfflineMessage, OfflineStore, StoredMessage, Write};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Op {
    Append {
        msgs: Vec<OfflineMessage>,
        reply: Option<Reply<Vec<u64>>>,
    },
    Remove {
        uid: u32,
        seqs: Vec<u64>,
    },
    Fetch {
        uid: u32,
        after: u64,
        limit: usize,
        reply: Reply<Vec<StoredMessage>>,
    },
    Count {
        uid: u32,
        reply: Reply<usize>,
    },
    Flush {
        reply: Reply<()>,
    },
    /// Apply everything queued before, then exit.
    Stop,
}

/// Most operations applied in one turn.
const MAX_BATCH: usize = 4096;
/// Operations queued past which callers are asked to wait ([`StoreHandle::poll_room`]):
/// the back-pressure from a disk that cannot keep up. A soft limit: an operation is
/// never refused nor blocks, so what a caller already accepted is always queued.
const QUEUE: usize = 65_536;

/// Tasks waiting for the queue to come down below [`QUEUE`]. The receiver's common path
/// is a fence and one load of `waiting`.
///
/// No lost wake-up: a waiter stores `waiting` and then re-checks the length; the storage
/// thread takes operations out and then loads `waiting`. A SeqCst fence between the two
/// steps on each side means at least one of them sees the other.
#[derive(Default)]
struct Room {
    waiting: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Room {
    fn register(&self, w: &Waker) {
        let mut v = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if !v.iter().any(|x| x.will_wake(w)) {
            v.push(w.clone());
        }
        self.waiting.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
    }

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
        woken.into_iter().for_each(Waker::wake);
    }
}

/// What the storage thread measures (read by the metrics endpoint).
#[derive(Debug)]
pub struct StoreStats {
    /// Duration of each group commit (one transaction, one fsync), microseconds.
    pub write_us: AtomicHistogram,
    /// Duration of each fetch, microseconds.
    pub fetch_us: AtomicHistogram,
    /// Group commits that failed.
    pub write_failures: AtomicU64,
}

/// A cloneable, thread-safe handle to the storage thread.
#[derive(Clone)]
pub struct StoreHandle {
    tx: Sender<Op>,
    stats: Arc<StoreStats>,
    room: Arc<Room>,
}

/// The running storage thread; join it after every handle is dropped.
pub struct StoreWorker {
    thread: JoinHandle<()>,
}

impl StoreWorker {
    /// Waits until every queued operation is applied and the thread has exited.
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("storage thread panicked");
        }
    }
}

impl StoreHandle {
    /// Starts the storage thread for `store`. Expired messages are purged every
    /// `purge_every`.
    pub fn spawn(
        store: Arc<dyn OfflineStore>,
        purge_every: Duration,
    ) -> std::io::Result<(StoreHandle, StoreWorker)> {
        let (tx, rx) = unbounded();
        let room = Arc::new(Room::default());
        let stats = Arc::new(StoreStats {
            write_us: AtomicHistogram::new(LATENCY_US),
            fetch_us: AtomicHistogram::new(LATENCY_US),
            write_failures: AtomicU64::new(0),
        });
        let st = stats.clone();
        let r = room.clone();
        let thread = std::thread::Builder::new()
            .name("im-storage".into())
            .spawn(move || run(store, rx, purge_every, &st, &r))?;
        Ok((StoreHandle { tx, stats, room }, StoreWorker { thread }))
    }

    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Operations waiting for the storage thread.
    pub fn queue_len(&self) -> usize {
        self.tx.len()
    }

    /// Ready while fewer than [`QUEUE`] operations wait; otherwise registers the waker,
    /// which the storage thread wakes once it has taken operations out.
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.tx.len() < QUEUE {
            return Poll::Ready(());
        }
        self.room.register(cx.waker());
        if self.tx.len() < QUEUE {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn send(&self, op: Op) {
        // Never blocks (the queue is unbounded; see `poll_room`). The receiver lives as
        // long as any handle; a send fails only if the thread died, in which case every
        // reply channel is dropped and callers see `Closed`.
        if self.tx.send(op).is_err() {
            tracing::error!("storage thread is gone; operation dropped");
        }
    }

    /// Appends messages. Enqueued when called (not when first polled), so operations keep
    /// the caller's order; the future resolves once they are durable.
    pub fn append(
        &self,
        msgs: Vec<OfflineMessage>,
    ) -> impl Future<Output = Result<Vec<u64>, StoreError>> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Append {
            msgs,
            reply: Some(reply),
        });
        async move { rx.await.unwrap_or(Err(StoreError::Closed)) }
    }

    /// Appends messages without waiting; a failure is logged by the storage thread.
    pub fn append_detached(&self, msgs: Vec<OfflineMessage>) {
        if !msgs.is_empty() {
            self.send(Op::Append { msgs, reply: None });
        }
    }

    /// Removes delivered messages without waiting.
    pub fn remove(&self, uid: u32, seqs: Vec<u64>) {
        if !seqs.is_empty() {
            self.send(Op::Remove { uid, seqs });
        }
    }

    /// Up to `limit` unexpired messages of `uid` after `after`, in order.
    pub fn fetch(
        &self,
        uid: u32,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredMessage>, StoreError>> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Fetch {
            uid,
            after,
            limit,
            reply,
        });
        async move { rx.await.unwrap_or(Err(StoreError::Closed)) }
    }

    /// Number of messages stored for `uid`.
    pub fn count(&self, uid: u32) -> impl Future<Output = Result<usize, StoreError>> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Count { uid, reply });
        async move { rx.await.unwrap_or(Err(StoreError::Closed)) }
    }

    /// Asks the storage thread to exit once everything queued before is applied (join the
    /// [`StoreWorker`] to wait for it). Later operations fail with [`StoreError::Closed`].
    pub fn stop(&self) {
        self.send(Op::Stop);
    }

    /// Resolves once every operation queued before it is applied.
    pub fn flush(&self) -> impl Future<Output = Result<(), StoreError>> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Flush { reply });
        async move { rx.await.unwrap_or(Err(StoreError::Closed)) }
    }
}

fn run(
    store: Arc<dyn OfflineStore>,
    rx: Receiver<Op>,
    purge_every: Duration,
    stats: &StoreStats,
    room: &Room,
) {
    let mut last_purge = Instant::now();
    let mut ops = Vec::with_capacity(MAX_BATCH);
    loop {
        match rx.recv_timeout(purge_every) {
            Ok(op) => ops.push(op),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        room.wake_all();
        let stop = ops.iter().position(|op| matches!(op, Op::Stop));
        if let Some(i) = stop {
            ops.truncate(i);
        }
        apply(store.as_ref(), &mut ops, stats);
        if stop.is_some() {
            break;
        }
        if last_purge.elapsed() >= purge_every {
            last_purge = Instant::now();
            match store.purge_expired(now_ms()) {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "expired offline messages removed"),
                Err(e) => tracing::error!(error = %e, "purging expired offline messages failed"),
            }
        }
    }
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

fn apply(store: &dyn OfflineStore, ops: &mut Vec<Op>, stats: &StoreStats) {
    let writes: Vec<Write<'_>> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Append { msgs, .. } => Some(Write::Append(msgs)),
            Op::Remove { uid, seqs } => Some(Write::Remove { uid: *uid, seqs }),
            _ => None,
        })
        .collect();
    let wrote = !writes.is_empty();
    let result = if writes.is_empty() {
        Ok(Vec::new())
    } else {
        let t = Instant::now();
        let r = store.write_batch(&writes);
        stats.write_us.observe(micros(t));
        r
    };
    drop(writes);
    if let Err(e) = &result {
        stats.write_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %e, "offline store write failed");
    }
    let mut seqs = result.as_ref().map(|r| r.iter()).ok();
    let now = now_ms();
    for op in ops.drain(..) {
        match op {
            Op::Append { msgs, reply } => {
                let r = match seqs.as_mut() {
                    Some(it) => Ok(it.next().cloned().unwrap_or_default()),
                    None => Err(result.as_ref().err().cloned().unwrap_or(StoreError::Closed)),
                };
                match reply {
                    Some(reply) => {
                        let _ = reply.send(r);
                    }
                    None if r.is_err() => {
                        tracing::error!(lost = msgs.len(), "offline messages could not be stored")
                    }
                    None => {}
                }
            }
            Op::Remove { .. } => {
                if let Some(it) = seqs.as_mut() {
                    it.next();
                }
            }
            Op::Fetch {
                uid,
                after,
                limit,
                reply,
            } => {
                let t = Instant::now();
                let r = store.fetch(uid, after, limit, now);
                stats.fetch_us.observe(micros(t));
                let _ = reply.send(r);
            }
            Op::Count { uid, reply } => {
                let _ = reply.send(store.count(uid));
            }
            Op::Flush { reply } => {
                // With nothing written this turn, ask the backend whether it is reachable.
                let r = match &result {
                    Ok(_) if !wrote => store.check(),
                    r => r.as_ref().map(|_| ()).map_err(Clone::clone),
                };
                let _ = reply.send(r);
            }
            Op::Stop => {}
        }
    }
}
