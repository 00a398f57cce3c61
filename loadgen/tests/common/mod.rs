//! Shared by the loadgen tests: the real server binary (from the same `cargo test` run) on
//! free ports with a data directory that survives restarts, and loadgen runs read back as
//! JSON.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn wait_port(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server under test: ports and data directory fixed at creation, so it can be killed
/// and started again on the same ones.
pub struct Server {
    pub proc: Option<Proc>,
    pub dir: tempfile::TempDir,
    pub tcp: u16,
    pub ws: u16,
    pub wss: u16,
    pub tls_tcp: u16,
    pub control: u16,
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts the server (TLS on, with a fresh self-signed certificate) with `env` overrides.
    pub fn start(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).expect("write cert");
        std::fs::write(dir.path().join("key.pem"), cert.key_pair.serialize_pem())
            .expect("write key");
        let mut s = Server {
            proc: None,
            dir,
            tcp: free_port(),
            ws: free_port(),
            wss: free_port(),
            tls_tcp: free_port(),
            control: free_port(),
            env: env
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        };
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        let exe = bin_dir().join("imserver");
        assert!(
            exe.exists(),
            "{} not built: run the workspace tests (`cargo test`) or `cargo build -p imserver` first",
            exe.display()
        );
        let d = self.dir.path();
        let q = |p: PathBuf| format!("\"{}\"", p.display());
        let child = Command::new(exe)
            .args([
                "--tcp-port",
                &self.tcp.to_string(),
                "--ws-port",
                &self.ws.to_string(),
            ])
            .args([
                "--bind",
                "127.0.0.1",
                "--shards",
                "2",
                "--log-level",
                "warn",
            ])
            .arg("--data-dir")
            .arg(d.join("data"))
            .env("IMSERVER_CONTROL__PORT", self.control.to_string())
            .env("IMSERVER_TLS__ENABLED", "true")
            .env("IMSERVER_TLS__CERT_PATH", q(d.join("cert.pem")))
            .env("IMSERVER_TLS__KEY_PATH", q(d.join("key.pem")))
            .env("IMSERVER_TLS__WSS_PORT", self.wss.to_string())
            .env("IMSERVER_TLS__TCP_PORT", self.tls_tcp.to_string())
            .envs(self.env.iter().map(|(a, b)| (a, b)))
            .stdout(Stdio::null())
            .spawn()
            .expect("start imserver");
        self.proc = Some(Proc(child));
        for port in [self.tcp, self.ws, self.wss, self.control] {
            wait_port(port);
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, |p| p.0.id())
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.0.kill();
            let _ = p.0.wait();
        }
    }

    /// SIGTERM, then waits for the graceful shutdown to finish.
    pub fn terminate(&mut self) {
        if let Some(mut p) = self.proc.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(p.0.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while p.0.try_wait().ok().flatten().is_none() {
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "no exit 30 s after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `im_messages_total{event="accepted"}` from the server's `/metrics` (0 while the
    /// server does not answer).
    pub fn accepted(&self) -> u64 {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.control)) else {
            return 0;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let req = "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
        let mut text = String::new();
        if s.write_all(req.as_bytes()).is_err() || s.read_to_string(&mut text).is_err() {
            return 0;
        }
        text.lines()
            .find(|l| l.starts_with("im_messages_total{event=\"accepted\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.control)
    }
}

pub fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loadgen"))
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

/// The loadgen command with the settings every test uses.
pub fn loadgen_cmd(duration: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    c.args([
        "--json",
        "--quiet",
        "--threads",
        "2",
        "--duration",
        duration,
    ])
    .args(["--drain-timeout", "10s"]);
    c
}

/// Parses a finished run's JSON report.
pub fn report(out: &Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {stderr}"))
}

/// Runs loadgen; asserts it exited 0 and returns its report.
pub fn loadgen(args: &[&str]) -> serde_json::Value {
    let out = loadgen_cmd("1500ms")
        .args(args)
        .output()
        .expect("run loadgen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadgen {args:?} failed: {stderr}");
    report(&out)
}

/// No loss, duplication, reordering or errors, and some traffic.
pub fn assert_clean(r: &serde_json::Value) {
    for k in ["lost", "duplicated", "reordered", "unexpected"] {
        assert_eq!(r[k], 0, "{k} in {r}");
    }
    assert!(r["delivered"].as_u64().unwrap_or(0) > 0, "no traffic: {r}");
    assert!(
        r["errors"].as_object().is_some_and(|e| e.is_empty()),
        "errors: {r}"
    );
}
