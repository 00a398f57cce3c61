//! The tests' side of the Rust client library (`imclient`): a configuration for a test
//! server, a tokio runtime, and a TCP forwarder whose connections a test can cut to play a
//! network failure.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imclient::{ClientConfig, Event, Events, Message};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{token, Server};

/// The transports, as URL schemes.
pub const SCHEMES: [&str; 4] = ["tcp", "tls", "ws", "wss"];

/// A runtime for one test.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A client configuration for `uid` on `srv` over `scheme` (tls/wss need
/// [`Server::start_tls`]), with quick reconnects for tests.
pub fn config(srv: &Server, uid: u32, scheme: &str) -> ClientConfig {
    let url = match scheme {
        "tcp" => format!("tcp://127.0.0.1:{}", srv.tcp_port),
        "tls" => format!("tls://localhost:{}", srv.tls_tcp_port),
        "ws" => format!("ws://127.0.0.1:{}/ws", srv.ws_port),
        "wss" => format!("wss://localhost:{}/wss", srv.wss_port),
        other => panic!("unknown scheme {other}"),
    };
    let mut cfg = ClientConfig::new(url.parse().expect("endpoint"), uid, token(uid));
    cfg.tls = srv.tls_client.clone();
    cfg.backoff.initial = Duration::from_millis(50);
    cfg.backoff.max = Duration::from_millis(500);
    cfg
}

/// The next event within 10 s.
pub async fn next(events: &mut Events) -> Event {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .expect("the client is running")
}

/// The next message within 10 s, skipping connection events.
pub async fn next_message(events: &mut Events) -> Message {
    loop {
        if let Event::Message(m) = next(events).await {
            return m;
        }
    }
}

/// Asserts that no message arrives for `d`.
pub async fn no_message_for(events: &mut Events, d: Duration) {
    let deadline = tokio::time::Instant::now() + d;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
        assert!(!matches!(ev, Event::Message(_)), "unexpected {ev:?}");
    }
}

/// Forwards TCP connections from its own port to `target`; [`Forwarder::cut`] closes
/// every forwarded connection at once (both ends see a reset or EOF), like a network
/// failure; new connections are forwarded again right away.
pub struct Forwarder {
    pub port: u16,
    live: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Forwarder {
    pub async fn start(target: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let live: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tasks = Arc::clone(&live);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().expect("forwarder lock").push(task);
            }
        });
        Forwarder { port, live, accept }
    }

    /// Drops every forwarded connection.
    pub fn cut(&self) {
        for t in self.live.lock().expect("forwarder lock").drain(..) {
            t.abort();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
