//! Test harness: runs the real `imserver` binary on free loopback ports with its own data
//! directory, and speaks to it over real sockets as a TCP client (our codec) or a WebSocket
//! client (`tungstenite`, an independent implementation).
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use im_protocol::{framing, ClientPacket, MsgId, ServerPacket};
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
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
            .env("RUST_LOG", "warn")
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Ws,
    /// TCP framing inside TLS (the server must run with TLS: [`Server::start_tls`]).
    TcpTls,
    /// WebSocket inside TLS.
    Wss,
}

/// A client socket: plain TCP or TLS over TCP (rustls, a real TLS implementation).
pub trait Io: Read + Write + Send {
    fn sock(&self) -> &TcpStream;
}

impl Io for TcpStream {
    fn sock(&self) -> &TcpStream {
        self
    }
}

impl Io for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn sock(&self) -> &TcpStream {
        &self.sock
    }
}

enum Conn {
    Tcp(Box<dyn Io>, Vec<u8>),
    Ws(Box<tungstenite::WebSocket<Box<dyn Io>>>),
}

/// What a receive saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    Packet(Vec<u8>),
    Timeout,
    Closed,
}

/// A protocol client over a real socket.
pub struct Client {
    conn: Conn,
}

pub fn connect_packet(uid: &str, password: &str, flags: Option<u8>) -> Vec<u8> {
    ClientPacket::Connect {
        username: uid.as_bytes(),
        password: password.as_bytes(),
        role: Some(1),
        flags,
    }
    .to_vec()
}

impl Client {
    /// Opens the transport only (no CONNECT sent).
    pub fn raw(server: &Server, kind: Kind) -> Client {
        let port = match kind {
            Kind::Tcp => server.tcp_port,
            Kind::Ws => server.ws_port,
            Kind::TcpTls => server.tls_tcp_port,
            Kind::Wss => server.wss_port,
        };
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).ok();
        let io: Box<dyn Io> = match kind {
            Kind::Tcp | Kind::Ws => Box::new(stream),
            Kind::TcpTls | Kind::Wss => {
                let cfg = server.tls_client.clone().expect("server started with TLS");
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
                let conn = rustls::ClientConnection::new(cfg, name).expect("tls client");
                Box::new(rustls::StreamOwned::new(conn, stream))
            }
        };
        let conn = match kind {
            Kind::Tcp | Kind::TcpTls => Conn::Tcp(io, Vec::new()),
            Kind::Ws | Kind::Wss => {
                let (scheme, path) = if kind == Kind::Ws {
                    ("ws", "/ws")
                } else {
                    ("wss", "/wss")
                };
                let url = format!("{scheme}://localhost:{port}{path}");
                let (ws, _) = tungstenite::client::client(url, io).expect("ws handshake");
                Conn::Ws(Box::new(ws))
            }
        };
        Client { conn }
    }

    /// Connects and sends CONNECT with extension flags; asserts CONNECT_ACK 0.
    pub fn login(server: &Server, uid: u32, kind: Kind, token: &str) -> Client {
        let mut c = Client::raw(server, kind);
        c.send(&connect_packet(&uid.to_string(), token, Some(1)));
        assert_eq!(c.recv_packet(), vec![2, 0], "CONNECT_ACK 0 for {uid}");
        c
    }

    fn stream(&self) -> &TcpStream {
        match &self.conn {
            Conn::Tcp(s, _) => s.sock(),
            Conn::Ws(ws) => ws.get_ref().sock(),
        }
    }

    /// Sends one packet (framed for the transport).
    pub fn send(&mut self, packet: &[u8]) {
        match &mut self.conn {
            Conn::Tcp(s, _) => {
                let mut v = Vec::with_capacity(packet.len() + 4);
                framing::put_prefix(&mut v, packet.len());
                v.extend_from_slice(packet);
                s.write_all(&v).expect("tcp write");
                s.flush().expect("tcp flush");
            }
            Conn::Ws(ws) => ws
                .send(tungstenite::Message::Binary(packet.to_vec().into()))
                .expect("ws write"),
        }
    }

    /// Writes raw bytes on the socket, bypassing framing.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        match &mut self.conn {
            Conn::Tcp(s, _) => {
                s.write_all(bytes).expect("write");
                s.flush().expect("flush");
            }
            Conn::Ws(ws) => {
                let s = ws.get_mut();
                s.write_all(bytes).expect("write");
                s.flush().expect("flush");
            }
        }
    }

    /// Sends a WebSocket message of any kind (WS clients only).
    pub fn send_ws(&mut self, m: tungstenite::Message) {
        match &mut self.conn {
            Conn::Ws(ws) => ws.send(m).expect("ws send"),
            Conn::Tcp(..) => panic!("not a websocket client"),
        }
    }

    pub fn recv(&mut self, timeout: Duration) -> Recv {
        self.stream()
            .set_read_timeout(Some(timeout))
            .expect("timeout");
        let deadline = Instant::now() + timeout;
        match &mut self.conn {
            Conn::Tcp(s, buf) => loop {
                if let Ok(Some(len)) = framing::check(buf, 1 << 24) {
                    let p = buf[4..4 + len].to_vec();
                    buf.drain(..4 + len);
                    return Recv::Packet(p);
                }
                let mut chunk = [0u8; 16384];
                match s.read(&mut chunk) {
                    Ok(0) => return Recv::Closed,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        return Recv::Timeout
                    }
                    Err(_) => return Recv::Closed,
                }
                if Instant::now() >= deadline {
                    return Recv::Timeout;
                }
            },
            Conn::Ws(ws) => loop {
                match ws.read() {
                    Ok(tungstenite::Message::Binary(b)) => return Recv::Packet(b.to_vec()),
                    Ok(tungstenite::Message::Close(_)) => {
                        // Finish the close handshake, then report the end.
                        let _ = ws.flush();
                        return Recv::Closed;
                    }
                    Ok(_) => continue,
                    Err(tungstenite::Error::Io(e))
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                    {
                        return Recv::Timeout
                    }
                    Err(_) => return Recv::Closed,
                }
            },
        }
    }

    /// The next packet, failing the test after 5 s.
    pub fn recv_packet(&mut self) -> Vec<u8> {
        match self.recv(Duration::from_secs(5)) {
            Recv::Packet(p) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// Asserts nothing arrives for `d`.
    pub fn expect_silence(&mut self, d: Duration) {
        match self.recv(d) {
            Recv::Timeout => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Asserts the server closes the connection within `d` (skipping packets, which are
    /// returned).
    pub fn expect_closed(&mut self, d: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + d;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "connection not closed; saw {seen:?}");
            match self.recv(left) {
                Recv::Closed => return seen,
                Recv::Packet(p) => seen.push(p),
                Recv::Timeout => panic!("connection not closed in {d:?}; saw {seen:?}"),
            }
        }
    }

    pub fn publish(&mut self, to: u32, id: &MsgId, payload: &[u8]) {
        self.send(
            &ClientPacket::Publish {
                to,
                msg_id: id,
                payload,
            }
            .to_vec(),
        );
    }

    /// Publishes and waits for the PUB_ACK.
    pub fn publish_acked(&mut self, to: u32, id: &MsgId, payload: &[u8]) {
        self.publish(to, id, payload);
        let ack = self.recv_packet();
        assert_eq!(
            ServerPacket::decode(&ack),
            Ok(ServerPacket::PubAck { msg_id: id })
        );
    }

    /// Receives a 1:1 push; returns (msg id, payload) without acking.
    pub fn recv_push(&mut self) -> (MsgId, Vec<u8>) {
        let p = self.recv_packet();
        match ServerPacket::decode(&p) {
            Ok(ServerPacket::Push { msg_id, payload }) => (*msg_id, payload.to_vec()),
            other => panic!("expected a push, got {other:?}"),
        }
    }

    /// Receives a push and acks it.
    pub fn recv_push_ack(&mut self) -> (MsgId, Vec<u8>) {
        let (id, payload) = self.recv_push();
        self.send(&ClientPacket::PubAck { msg_id: &id }.to_vec());
        (id, payload)
    }
}

/// A group push as received (command 5 or 11).
#[derive(Debug)]
pub struct GroupPush {
    pub part: bool,
    pub group: u32,
    pub msg_id: MsgId,
    pub targets: Vec<u32>,
    pub payload: Vec<u8>,
}

impl Client {
    pub fn group_publish(&mut self, group: u32, id: &MsgId, payload: &[u8]) {
        self.send(
            &ClientPacket::GroupPublish {
                group,
                msg_id: id,
                payload,
            }
            .to_vec(),
        );
    }

    pub fn group_part_publish(&mut self, group: u32, id: &MsgId, targets: &[u32], payload: &[u8]) {
        let raw: Vec<u8> = targets.iter().flat_map(|t| t.to_be_bytes()).collect();
        self.send(
            &ClientPacket::GroupPartPublish {
                group,
                msg_id: id,
                targets: im_protocol::Targets::from_raw(&raw).expect("targets"),
                payload,
            }
            .to_vec(),
        );
    }

    /// Expects the server's answer to a group publish: GROUP_PUB_ACK (or
    /// GROUP_PART_PUB_ACK when `part`) for `id`.
    pub fn expect_group_ack(&mut self, part: bool, id: &MsgId) {
        let p = self.recv_packet();
        let want = if part {
            ServerPacket::GroupPartPubAck { msg_id: id }
        } else {
            ServerPacket::GroupPubAck { msg_id: id }
        };
        assert_eq!(ServerPacket::decode(&p), Ok(want));
    }

    /// Expects PUB_ERR `code` for `id`.
    pub fn expect_pub_err(&mut self, id: &MsgId, code: u32) {
        let p = self.recv_packet();
        assert_eq!(
            ServerPacket::decode(&p),
            Ok(ServerPacket::PubErr { msg_id: id, code })
        );
    }

    /// Receives a group push; acks it with the matching command when `ack`.
    pub fn recv_group_push(&mut self, ack: bool) -> GroupPush {
        let p = self.recv_packet();
        let g = match ServerPacket::decode(&p) {
            Ok(ServerPacket::GroupPush {
                group,
                msg_id,
                payload,
            }) => GroupPush {
                part: false,
                group,
                msg_id: *msg_id,
                targets: Vec::new(),
                payload: payload.to_vec(),
            },
            Ok(ServerPacket::GroupPartPush {
                group,
                msg_id,
                targets,
                payload,
            }) => GroupPush {
                part: true,
                group,
                msg_id: *msg_id,
                targets: targets.iter().collect(),
                payload: payload.to_vec(),
            },
            other => panic!("expected a group push, got {other:?}"),
        };
        if ack {
            let id = &g.msg_id;
            let a = if g.part {
                ClientPacket::GroupPartPubAck { msg_id: id }
            } else {
                ClientPacket::GroupPubAck { msg_id: id }
            };
            self.send(&a.to_vec());
        }
        g
    }
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
