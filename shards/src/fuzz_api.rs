//! Entry points for the fuzz targets (`fuzz/`), compiled with the `fuzz-api` feature (and
//! for this crate's unit tests): the read path's parse loop ([`crate::net::conn`]'s `parse`, with its transport framing
//! and the lookahead that hints packets before they are fed) over untrusted bytes, with a
//! host that records what the engine would have been handed instead of running one.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Context, Poll};

use crate::config::CoreConfig;
use crate::engine::{ConnId, Event, Time};
use crate::net::conn::{parse, Host};
use crate::net::table::ConnTable;
use crate::net::transport::{Framing, TransportKind};

/// How many packets ahead of the one being fed the parse loop hints.
pub const LOOKAHEAD: usize = crate::net::conn::LOOKAHEAD;

/// What the parse loop handed the engine for one stream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Packets fed, in order.
    pub fed: Vec<Vec<u8>>,
    /// Packets hinted ahead of being fed, in order.
    pub hinted: Vec<Vec<u8>>,
    /// For each packet fed: how many packets the read it came in had hinted by then.
    pub hinted_at_feed: Vec<usize>,
    /// Replies (WebSocket pong and close frames), in order.
    pub replies: Vec<Vec<u8>>,
    /// The session was stopped (bad input or a WebSocket close).
    pub stopped: bool,
}

#[derive(Default)]
struct Recorder {
    cfg: CoreConfig,
    out: RefCell<Parsed>,
    /// Packets hinted during the current read.
    read_hints: Cell<usize>,
    scratch: RefCell<Vec<u8>>,
    conns: RefCell<ConnTable>,
}

impl Host for Recorder {
    fn cfg(&self) -> &CoreConfig {
        &self.cfg
    }

    fn now(&self) -> Time {
        Time(0)
    }

    fn feed(self: &Rc<Self>, _t: Time, ev: Event<'_>) {
        let mut out = self.out.borrow_mut();
        match ev {
            Event::Packet { bytes, .. } => {
                out.fed.push(bytes.to_vec());
                out.hinted_at_feed.push(self.read_hints.get());
            }
            Event::Reply { bytes, .. } => out.replies.push(bytes),
            Event::ReadDone { stop, .. } => {
                out.stopped |= stop.is_some();
                self.read_hints.set(0);
            }
            _ => {}
        }
    }

    fn after_dispatch(&self) {}

    fn dispatch(self: &Rc<Self>, ev: Event<'_>) {
        self.feed(Time(0), ev);
    }

    fn is_open(&self, _conn: ConnId) -> bool {
        !self.out.borrow().stopped
    }

    fn prefetch(&self, _conn: ConnId, packet: &[u8]) {
        self.out.borrow_mut().hinted.push(packet.to_vec());
        self.read_hints.set(self.read_hints.get() + 1);
    }

    fn poll_readable(&self, _conn: ConnId, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }

    fn conn_done(&self, _conn: ConnId) {}

    fn read_scratch(&self) -> &RefCell<Vec<u8>> {
        &self.scratch
    }

    fn conns(&self) -> &RefCell<ConnTable> {
        &self.conns
    }
}

/// Runs the parse loop over `chunks` as successive reads of one connection (length-prefixed
/// framing, or WebSocket frames from a client when `ws`), keeping what a read left
/// unparsed for the next one, as the connection's input does. Stops where the session
/// would: bad input or a close.
pub fn parse_reads(ws: bool, chunks: &[&[u8]], max: usize) -> Parsed {
    let host = Rc::new(Recorder::default());
    let kind = if ws {
        TransportKind::Ws
    } else {
        TransportKind::Tcp
    };
    let mut framing = Framing::new(kind);
    let mut carry = Vec::new();
    for chunk in chunks {
        carry.extend_from_slice(chunk);
        let (n, open) = parse(&host, 1, &mut carry, &mut framing, max);
        carry.drain(..n.min(carry.len()));
        if !open {
            break;
        }
    }
    host.out.take()
}
