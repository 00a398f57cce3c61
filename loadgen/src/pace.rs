//! Pacing for fixed-rate runs: wakes a sender at its message's due time to within tens of
//! microseconds, where monoio's timer wheel rounds every sleep up to the next millisecond.
//!
//! One `timerfd` per loadgen thread, armed for the earliest due time of that thread's
//! waiting senders and read through the io_uring ring (the read completes when the timer
//! fires), so waiting costs no CPU: no spinning on a machine whose cores the target shares.
//! The threads' timer slack is set to 1 µs (`prctl(PR_SET_TIMERSLACK)`), else the kernel may
//! batch the expiry up to 50 µs late. Under the epoll driver (no io_uring), a read of the
//! timerfd would block the thread, so pacing falls back to monoio's millisecond sleep; the
//! pacing error in the report shows which one ran.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::poll_fn;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::stamp::now_us;

/// The waiting senders of one thread and the timer armed for the first of them.
struct Pacer {
    timer: OwnedFd,
    /// (due µs, ticket), earliest first.
    due: BinaryHeap<Reverse<(u64, u64)>>,
    wakers: HashMap<u64, Waker>,
    next_ticket: u64,
    /// The due time the timer is armed for (`u64::MAX`: disarmed).
    armed: u64,
    /// The task that reads the timer, while it waits for a first sender.
    idle: Option<Waker>,
}

thread_local! {
    static PACER: RefCell<Option<Rc<RefCell<Pacer>>>> = const { RefCell::new(None) };
}

/// Waits until `due_us` (on the [`now_us`] clock).
pub async fn sleep_until(due_us: u64) {
    let now = now_us();
    if due_us <= now {
        return;
    }
    let Some(pacer) = pacer() else {
        monoio::time::sleep(Duration::from_micros(due_us - now)).await;
        return;
    };
    let ticket = {
        let mut p = pacer.borrow_mut();
        let t = p.next_ticket;
        p.next_ticket += 1;
        p.due.push(Reverse((due_us, t)));
        if due_us < p.armed {
            p.arm(due_us);
        }
        if let Some(w) = p.idle.take() {
            w.wake();
        }
        t
    };
    poll_fn(|cx| {
        if now_us() >= due_us {
            pacer.borrow_mut().wakers.remove(&ticket);
            return Poll::Ready(());
        }
        pacer.borrow_mut().wakers.insert(ticket, cx.waker().clone());
        Poll::Pending
    })
    .await
}

/// This thread's pacer, started on first use; `None` where it cannot run (no io_uring, or no
/// timerfd).
fn pacer() -> Option<Rc<RefCell<Pacer>>> {
    // The threads run monoio's fusion driver: io_uring wherever the kernel has it.
    if !monoio::utils::detect_uring() {
        return None;
    }
    PACER.with(|cell| {
        if let Some(p) = cell.borrow().as_ref() {
            return Some(p.clone());
        }
        let p = Rc::new(RefCell::new(Pacer::new()?));
        monoio::spawn(fire_loop(p.clone()));
        *cell.borrow_mut() = Some(p.clone());
        Some(p)
    })
}

impl Pacer {
    fn new() -> Option<Self> {
        // SAFETY: plain system calls with valid arguments; the descriptor returned is
        // checked and owned from here on. Blocking (no TFD_NONBLOCK): io_uring waits for a
        // blocking read of a pollable file without blocking the thread.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: as above; 1 ns of slack for this thread's timers.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        Some(Self {
            // SAFETY: `fd` is a new, open descriptor nobody else owns.
            timer: unsafe { OwnedFd::from_raw_fd(fd) },
            due: BinaryHeap::new(),
            wakers: HashMap::new(),
            next_ticket: 0,
            armed: u64::MAX,
            idle: None,
        })
    }

    /// Arms the timer to fire at `due_us` (at least 1 µs from now).
    fn arm(&mut self, due_us: u64) {
        let us = due_us.saturating_sub(now_us()).max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (us / 1_000_000) as libc::time_t,
                tv_nsec: ((us % 1_000_000) * 1_000) as libc::c_long,
            },
        };
        // SAFETY: the timer is open; `spec` is valid; the old value is not asked for.
        unsafe { libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        self.armed = due_us;
    }

    /// Wakes every sender that is due and arms the timer for the next one.
    fn fire(&mut self) {
        let now = now_us();
        self.armed = u64::MAX;
        while let Some(&Reverse((due, ticket))) = self.due.peek() {
            if due > now {
                self.arm(due);
                break;
            }
            self.due.pop();
            if let Some(w) = self.wakers.remove(&ticket) {
                w.wake();
            }
        }
    }
}

/// Reads the timer each time it fires and wakes the senders that are due.
async fn fire_loop(p: Rc<RefCell<Pacer>>) {
    // SAFETY: a duplicate of the timer's descriptor, owned by this file from here on.
    let fd = unsafe { libc::dup(p.borrow().timer.as_raw_fd()) };
    if fd < 0 {
        return;
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    let std_file = unsafe { std::fs::File::from_raw_fd(fd) };
    let file = monoio::fs::File::from_std(std_file);
    let Ok(file) = file else {
        return;
    };
    let mut buf = vec![0u8; 8];
    loop {
        poll_fn(|cx| {
            let mut q = p.borrow_mut();
            if q.due.is_empty() {
                q.idle = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        let (res, b) = file.read_at(buf, 0).await;
        buf = b;
        if res.is_err() {
            // Should not happen; wake everyone rather than leave senders asleep.
            p.borrow_mut().fire();
            monoio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        p.borrow_mut().fire();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sleepers with due times in any order each wake no earlier than their time, every one
    /// wakes, and they wake in due order (the timer is re-armed for an earlier newcomer).
    /// How late they wake is measured by the runs (`pacing_error_us`), not asserted here.
    #[test]
    fn sleepers_wake_at_or_after_their_time_in_order() {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let woke = Rc::new(RefCell::new(Vec::new()));
            let base = now_us() + 2_000;
            let offsets = [900u64, 100, 500, 300, 700, 50, 1_000, 200];
            let mut tasks = Vec::new();
            for off in offsets {
                let woke = woke.clone();
                tasks.push(monoio::spawn(async move {
                    sleep_until(base + off).await;
                    let at = now_us();
                    assert!(at >= base + off, "woke {} µs early", base + off - at);
                    woke.borrow_mut().push(off);
                }));
            }
            for t in tasks {
                t.await;
            }
            let mut sorted = offsets.to_vec();
            sorted.sort_unstable();
            assert_eq!(*woke.borrow(), sorted);
        });
    }
}
