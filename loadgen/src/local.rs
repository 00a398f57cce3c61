//! A loadgen thread's state: the checks of every stream it receives, the histograms and the
//! counters the progress line reads. Every connection of a stream (its sender and all its
//! receivers) lives on the same thread, so nothing here is shared between threads but the
//! counters (each thread writes only its own).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use hdrhistogram::Histogram;

use crate::check::{StreamCheck, Verdict};
use crate::proto::Event;
use crate::stamp::{now_us, Stamp};
use crate::window::Window;

/// Live counters of one thread, read by the progress line.
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub delivered: AtomicU64,
    pub errors: AtomicU64,
    pub conns: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        // One writer per counter: a load and a store, no locked instruction.
        c.store(c.load(Relaxed) + n, Relaxed);
    }
}

/// Latency histograms, in microseconds.
pub struct Hists {
    /// Send → one receiver got it.
    pub delivery: Histogram<u64>,
    /// Send → the last member of the group got it.
    pub fanout: Histogram<u64>,
    /// Connect → logged in.
    pub connect: Histogram<u64>,
    /// Cluster (users' homes known): [`Hists::delivery`] split by whether the sender's and
    /// the receiver's home node are the same.
    pub same_node: Histogram<u64>,
    pub cross_node: Histogram<u64>,
    /// Runs at a rate: how late each message left against its schedule.
    pub pacing: Histogram<u64>,
}

pub fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits; the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds")
}

impl Default for Hists {
    fn default() -> Self {
        Hists {
            delivery: histogram(),
            fanout: histogram(),
            connect: histogram(),
            same_node: histogram(),
            cross_node: histogram(),
            pacing: histogram(),
        }
    }
}

/// Message-check totals of one thread.
#[derive(Debug, Default, Clone, Copy)]
pub struct Checks {
    pub duplicated: u64,
    pub reordered: u64,
    /// A stamp of this run on a connection that was not supposed to get that stream.
    pub unexpected: u64,
    /// Messages from another run or client (left-over offline messages, say).
    pub stale: u64,
    pub lost: u64,
    pub refused: u64,
}

pub struct Local {
    pub run: u32,
    pub counters: Arc<Counters>,
    pub hists: RefCell<Hists>,
    pub errors: RefCell<BTreeMap<String, u64>>,
    pub checks: RefCell<Checks>,
    streams: RefCell<HashMap<(u32, u32), StreamCheck>>,
    /// Cluster: per (receiver, stream), whether it crosses nodes (sender homed elsewhere).
    crosses: RefCell<HashMap<(u32, u32), bool>>,
    acked: RefCell<HashMap<u32, u32>>,
    /// Group streams: receivers per message.
    fanout_size: RefCell<HashMap<u32, u32>>,
    fanout_left: RefCell<HashMap<(u32, u32), u32>>,
    /// The window of each stream's sending connection, for streams with an end-to-end window.
    senders: RefCell<HashMap<u32, Rc<Window>>>,
    /// Set when the run is ending: closes are not errors any more.
    pub stopping: Cell<bool>,
    pub last_delivery_us: Cell<u64>,
    /// When this thread's measured phase began (sending; for `offline`, reconnecting).
    pub phase_start_us: Cell<u64>,
}

impl Local {
    pub fn new(run: u32, counters: Arc<Counters>) -> Local {
        Local {
            run,
            counters,
            hists: RefCell::new(Hists::default()),
            errors: RefCell::new(BTreeMap::new()),
            checks: RefCell::new(Checks::default()),
            streams: RefCell::new(HashMap::new()),
            crosses: RefCell::new(HashMap::new()),
            acked: RefCell::new(HashMap::new()),
            fanout_size: RefCell::new(HashMap::new()),
            fanout_left: RefCell::new(HashMap::new()),
            senders: RefCell::new(HashMap::new()),
            stopping: Cell::new(false),
            last_delivery_us: Cell::new(0),
            phase_start_us: Cell::new(now_us()),
        }
    }

    /// `receiver` is to get every message of `stream`.
    pub fn expect(&self, receiver: u32, stream: u32) {
        self.streams
            .borrow_mut()
            .insert((receiver, stream), StreamCheck::default());
    }

    /// Cluster: `stream` reaches `receiver` across nodes (`cross`) or on one node.
    pub fn placement(&self, receiver: u32, stream: u32, cross: bool) {
        self.crosses.borrow_mut().insert((receiver, stream), cross);
    }

    /// `stream` is a group stream with `receivers` members besides its sender.
    pub fn fanout(&self, stream: u32, receivers: u32) {
        self.fanout_size.borrow_mut().insert(stream, receivers);
    }

    /// `stream` is sent with an end-to-end window: its sender's `window` hears when each
    /// message has reached every recipient.
    pub fn track(&self, stream: u32, window: Rc<Window>) {
        self.senders.borrow_mut().insert(stream, window);
    }

    fn complete(&self, stream: u32) {
        if let Some(l) = self.senders.borrow().get(&stream) {
            l.completed();
        }
    }

    pub fn error(&self, kind: &str) {
        *self
            .errors
            .borrow_mut()
            .entry(kind.to_string())
            .or_default() += 1;
        Counters::add(&self.counters.errors, 1);
    }

    /// What arrived on the connection of user `uid`, whose publishes `window` tracks.
    pub fn on_event(&self, uid: u32, window: &Window, ev: Event) {
        match ev {
            Event::Delivered(Some(s)) if s.run == self.run => self.delivered(uid, s),
            Event::Delivered(_) => self.checks.borrow_mut().stale += 1,
            Event::Acked(s) => {
                if let Some(s) = s.filter(|s| s.run == self.run) {
                    let mut acked = self.acked.borrow_mut();
                    let a = acked.entry(s.stream).or_default();
                    *a = (*a).max(s.seq + 1);
                }
                Counters::add(&self.counters.acked, 1);
                window.answered();
            }
            Event::Refused(code) => {
                self.checks.borrow_mut().refused += 1;
                self.error(&format!("publish_refused_{code}"));
                window.answered();
                window.completed();
            }
            Event::Closed => {
                if !self.stopping.get() && !window.closed.get() {
                    self.error("closed_by_target");
                }
                window.closed.set(true);
            }
        }
    }

    fn delivered(&self, receiver: u32, s: Stamp) {
        let now = now_us();
        let lat = now.saturating_sub(s.t_us).max(1);
        {
            let mut h = self.hists.borrow_mut();
            let _ = h.delivery.record(lat);
            let crosses = self.crosses.borrow();
            if !crosses.is_empty() {
                match crosses.get(&(receiver, s.stream)) {
                    Some(true) => drop(h.cross_node.record(lat)),
                    Some(false) => drop(h.same_node.record(lat)),
                    None => {}
                }
            }
        }
        Counters::add(&self.counters.delivered, 1);
        self.last_delivery_us.set(now);
        let verdict = match self.streams.borrow_mut().get_mut(&(receiver, s.stream)) {
            Some(c) => c.observe(s.seq),
            None => {
                self.checks.borrow_mut().unexpected += 1;
                return;
            }
        };
        match verdict {
            Verdict::InOrder => {}
            Verdict::Reordered => self.checks.borrow_mut().reordered += 1,
            Verdict::Duplicate => {
                self.checks.borrow_mut().duplicated += 1;
                return;
            }
        }
        let size = self.fanout_size.borrow().get(&s.stream).copied();
        let Some(size) = size else {
            self.complete(s.stream);
            return;
        };
        let done = {
            let mut left = self.fanout_left.borrow_mut();
            let n = left.entry((s.stream, s.seq)).or_insert(size);
            *n -= 1;
            *n == 0 && left.remove(&(s.stream, s.seq)).is_some()
        };
        if done {
            let _ = self.hists.borrow_mut().fanout.record(lat);
            self.complete(s.stream);
        }
    }

    /// Acked messages not yet received, summed over every expected (receiver, stream).
    pub fn outstanding(&self) -> u64 {
        let acked = self.acked.borrow();
        self.streams
            .borrow()
            .iter()
            .map(|(&(_, stream), c)| c.lost(acked.get(&stream).copied().unwrap_or(0)))
            .sum()
    }

    /// Closes the books: what is still outstanding now is lost.
    pub fn finish(&self) -> Checks {
        let lost = self.outstanding();
        let mut c = self.checks.borrow_mut();
        c.lost = lost;
        *c
    }
}
