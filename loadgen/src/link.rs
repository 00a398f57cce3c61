//! One logged-in connection at run time: an outbox that whatever wants to send appends to,
//! a writer task that empties it (so acks, heartbeat answers and publishes share writes), and
//! a reader task that turns what arrives into events for the thread's [`Local`] state.
//! Everything here lives on one loadgen thread (`Rc`, `RefCell`).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::conn::{Framer, Reader, Writer};
use crate::local::Local;
use crate::proto::{ConnState, Dest, Event, Proto};
use crate::stamp::Stamp;
use crate::window::Window;

/// A logged-in connection of user `uid`.
pub struct Link {
    pub uid: u32,
    proto: Proto,
    out: RefCell<Vec<u8>>,
    framer: RefCell<Framer>,
    state: RefCell<ConnState>,
    /// The writer task, waiting for bytes.
    writer_waker: Cell<Option<Waker>>,
    /// Its publishes in flight and whether it closed, shared with the thread's `Local`.
    pub window: Rc<Window>,
}

impl Link {
    /// Starts the connection's reader and writer tasks on the current thread.
    pub fn start(
        uid: u32,
        proto: Proto,
        local: Rc<Local>,
        rd: Reader,
        wr: Writer,
        framer: Framer,
    ) -> Rc<Link> {
        let link = Rc::new(Link {
            uid,
            proto,
            out: RefCell::new(Vec::with_capacity(4096)),
            framer: RefCell::new(framer),
            state: RefCell::new(ConnState::default()),
            writer_waker: Cell::new(None),
            window: Rc::default(),
        });
        monoio::spawn(read_loop(link.clone(), local, rd));
        monoio::spawn(write_loop(link.clone(), wr));
        link
    }

    /// Queues one publish.
    pub fn publish(&self, dest: Dest, s: Stamp, payload: &[u8]) {
        {
            let mut out = self.out.borrow_mut();
            let mut st = self.state.borrow_mut();
            let mut fr = self.framer.borrow_mut();
            self.proto
                .publish(&mut st, &mut fr, &mut out, dest, s, payload);
        }
        self.window.sent();
        self.wake_writer();
    }

    /// Ends the connection: the writer flushes what is queued and shuts the socket down.
    pub fn close(&self) {
        self.window.close();
        self.wake_writer();
    }

    fn wake_writer(&self) {
        if let Some(w) = self.writer_waker.take() {
            w.wake();
        }
    }
}

async fn write_loop(link: Rc<Link>, mut wr: Writer) {
    let mut spare = Vec::with_capacity(4096);
    loop {
        poll_fn(|cx| {
            if !link.out.borrow().is_empty() || link.window.closed.get() {
                Poll::Ready(())
            } else {
                link.writer_waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
        std::mem::swap(&mut spare, &mut *link.out.borrow_mut());
        if !spare.is_empty() {
            match wr.write(std::mem::take(&mut spare)).await {
                Ok(mut buf) => {
                    buf.clear();
                    spare = buf;
                }
                Err(_) => {
                    link.window.closed.set(true);
                    return;
                }
            }
        } else if link.window.closed.get() {
            wr.shutdown().await;
            return;
        }
    }
}

async fn read_loop(link: Rc<Link>, local: Rc<Local>, mut rd: Reader) {
    // What the login left in the buffer (pushes right behind the CONNECT_ACK) first.
    loop {
        let r = {
            let mut out = link.out.borrow_mut();
            let mut st = link.state.borrow_mut();
            let mut fr = link.framer.borrow_mut();
            link.proto
                .on_read(&mut st, &mut rd, &mut fr, &mut out, |ev| {
                    local.on_event(link.uid, &link.window, ev)
                })
        };
        if let Err(e) = r {
            local.error("protocol");
            tracing_free_log(&e);
            break;
        }
        link.wake_writer();
        match rd.fill().await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if !link.window.closed.get() {
        local.on_event(link.uid, &link.window, Event::Closed);
    }
    link.window.closed.set(true);
    link.wake_writer();
}

/// The load generator keeps stderr for its progress line; protocol errors are counted, and
/// the first few are printed.
fn tracing_free_log(e: &str) {
    thread_local!(static SHOWN: Cell<u32> = const { Cell::new(0) });
    SHOWN.with(|n| {
        if n.get() < 5 {
            n.set(n.get() + 1);
            eprintln!("\nloadgen: protocol error from target: {e}");
        }
    });
}
