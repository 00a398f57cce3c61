//! The shard's set of sleeping connections: an epoll instance in which each sleeping plain
//! socket is armed once (`EPOLLONESHOT`) for input or hang-up, reported by connection id.
//!
//! A connection that has been quiet for a while ends its task and leaves only its socket
//! and table entry behind ([`crate::net::plain`]); this set is how input wakes it again.
//! The shard's wake task waits for this instance itself to become readable (one io_uring
//! poll, or one epoll registration under the legacy driver) and then collects every
//! connection that has input with one `epoll_wait` that does not block.
//!
//! Hand-written on `libc` rather than through mio: mio has no one-shot registration, and
//! without it every message to a connection that once slept would also wake this set.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::engine::ConnId;

/// Most events taken from the kernel per `epoll_wait`.
const BATCH: usize = 256;

pub(crate) struct Sleepers {
    ep: OwnedFd,
}

impl Sleepers {
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new descriptor
        // that nothing else owns.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        Ok(Self {
            ep: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` until it has input or hangs up, once; reported as `conn`. `known`: the
    /// socket is in the set already (it slept before and was disarmed by its last event).
    pub fn arm(&self, fd: RawFd, conn: ConnId, known: bool) -> io::Result<()> {
        let op = if known {
            libc::EPOLL_CTL_MOD
        } else {
            libc::EPOLL_CTL_ADD
        };
        match self.ctl(op, fd, conn) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.ctl(libc::EPOLL_CTL_ADD, fd, conn)
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.ctl(libc::EPOLL_CTL_MOD, fd, conn)
            }
            r => r,
        }
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, conn: ConnId) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: conn,
        };
        // SAFETY: `ev` is a valid epoll_event for the call's duration; the kernel checks
        // both descriptors.
        if unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Appends the connections that have input now (without waiting).
    pub fn ready(&self, out: &mut Vec<ConnId>) {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
        loop {
            // SAFETY: `evs` has room for BATCH events; timeout 0 never blocks.
            let n =
                unsafe { libc::epoll_wait(self.ep.as_raw_fd(), evs.as_mut_ptr(), BATCH as i32, 0) };
            if n <= 0 {
                return;
            }
            out.extend(evs[..n as usize].iter().map(|e| e.u64));
            if (n as usize) < BATCH {
                return;
            }
        }
    }

    /// A second descriptor of the instance, for the runtime to wait on its readiness
    /// (monoio has readiness waits only on its socket types, so it is wrapped in one; only
    /// `readable` is ever called on it).
    pub fn watcher(&self) -> io::Result<monoio::net::TcpStream> {
        let dup = self.ep.try_clone()?;
        monoio::net::TcpStream::from_std(std::net::TcpStream::from(dup))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn an_armed_socket_is_reported_once_per_arming() {
        let s = Sleepers::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut got = Vec::new();
        s.arm(a.as_raw_fd(), 7, false).unwrap();
        s.ready(&mut got);
        assert!(got.is_empty(), "nothing to read yet");
        b.write_all(b"x").unwrap();
        s.ready(&mut got);
        assert_eq!(got, vec![7]);
        // One shot: more input does not report it again until it is armed again.
        b.write_all(b"y").unwrap();
        got.clear();
        s.ready(&mut got);
        assert!(got.is_empty());
        s.arm(a.as_raw_fd(), 8, true).unwrap();
        s.ready(&mut got);
        assert_eq!(got, vec![8], "unread input reports at once when re-armed");
        // A hang-up is reported too; `known` that is wrong is corrected.
        let (c, d) = UnixStream::pair().unwrap();
        s.arm(c.as_raw_fd(), 9, true).unwrap();
        drop(d);
        got.clear();
        s.ready(&mut got);
        assert_eq!(got, vec![9]);
    }
}
