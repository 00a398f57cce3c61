//! A throwaway `redis-server` for the tests and benchmarks that need a real one.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` process on a free loopback port with its own directory, no
/// persistence, killed on drop. Needs `redis-server` on `PATH` (`scripts/test` installs it).
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts with extra `redis-server` arguments (e.g. `--appendonly yes`), which come after
    /// the defaults and override them.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = RedisServer {
            child: None,
            port: 0,
            dir,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            _tmp: tmp,
        };
        s.spawn(None);
        s
    }

    fn spawn(&mut self, port: Option<u16>) {
        for _ in 0..5 {
            let port = port.unwrap_or_else(free_port);
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&self.dir)
                .args(&self.extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("redis-server not found: install it (scripts/test does)");
            if wait_ready(&mut child) {
                self.child = Some(child);
                self.port = port;
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
    }

    /// Kills the server (SIGKILL: as abrupt as an outage).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: it keeps no data).
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(10);
        // The port may linger for a moment after the kill.
        while TcpListener::bind(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.spawn(Some(port));
    }

    /// Runs `redis-cli` against database `db` and returns its output.
    pub fn cli(&self, db: u8, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "-n", &db.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits for the "Ready to accept connections" log line.
fn wait_ready(child: &mut Child) -> bool {
    let Some(out) = child.stdout.take() else {
        return false;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("Ready to accept connections") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10)).is_ok()
}
