//! The thread-per-core IM core.
//!
//! [`Server::start`] spawns one thread per shard, each pinned to a core and running its own
//! monoio runtime (io_uring, or epoll where io_uring is unavailable or not wanted). Every
//! shard binds the TCP and WebSocket ports with SO_REUSEPORT; the kernel spreads accepted
//! connections over the shards. After CONNECT is authenticated the connection moves to
//! `owner_of(uid)`, so all of a user's sessions, unacked pushes and timers live on one shard.
//! Shards talk only through bounded lock-free mailboxes ([`mailbox`]).
//!
//! The logic of a shard is [`engine`], a synchronous state machine that does no I/O and
//! reads no clock (events in, actions out); [`shard`] is its monoio driver. Around them:
//! [`net`] (listeners, pre-auth, connections, framing, TLS), [`auth`] (tokens, the HTTP
//! callback, the failed-login limit), [`route`] (owner shards and the mailbox mesh),
//! [`control`] (requests from the HTTP API), `membership` (the group cache).
//! Every `impl Shard` is in `shard/` (tasks and lifecycle in `mod.rs`, carrying out the
//! engine's actions in `actions.rs`, the timer in `timer.rs`, the `Host` and `Gate` ports in
//! `ports.rs`).

pub mod auth;
#[cfg(feature = "bench-api")]
pub mod bench_api;
pub mod config;
pub mod control;
pub mod engine;
#[cfg(any(test, feature = "fuzz-api"))]
pub mod fuzz_api;
mod membership;
pub mod net;
pub mod route;
mod shard;
pub mod stats;

pub use crate::auth::callback;
pub use crate::net::tls;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use im_storage::{GroupStore, StoreHandle};

use crate::auth::callback::AuthCallback;
use crate::auth::limiter::AuthLimiter;
pub use crate::auth::TokenAuth;
pub use crate::config::{CoreConfig, Driver};
pub use crate::engine::envelope::json_payload;
pub use crate::route::link::{ClusterLink, Forward};
pub use crate::route::mailbox::Mesh;
pub use crate::route::nodes::{Node, NodeMap};
pub use crate::route::routing::owner_of;
use crate::route::Mail;
use crate::shard::Shared;
use crate::stats::ShardStats;
pub use im_protocol::packet::pub_err as pub_err_code;

/// Mail slots per (source, destination) shard pair.
const MAILBOX_CAPACITY: usize = 4096;

/// Errors starting the core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("io_uring was requested but is not available on this kernel")]
    UringUnavailable,
    #[error("cannot start shard thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("{0}")]
    Shard(String),
}

/// The I/O driver the shards actually run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveDriver {
    IoUring,
    Epoll,
}

impl ActiveDriver {
    pub fn name(self) -> &'static str {
        match self {
            ActiveDriver::IoUring => "io_uring",
            ActiveDriver::Epoll => "epoll",
        }
    }
}

/// Resolves the configured driver against what the kernel allows.
/// Sets what every shard calls about once a second from its timer to hand memory its
/// thread freed back to the operating system (the binary passes its allocator's collect:
/// after a burst of logins or traffic, an allocator whose thread then goes quiet would
/// otherwise keep the freed pages resident). The first call wins.
pub fn set_memory_trim(trim: fn()) {
    let _ = shard::MEMORY_TRIM.set(trim);
}

/// The shards' clock (microseconds since this process's first reading): what mail handed
/// to the shards from outside carries as its acceptance time.
pub fn engine_now() -> crate::engine::Time {
    shard::now()
}

pub fn resolve_driver(want: Driver) -> Result<ActiveDriver, StartError> {
    let uring = monoio::utils::detect_uring();
    match (want, uring) {
        (Driver::Epoll, _) | (Driver::Auto, false) => Ok(ActiveDriver::Epoll),
        (Driver::IoUring, false) => Err(StartError::UringUnavailable),
        (_, true) => Ok(ActiveDriver::IoUring),
    }
}

/// The running core.
pub struct Server {
    mesh: Arc<Mesh<Mail>>,
    stats: Vec<Arc<ShardStats>>,
    threads: Vec<JoinHandle<()>>,
    pub driver: ActiveDriver,
    pub shards: usize,
}

impl Server {
    /// Starts every shard and returns once all listeners are bound.
    pub fn start(
        cfg: CoreConfig,
        store: StoreHandle,
        groups: Arc<dyn GroupStore>,
        callback: Option<Arc<dyn AuthCallback>>,
        cluster: Option<(Arc<dyn ClusterLink>, Arc<NodeMap>)>,
    ) -> Result<Server, StartError> {
        if cfg.auth.mode == config::AuthMode::Http && callback.is_none() {
            return Err(StartError::Config(
                "auth.mode = \"http\" needs an authentication callback".into(),
            ));
        }
        cfg.validate().map_err(StartError::Config)?;
        let driver = resolve_driver(cfg.runtime.driver)?;
        if cfg.runtime.driver == Driver::Auto && driver == ActiveDriver::Epoll {
            tracing::warn!("io_uring is not available here; falling back to epoll");
        }
        let tls = if cfg.tls.enabled {
            let t = tls::server_config(&cfg.tls.cert_path, &cfg.tls.key_path)
                .map_err(|e| StartError::Config(e.to_string()))?;
            Some(t)
        } else {
            None
        };
        let shards = cfg.shard_count();
        let mesh = Arc::new(Mesh::new(shards, MAILBOX_CAPACITY));
        let shared = Arc::new(Shared {
            auth: Arc::new(TokenAuth::new(&cfg.auth.secret)),
            limiter: Arc::new(AuthLimiter::new(
                cfg.auth.max_failures,
                Duration::from_millis(cfg.auth.failure_window_ms),
                cfg.auth.limiter_max_addrs,
            )),
            cfg: Arc::new(cfg),
            mesh: mesh.clone(),
            store,
            groups,
            callback,
            tls,
            stats: (0..shards).map(|_| Arc::default()).collect(),
            cluster,
        });
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::with_capacity(shards);
        for id in 0..shards {
            let shared = shared.clone();
            let ready = ready_tx.clone();
            let core = shared
                .cfg
                .runtime
                .pin_cores
                .then(|| cores.get(id % cores.len().max(1)).copied())
                .flatten();
            let t = std::thread::Builder::new()
                .name(format!("im-shard-{id}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    run_runtime(id, driver, shared, ready);
                })
                .map_err(StartError::Thread)?;
            threads.push(t);
        }
        drop(ready_tx);
        let server = Server {
            stats: shared.stats.clone(),
            mesh,
            threads,
            driver,
            shards,
        };
        for _ in 0..shards {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    server.shutdown();
                    return Err(StartError::Shard(e));
                }
                Err(_) => {
                    server.shutdown();
                    return Err(StartError::Shard("a shard thread died at start".into()));
                }
            }
        }
        Ok(server)
    }

    /// The control plane's way into the shards.
    pub fn control(&self) -> control::ControlHandle {
        control::ControlHandle::new(self.mesh.clone())
    }

    /// Every shard's counters.
    pub fn stats(&self) -> &[Arc<ShardStats>] {
        &self.stats
    }

    /// Stops accepting, closes every session (keeping undelivered messages in storage),
    /// stores what is in flight between shards, and waits for every shard to finish.
    pub fn shutdown(self) {
        self.mesh.request_shutdown();
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a shard thread panicked");
            }
        }
    }
}

fn run_runtime(
    id: usize,
    driver: ActiveDriver,
    shared: Arc<Shared>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let entries = shared.cfg.runtime.uring_entries;
    let fut = shard::run(id, shared, ready.clone());
    let built = match driver {
        ActiveDriver::IoUring => uring_runtime(entries, true)
            .or_else(|e| {
                tracing::debug!(shard = id, error = %e, "io_uring without cooperative task running");
                uring_runtime(entries, false)
            })
            .map(|mut rt| rt.block_on(fut)),
        ActiveDriver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(fut)),
    };
    if let Err(e) = built {
        let _ = ready.send(Err(format!("shard {id}: cannot build runtime: {e}")));
    }
}

/// A shard's io_uring runtime. `coop`: the ring is set up with `IORING_SETUP_COOP_TASKRUN`
/// (Linux 5.19+), so a completion for a shard that is busy in user space waits for the
/// shard's next system call instead of interrupting it with an inter-processor interrupt.
/// Only the shard's own thread uses its ring, and it makes a system call every turn, so
/// nothing waits longer. Flat out with pairs across shards the interrupts were 2.6–2.8 % of
/// each shard's samples; no end-to-end gain was measured (benches/PROFILE.md, "Tried:
/// completions without interrupts").
fn uring_runtime(
    entries: u32,
    coop: bool,
) -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
    let mut ring = io_uring::IoUring::builder();
    if coop {
        ring.setup_coop_taskrun();
    }
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .uring_builder(ring)
        .with_entries(entries)
        .enable_timer()
        .build()
}

#[cfg(test)]
mod tests {
    use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};

    /// Whether this kernel is at least `major.minor` (from /proc/sys/kernel/osrelease).
    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release
            .trim()
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().ok());
        match (parts.next().flatten(), parts.next().flatten()) {
            (Some(a), Some(b)) => (a, b) >= (major, minor),
            _ => false,
        }
    }

    /// Bytes written to a loopback socket come back through the other end, on this runtime.
    async fn loopback_round_trip() -> Vec<u8> {
        let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = monoio::net::TcpStream::connect(addr)
            .await
            .expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        let (res, _) = client.write_all(b"ping".to_vec()).await;
        res.expect("write");
        let (res, buf) = server.read_exact(vec![0u8; 4]).await;
        res.expect("read");
        buf
    }

    /// The shards' ring is set up for cooperative task running where the kernel has it
    /// (5.19+), and I/O completes on it; the plain ring, the fallback, works too.
    #[test]
    fn shard_rings_build_with_and_without_cooperative_task_running() {
        if !monoio::utils::detect_uring() {
            return;
        }
        let coop = super::uring_runtime(64, true);
        if kernel_at_least(5, 19) {
            let mut rt = coop.expect("IORING_SETUP_COOP_TASKRUN on this kernel");
            assert_eq!(rt.block_on(loopback_round_trip()), b"ping");
        }
        let mut plain = super::uring_runtime(64, false).expect("plain ring");
        assert_eq!(plain.block_on(loopback_round_trip()), b"ping");
    }
}
