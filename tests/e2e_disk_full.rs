//! Disk full under the embedded store: the data directory is a small tmpfs. Publishes that
//! need storage are refused with a clear error (PUB_ERR 500, `before_ack`) while the disk is
//! full, the server keeps running, and once space returns everything that was acked is
//! still there after a restart (the store is not corrupted).
//!
//! Mounting a tmpfs needs root (CAP_SYS_ADMIN); without it the test says SKIPPED and why.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{content, msg_id, Driver, Kind, Recv, Server};
use im_protocol::ServerPacket;

const S: Duration = Duration::from_secs(1);

/// A mounted tmpfs; the temporary directory holding the mount point lives as long as it.
struct Tmpfs(std::path::PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(path, dir))
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount {size}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn disk_full_refuses_then_recovers_without_corruption(d: Driver) {
    let Some(fs) = Tmpfs::mount("4m") else {
        eprintln!("SKIPPED disk_full: mounting a tmpfs needs root (CAP_SYS_ADMIN)");
        return;
    };
    let mut srv = Server::start_in(
        d,
        &[("IMSERVER_DELIVERY__PERSIST", "before_ack")],
        fs.0.join("data"),
    );
    let mut a = srv.connect(10, Kind::Tcp);
    // 11 is offline: every message goes to the store. 20 KB each; the disk holds ~200.
    let payload = vec![b'x'; 20_000];
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..400u64 {
        a.publish(11, &msg_id(i), &payload);
        let p = a.recv_packet();
        match ServerPacket::decode(&p) {
            Ok(ServerPacket::PubAck { .. }) => acked.push(i),
            Ok(ServerPacket::PubErr { code, .. }) => {
                assert_eq!(code, 500, "storage failure is PUB_ERR 500");
                refused += 1;
                if refused >= 5 {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        refused >= 5,
        "the disk never filled ({} acked)",
        acked.len()
    );
    assert!(!acked.is_empty(), "some were stored before it filled");
    // The server is alive and says why it is not ready.
    let (status, body) = srv.http_get("/readyz");
    eprintln!(
        "disk full: {} acked, then refused; /readyz {status}: {body}",
        acked.len()
    );
    // Space returns: publishing works again (possibly after the store's retry).
    fs.resize("64m");
    let mut ok = false;
    for i in 1000..1100u64 {
        a.publish(11, &msg_id(i), b"after");
        match ServerPacket::decode(&a.recv_packet()) {
            Ok(ServerPacket::PubAck { .. }) => {
                acked.push(i);
                ok = true;
                break;
            }
            Ok(ServerPacket::PubErr { .. }) => std::thread::sleep(S / 5),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(ok, "publishing works again once space returns");
    std::thread::sleep(S / 2);
    let (status, body) = srv.http_get("/readyz");
    assert_eq!(status, 200, "ready again: {body}");
    // Restart on the same files: everything acked is delivered, in order.
    drop(a);
    srv.restart();
    let mut b = srv.connect(11, Kind::Tcp);
    for &i in &acked {
        let (id, p) = b.recv_push_ack();
        assert_eq!(id, msg_id(i));
        let c = content(&p);
        assert!(c == "after" || c.len() == 20_000);
    }
    assert_eq!(b.recv(S), Recv::Timeout, "nothing else");
}

both_drivers!(disk_full_refuses_then_recovers_without_corruption);
