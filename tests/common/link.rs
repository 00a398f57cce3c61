//! A TCP link a test can freeze: it forwards connections from its own port to a target,
//! and while frozen it moves no byte in either direction (what it has read waits), like a
//! network so slow that nothing gets through; thawed, everything held goes on in order.
//! Plain threads, so tests without a runtime can use it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct SlowLink {
    pub port: u16,
    frozen: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

impl SlowLink {
    pub fn start(target_port: u16) -> SlowLink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (f, d) = (frozen.clone(), done.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                if d.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(inbound) = inbound else { continue };
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                for (from, to) in [
                    (inbound.try_clone(), outbound.try_clone()),
                    (outbound.try_clone(), inbound.try_clone()),
                ] {
                    if let (Ok(from), Ok(to)) = (from, to) {
                        let f = f.clone();
                        std::thread::spawn(move || pump(from, to, &f));
                    }
                }
            }
        });
        SlowLink { port, frozen, done }
    }

    /// Stops moving bytes (until [`SlowLink::thaw`]).
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        self.thaw();
        // Wakes the accept loop so it sees `done`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to`, holding what it read while `frozen`.
fn pump(mut from: TcpStream, mut to: TcpStream, frozen: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while frozen.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
