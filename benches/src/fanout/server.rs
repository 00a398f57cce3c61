//! Running the server under test: groups written with the CLI, then the process, killed
//! when the measurement ends.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::{scenario, SECRET, SIZES};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn start_server(bin: &PathBuf, data: &std::path::Path, port: u16, ws: u16, chunk: usize) -> Child {
    for &n in &SIZES {
        let mut cmd = Command::new(bin);
        cmd.args(["--config", "/dev/null", "--data-dir"])
            .arg(data)
            .args(["group", "add", &n.to_string()])
            .args((1..=n).map(|u| u.to_string()));
        let out = cmd.output().expect("run imserver group add");
        assert!(out.status.success(), "group add: {out:?}");
    }
    let mut child = Command::new(bin)
        .args([
            "--config",
            "/dev/null",
            "--shards",
            "2",
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tcp-port",
            &port.to_string(),
            "--ws-port",
            &ws.to_string(),
        ])
        .arg("--data-dir")
        .arg(data)
        .env("IMSERVER_AUTH__SECRET", SECRET)
        .env("IMSERVER_CONTROL__ENABLED", "false")
        .env("IMSERVER_DELIVERY__REDELIVERY_INTERVAL_MS", "30000")
        .env("IMSERVER_GROUPS__FANOUT_CHUNK", chunk.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn imserver");
    let out = child.stdout.take().expect("stdout");
    let lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    for l in lines.map_while(Result::ok) {
        if l == "ready" {
            return child;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("server did not start");
}

/// Kills the server when the benchmark ends, also on a panic.
struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server with this chunk setting and measures it; returns the report section.
pub fn run_one(bin: &PathBuf, chunk: usize) -> String {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (port, ws) = (free_port(), free_port());
    let _server = ServerGuard(start_server(bin, tmp.path(), port, ws, chunk));
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("runtime")
        .block_on(scenario::bench(port, chunk))
}

pub fn nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    r.rlim_cur
}
