//! Test harness: runs the real `imserver` binary on free loopback ports with its own data
//! directory (and, for TLS, a fresh certificate); [`client`] speaks to it over real sockets.
#![allow(dead_code)]

pub mod api;
pub mod client;
pub mod cluster;
pub mod link;
pub mod sdk;

pub use client::*;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use im_protocol::MsgId;
use im_shards::TokenAuth;

pub const SECRET: &str = "test-secret";
/// The HTTP API's admin secret in tests.
pub const ADMIN: &str = "test-admin-secret";

/// Which I/O driver the server under test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl Driver {
    fn arg(self) -> &'static str {
        match self {
            Driver::IoUring => "io-uring",
            Driver::Epoll => "epoll",
        }
    }
}

thread_local! {
    /// The driver of the test running on this thread (see [`under_both_drivers`]).
    static DRIVER: std::cell::Cell<Driver> = const { std::cell::Cell::new(Driver::IoUring) };
}

/// The driver the current test runs its servers under.
pub fn driver() -> Driver {
    DRIVER.with(|d| d.get())
}

/// Runs `f` with [`driver`] answering `d` (each test has its own thread).
pub fn run_with(d: Driver, f: impl FnOnce()) {
    DRIVER.with(|x| x.set(d));
    f()
}

/// Generates `$name::io_uring` and `$name::epoll` tests calling `$name()`, with
/// [`driver`] answering the driver: for test files whose helpers start the servers.
#[macro_export]
macro_rules! under_both_drivers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn io_uring() {
                $crate::common::run_with($crate::common::Driver::IoUring, super::$name)
            }
            #[test]
            fn epoll() {
                $crate::common::run_with($crate::common::Driver::Epoll, super::$name)
            }
        }
    )*};
}

/// Generates `$name::io_uring` and `$name::epoll` tests calling `$name(driver)`.
#[macro_export]
macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn io_uring() {
                super::$name($crate::common::Driver::IoUring)
            }
            #[test]
            fn epoll() {
                super::$name($crate::common::Driver::Epoll)
            }
        }
    )*};
}

/// A port no other server of this test process was given. The kernel may hand a port just
/// released to the next `bind(0)`, and the server listens with SO_REUSEPORT, so two tests
/// running at once could otherwise both listen on it and get each other's clients.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A running server process.
pub struct Server {
    child: Option<Child>,
    pub tcp_port: u16,
    pub ws_port: u16,
    /// The HTTP API.
    pub http_port: u16,
    /// TLS ports (served when started with [`Server::start_tls`]).
    pub wss_port: u16,
    pub tls_tcp_port: u16,
    /// Client configuration trusting the server's test certificate.
    pub tls_client: Option<Arc<rustls::ClientConfig>>,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    _cert_dir: Option<tempfile::TempDir>,
    driver: Driver,
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts a server with 2 shards and `env` config overrides (`IMSERVER_...`).
    pub fn start(driver: Driver, env: &[(&str, &str)]) -> Server {
        Self::start_with(driver, env, |_| {})
    }

    /// Like [`Server::start`], running `setup` (e.g. [`Server::cli`]) before the process
    /// starts.
    pub fn start_with(driver: Driver, env: &[(&str, &str)], setup: impl FnOnce(&Server)) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = Server {
            child: None,
            tcp_port: 0,
            ws_port: 0,
            http_port: 0,
            wss_port: 0,
            tls_tcp_port: 0,
            tls_client: None,
            data_dir: tmp.path().join("data"),
            _tmp: Some(tmp),
            _cert_dir: None,
            driver,
            env: env
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        };
        setup(&s);
        s.spawn();
        s
    }

    /// Like [`Server::start`], with the embedded stores in `data_dir`.
    pub fn start_in(driver: Driver, env: &[(&str, &str)], data_dir: PathBuf) -> Server {
        let mut s = Self::start_with(driver, env, |_| {});
        s.stop();
        s.data_dir = data_dir;
        s.spawn();
        s
    }

    /// Starts a server with TLS on (a fresh self-signed certificate for `localhost`, made
    /// with rcgen); clients of kind `TcpTls` / `Wss` trust exactly that certificate.
    pub fn start_tls(driver: Driver, env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("self-signed certificate");
        let (cert_path, key_path) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(cert.der().clone())
            .expect("trust the test certificate");
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let (c, k) = (
            cert_path.display().to_string(),
            key_path.display().to_string(),
        );
        let mut all: Vec<(&str, &str)> = vec![
            ("IMSERVER_TLS__ENABLED", "true"),
            ("IMSERVER_TLS__CERT_PATH", &c),
            ("IMSERVER_TLS__KEY_PATH", &k),
        ];
        all.extend_from_slice(env);
        let mut s = Server::start(driver, &all);
        s.tls_client = Some(Arc::new(client));
        s._cert_dir = Some(tmp);
        s
    }

    /// Runs `imserver <args>` (a CLI command) with this server's data directory and
    /// configuration; returns (success, stdout + stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_imserver"))
            .args(["--config", "/dev/null", "--data-dir"])
            .arg(&self.data_dir)
            .args(args)
            .env("IMSERVER_AUTH__SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(a, b)| (a.as_str(), b.as_str())))
            .output()
            .expect("run imserver cli");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    fn spawn(&mut self) {
        for attempt in 0..5 {
            self.tcp_port = free_port();
            self.ws_port = free_port();
            self.http_port = free_port();
            self.wss_port = free_port();
            self.tls_tcp_port = free_port();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_imserver"));
            cmd.args([
                "--config",
                "/dev/null",
                "--shards",
                "2",
                "--bind",
                "127.0.0.1",
            ])
            .args(["--driver", self.driver.arg()])
            .args(["--tcp-port", &self.tcp_port.to_string()])
            .args(["--ws-port", &self.ws_port.to_string()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("IMSERVER_AUTH__SECRET", SECRET)
            .env("IMSERVER_CONTROL__PORT", self.http_port.to_string())
            .env("IMSERVER_TLS__WSS_PORT", self.wss_port.to_string())
            .env("IMSERVER_TLS__TCP_PORT", self.tls_tcp_port.to_string())
            .env("IMSERVER_CONTROL__ADMIN_SECRET", ADMIN)
            .env("IMSERVER_RUNTIME__PIN_CORES", "false")
            .env("IMSERVER_SESSION__CLOSE_LINGER_MS", "200")
            // TEST_SERVER_LOG=debug shows the servers' logs when a test needs a look inside.
            .env(
                "RUST_LOG",
                std::env::var("TEST_SERVER_LOG")
                    .as_deref()
                    .unwrap_or("warn"),
            )
            .envs(self.env.iter().map(|(a, b)| (a.as_str(), b.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
            let mut child = cmd.spawn().expect("spawn imserver");
            let stdout = child.stdout.take().expect("stdout");
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
                while let Some(Ok(l)) = lines.next() {
                    if l == "ready" {
                        let _ = tx.send(());
                    }
                }
            });
            if rx.recv_timeout(Duration::from_secs(15)).is_ok() {
                self.child = Some(child);
                return;
            }
            // Most likely a port taken between probing and binding: try other ports.
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("server did not start (attempt {attempt}), retrying");
        }
        panic!("server did not start");
    }

    /// `GET path` on the HTTP API (no auth): status and body text.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let url = format!("http://127.0.0.1:{}{path}", self.http_port);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut resp = agent.get(&url).call().expect("HTTP GET");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    assert!(status.success(), "server exited with {status}");
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "server did not stop after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stops with SIGTERM and starts again on the same data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn connect(&self, uid: u32, kind: Kind) -> Client {
        Client::login(self, uid, kind, &token(uid))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn token(uid: u32) -> String {
    TokenAuth::new(SECRET)
        .mint(uid, Duration::from_secs(3600))
        .expect("token")
}

/// A message id made of a number, as 32 hex characters.
pub fn msg_id(n: u64) -> MsgId {
    let s = format!("{n:032x}");
    let mut id = [0u8; 32];
    id.copy_from_slice(s.as_bytes());
    id
}

/// The `content` of a JSON-enveloped push.
pub fn content(payload: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(payload).expect("json envelope");
    v["content"].as_str().expect("content").to_string()
}

/// The `im_*` metric names in the shipped Grafana dashboard's queries, of the panels whose
/// title `keep` accepts (rows have no queries).
pub fn dashboard_metrics(keep: impl Fn(&str) -> bool) -> std::collections::BTreeSet<String> {
    let json = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana-dashboard.json"
    ))
    .expect("deploy/grafana-dashboard.json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("dashboard JSON");
    let mut out = std::collections::BTreeSet::new();
    for panel in v["panels"].as_array().expect("panels") {
        if !keep(panel["title"].as_str().unwrap_or("")) {
            continue;
        }
        for t in panel["targets"].as_array().into_iter().flatten() {
            let mut rest = t["expr"].as_str().expect("expr");
            while let Some(i) = rest.find("im_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                out.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    out
}
