//! The shard's wake task: gives sleeping connections (see [`crate::net::plain`]) their
//! tasks again, when output is queued for them or the sleep set reports input.

use std::future::{poll_fn, Future};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use monoio::io::Splitable;

use super::Shard;
use crate::engine::ConnId;
use crate::net::input::SocketInput;
use crate::net::plain::plain_conn;
use crate::net::sleep::Sleepers;
use crate::net::transport::Framing;

impl Shard {
    /// Gives sleeping connections (output for them, or input reported by the sleep set)
    /// their tasks again. Runs until the runtime ends.
    pub(super) async fn wake_loop(self: Rc<Self>) {
        let watcher = match self.conns.borrow().sleepers().map(Sleepers::watcher) {
            Some(Ok(w)) => Some(w),
            Some(Err(e)) => {
                tracing::warn!(shard = self.id, error = %e, "connections will not sleep");
                None
            }
            None => None,
        };
        if watcher.is_none() {
            // Nothing can sleep without a way to wake: stop the sweep from asking.
            self.conns.borrow_mut().disable_sleep();
        }
        let mut woken = Vec::new();
        loop {
            let mut input = watcher.as_ref().map(|w| Box::pin(w.readable(false)));
            loop {
                let epoll = poll_fn(|cx| {
                    if let Some(Poll::Ready(r)) = input.as_mut().map(|f| f.as_mut().poll(cx)) {
                        return Poll::Ready(Some(r));
                    }
                    if self.conns.borrow_mut().poll_woken(cx, &mut woken) {
                        return Poll::Ready(None);
                    }
                    Poll::Pending
                })
                .await;
                for conn in woken.drain(..) {
                    self.resume(conn, false);
                }
                match epoll {
                    None => continue,
                    Some(Ok(())) => break,
                    Some(Err(e)) => {
                        tracing::warn!(shard = self.id, error = %e, "sleep set wait failed");
                        monoio::time::sleep(Duration::from_millis(20)).await;
                        break;
                    }
                }
            }
            drop(input.take());
            if let Some(sl) = self.conns.borrow().sleepers() {
                sl.ready(&mut woken);
            }
            for conn in woken.drain(..) {
                self.resume(conn, true);
            }
        }
    }

    /// A new task for a sleeping connection. `has_input`: the sleep set reported input.
    fn resume(self: &Rc<Self>, conn: ConnId, has_input: bool) {
        let Some((stream, kind)) = self.conns.borrow_mut().wake(conn) else {
            return;
        };
        let fd = stream.as_raw_fd();
        let (rd, wr) = stream.into_split();
        let input = SocketInput::resume(rd, fd, has_input);
        let framing = Framing::new(kind);
        monoio::spawn(plain_conn(self.clone(), conn, input, framing, wr, fd));
    }
}
