//! The contract every [`GroupStore`] backend must pass, and a throwaway `redis-server` for
//! the tests that need a real one.
//!
//! A backend's test file instantiates the suite with [`group_store_contract!`], giving a
//! function that opens a fresh, empty store (and a guard that keeps whatever it runs on
//! alive for the test).

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::GroupStore;

/// Runs a store future to completion on this thread (store futures are executor-agnostic).
pub fn wait<T>(f: impl Future<Output = T>) -> T {
    futures_executor::block_on(f)
}

fn members(s: &dyn GroupStore, gid: u32) -> Vec<u32> {
    wait(s.members(gid)).expect("members")
}

/// A group nobody created has no members and is not listed.
pub fn unknown_group_is_empty(s: &dyn GroupStore) {
    assert!(members(s, 42).is_empty());
    assert!(!wait(s.groups()).expect("groups").contains(&42));
}

/// Adding creates the group; members come back ascending and once each.
pub fn add_creates_sorted_unique(s: &dyn GroupStore) {
    assert_eq!(wait(s.add(7, vec![30, 10, 20, 10])).unwrap(), 3);
    assert_eq!(wait(s.add(7, vec![20, 40])).unwrap(), 1);
    assert_eq!(members(s, 7), [10, 20, 30, 40]);
    assert_eq!(wait(s.add(7, vec![])).unwrap(), 0);
}

/// Removing counts what was there; removing the last member removes the group.
pub fn remove_and_last_member(s: &dyn GroupStore) {
    wait(s.add(8, vec![1, 2, 3])).unwrap();
    assert_eq!(wait(s.remove(8, vec![2, 9])).unwrap(), 1);
    assert_eq!(members(s, 8), [1, 3]);
    assert_eq!(wait(s.remove(8, vec![1, 3])).unwrap(), 2);
    assert!(members(s, 8).is_empty());
    assert!(!wait(s.groups()).unwrap().contains(&8));
}

/// Delete reports whether the group existed.
pub fn delete_group(s: &dyn GroupStore) {
    wait(s.add(9, vec![5, 6])).unwrap();
    assert!(wait(s.delete(9)).unwrap());
    assert!(members(s, 9).is_empty());
    assert!(!wait(s.delete(9)).unwrap());
}

/// Neighbouring and extreme group ids keep their own members; listing is ascending.
pub fn groups_are_isolated_and_listed(s: &dyn GroupStore) {
    wait(s.add(u32::MAX, vec![1])).unwrap();
    wait(s.add(5, vec![u32::MAX, 2])).unwrap();
    wait(s.add(6, vec![3])).unwrap();
    assert_eq!(members(s, 5), [2, u32::MAX]);
    assert_eq!(members(s, 6), [3]);
    assert_eq!(members(s, u32::MAX), [1]);
    assert_eq!(wait(s.groups()).unwrap(), [5, 6, u32::MAX]);
}

/// Every change made through the store moves the group's version.
pub fn writes_bump_versions(s: &dyn GroupStore) {
    let v0 = s.versions().get(11);
    wait(s.add(11, vec![1])).unwrap();
    let v1 = s.versions().get(11);
    assert_ne!(v0, v1);
    wait(s.remove(11, vec![1])).unwrap();
    let v2 = s.versions().get(11);
    assert_ne!(v1, v2);
    wait(s.add(11, vec![1])).unwrap();
    wait(s.delete(11)).unwrap();
    assert_ne!(s.versions().get(11), v2);
}

/// A 10,000-member group round-trips.
pub fn large_group(s: &dyn GroupStore) {
    let uids: Vec<u32> = (1..=10_000).rev().collect();
    assert_eq!(wait(s.add(12, uids)).unwrap(), 10_000);
    let m = members(s, 12);
    assert_eq!(m.len(), 10_000);
    assert!(m.windows(2).all(|w| w[0] < w[1]));
}

/// Instantiates the group-store contract: `$open` is `fn() -> (Guard, S)` with
/// `S: GroupStore`; the guard lives until the case ends.
#[macro_export]
macro_rules! group_store_contract {
    ($open:expr) => {
        $crate::group_store_contract!(@cases $open;
            unknown_group_is_empty, add_creates_sorted_unique, remove_and_last_member,
            delete_group, groups_are_isolated_and_listed, writes_bump_versions, large_group);
    };
    (@cases $open:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                let (_guard, store) = $open();
                $crate::groups::contract::$case(&store);
            }
        )*
    };
}

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
