//! `imserver`: loads the configuration, starts the storage thread and the shards, prints a
//! start-up summary, and on SIGTERM/SIGINT shuts down in reverse order (shards first, which
//! hands every undelivered message to storage, then storage, which makes it durable).

mod api;
mod cli;
mod config;
mod groups;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use im_shards::config::{Driver, Persist};
use im_shards::{Server, TokenAuth};
use im_storage::{EmbeddedStore, OfflineStore, RedisOffline, ScyllaOffline, StoreHandle};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::cli::{Cli, Command, DriverArg, PersistArg};
use crate::config::{Config, OfflineBackend};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands the calling thread's freed pages back to the OS (see `im_shards::set_memory_trim`).
fn trim_memory() {
    // SAFETY: mi_collect only walks the calling thread's own heap; any thread may call it.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// Keeps the kernel from backing this process's memory with transparent huge pages
/// (`runtime.huge_pages = false`): applies to memory touched from now on, whatever the
/// allocator asks with madvise.
fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot turn transparent huge pages off");
    }
}

const DEFAULT_CONFIG: &str = "config/imserver.toml";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let path = cli.config.clone().or_else(|| {
        Path::new(DEFAULT_CONFIG)
            .exists()
            .then(|| PathBuf::from(DEFAULT_CONFIG))
    });
    let mut cfg = Config::load(path.as_deref())?;
    apply_overrides(&mut cfg, &cli.overrides);
    let command = cli.command.unwrap_or(Command::Run {
        overrides: cli::Overrides::default(),
    });
    match command {
        Command::Run { overrides } => {
            apply_overrides(&mut cfg, &overrides);
            run(cfg, path)
        }
        Command::Token { uid, ttl } => {
            let ttl = Duration::from_secs(ttl.unwrap_or(cfg.auth.token_ttl_secs));
            let token = TokenAuth::new(&cfg.auth.secret).mint(uid, ttl)?;
            println!("{token}");
            Ok(())
        }
        Command::PrintConfig => {
            print!("{}", toml::to_string_pretty(&cfg)?);
            Ok(())
        }
        Command::Group { op } => {
            init_logs(&cfg)?;
            groups::run_cli(&cfg, op)
        }
    }
}

fn apply_overrides(cfg: &mut Config, o: &cli::Overrides) {
    if let Some(n) = o.shards {
        cfg.runtime.shards = n;
    }
    if let Some(d) = o.driver {
        cfg.runtime.driver = match d {
            DriverArg::Auto => Driver::Auto,
            DriverArg::IoUring => Driver::IoUring,
            DriverArg::Epoll => Driver::Epoll,
        };
    }
    if let Some(b) = &o.bind {
        cfg.net.bind = b.clone();
    }
    if let Some(p) = o.tcp_port {
        cfg.net.tcp_port = p;
    }
    if let Some(p) = o.ws_port {
        cfg.net.ws_port = p;
    }
    if let Some(d) = &o.data_dir {
        cfg.storage.data_dir = d.clone();
    }
    if let Some(p) = o.persist {
        cfg.delivery.persist = match p {
            PersistArg::OnFailure => Persist::OnFailure,
            PersistArg::BeforeAck => Persist::BeforeAck,
        };
    }
    if let Some(l) = &o.log_level {
        cfg.log.level = l.clone();
    }
}

fn init_logs(cfg: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log.level))
        .context("log.level is not a valid filter")?;
    // Colour only on a terminal: a file or journald gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

fn run(cfg: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    init_logs(&cfg)?;
    if !cfg.runtime.huge_pages {
        no_huge_pages();
    }
    cfg.check_cluster()?;

    // Signals are blocked for every thread started after this point.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;

    let control = groups::control_runtime()?;
    let (store, store_desc) = open_offline_store(&cfg, &control)?;
    let purge = Duration::from_secs(cfg.storage.purge_interval_secs.max(1));
    let (handle, worker) = StoreHandle::spawn(store, purge)?;
    let (group_store, group_desc) = groups::open(&cfg, &control)?;
    let callback = auth_callback(&cfg, &control)?;
    im_shards::set_memory_trim(trim_memory);
    let cluster = join_cluster(&cfg, &control)?;
    let link = cluster.as_ref().map(|c| c.shard_link());
    let server = Server::start(
        cfg.core(),
        handle.clone(),
        group_store.clone(),
        callback,
        link,
    )
    .context("starting shards")?;
    if let Some(c) = &cluster {
        c.run(server.control())?;
    }
    let api = api::start(
        &cfg,
        &control,
        &server,
        handle.clone(),
        group_store,
        cluster.clone(),
    )?;

    print_summary(&cfg, &server, path.as_deref(), &store_desc, &group_desc);
    tracing::info!("imserver ready");

    if let Some(sig) = signals.forever().next() {
        tracing::info!(
            signal = sig,
            "shutting down: closing sessions, storing undelivered messages"
        );
    }
    // In a cluster: leave the live set and stop taking inbox mail first, so the other
    // nodes route around this one while its sessions close; then send what the shards
    // still queued for other nodes.
    if let Some(c) = &cluster {
        c.leave();
    }
    api.stop(&control);
    server.shutdown();
    if let Some(c) = &cluster {
        c.finish(Duration::from_secs(3));
    }
    handle.stop();
    worker.join();
    control.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("stopped");
    Ok(())
}

/// Joins the cluster when `cluster.enabled` (takes this node's lease, reads the live set).
fn join_cluster(
    cfg: &Config,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Option<Arc<im_cluster::Cluster>>> {
    if !cfg.cluster.enabled {
        return Ok(None);
    }
    let c = im_cluster::Cluster::join(
        &cfg.cluster,
        &cfg.redis,
        cfg.node_info(),
        rt.handle().clone(),
    )
    .context("joining the cluster")?;
    Ok(Some(Arc::new(c)))
}

/// The configured offline store, and a one-line description for the summary.
fn open_offline_store(
    cfg: &Config,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<(Arc<dyn OfflineStore>, String)> {
    match cfg.storage.backend {
        OfflineBackend::Embedded => {
            let path = cfg.storage.data_dir.join("offline.redb");
            let store = EmbeddedStore::open(&path)
                .with_context(|| format!("opening offline store {}", path.display()))?;
            Ok((
                Arc::new(store),
                format!("embedded redb at {}", path.display()),
            ))
        }
        OfflineBackend::Redis => {
            let r = &cfg.redis;
            let store = RedisOffline::connect(r, rt.handle().clone()).with_context(|| {
                format!(
                    "connecting the Redis offline store at {}:{}",
                    r.host, r.port
                )
            })?;
            Ok((
                Arc::new(store),
                format!(
                    "redis {}:{} db {} (lists im_offline:<uid>)",
                    r.host, r.port, r.db
                ),
            ))
        }
        OfflineBackend::Scylla => {
            let c = &cfg.scylla;
            let ttl = cfg.delivery.retention_days.saturating_mul(86_400);
            let store = ScyllaOffline::new(c.clone(), ttl, rt.handle().clone())
                .context("the [scylla] section")?;
            // Unreachable at start is not fatal: online traffic is served, offline writes
            // fail (metrics, /readyz) and the store reconnects by itself.
            let state = match store.connect_now() {
                Ok(()) => "connected",
                Err(e) => {
                    tracing::warn!("{e}; serving online traffic, retrying in the background");
                    "NOT REACHABLE, retrying"
                }
            };
            Ok((
                Arc::new(store),
                format!(
                    "scylla {} keyspace {} ({state})",
                    c.contact_points.join(","),
                    c.keyspace
                ),
            ))
        }
    }
}

/// The HTTP authentication callback client when `auth.mode = "http"`.
fn auth_callback(
    cfg: &Config,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Option<Arc<dyn im_shards::callback::AuthCallback>>> {
    if cfg.auth.mode != im_shards::config::AuthMode::Http {
        return Ok(None);
    }
    let a = &cfg.auth;
    let cb = im_control::callback::HttpCallback::new(
        &a.http_url,
        Duration::from_millis(a.http_timeout_ms),
        a.http_max_inflight,
        rt.handle().clone(),
    )?;
    Ok(Some(Arc::new(cb)))
}

fn print_summary(cfg: &Config, server: &Server, path: Option<&Path>, store: &str, groups: &str) {
    let c = &cfg.net;
    println!("imserver {}", env!("CARGO_PKG_VERSION"));
    println!(
        "  config     {}",
        path.map_or("built-in defaults".into(), |p| p.display().to_string())
    );
    println!(
        "  shards     {} (pinned: {})",
        server.shards, cfg.runtime.pin_cores
    );
    println!("  driver     {}", server.driver.name());
    println!("  tcp        {}:{}", c.bind, c.tcp_port);
    println!("  websocket  ws://{}:{}{}", c.bind, c.ws_port, c.ws_path);
    if cfg.tls.enabled {
        let t = &cfg.tls;
        println!(
            "  tls        wss://{}:{}{} and TCP+TLS {}:{} (cert {})",
            c.bind,
            t.wss_port,
            t.wss_path,
            c.bind,
            t.tcp_port,
            t.cert_path.display()
        );
    }
    println!(
        "  storage    {} (persist: {}, retention {} days)",
        store,
        config_name(&cfg.delivery.persist),
        cfg.delivery.retention_days
    );
    println!("  groups     {groups}");
    if cfg.cluster.enabled {
        let c = &cfg.cluster;
        println!(
            "  cluster    node {} advertised at {} (lease {} ms, Redis {}:{})",
            c.node_id, c.advertise_host, c.lease_ms, cfg.redis.host, cfg.redis.port
        );
    }
    if cfg.control.enabled {
        println!(
            "  http api   http://{}:{} (/metrics, /healthz, /readyz; admin endpoints need control.admin_secret)",
            cfg.control.bind, cfg.control.port
        );
        if cfg.demo.enabled {
            println!(
                "  demo       http://{}:{}/demo/  (DEMO MODE: anyone reaching the HTTP API can log in as any uid; never in production)",
                cfg.control.bind, cfg.control.port
            );
            tracing::warn!("demo.enabled: /demo/login hands out a token for any uid; never enable this in production");
        }
    }
    match cfg.auth.mode {
        im_shards::config::AuthMode::Token => println!(
            "  auth       token (HS256 JWT; mint one with `imserver token --uid <uid>` or POST /auth/user_token)"
        ),
        im_shards::config::AuthMode::Http => println!(
            "  auth       http callback {} (timeout {} ms, {} in flight)",
            cfg.auth.http_url, cfg.auth.http_timeout_ms, cfg.auth.http_max_inflight
        ),
    }
    println!(
        "  delivery   envelope {}, redelivery every {} ms x{}, duplicate login {}",
        config_name(&cfg.delivery.envelope),
        cfg.delivery.redelivery_interval_ms,
        cfg.delivery.redelivery_max,
        config_name(&cfg.session.duplicate_login)
    );
    println!("ready");
}

/// A setting as it is spelled in the configuration file (`on_failure`, not `OnFailure`).
fn config_name<T: serde::Serialize + std::fmt::Debug>(v: &T) -> String {
    match toml::Value::try_from(v) {
        Ok(toml::Value::String(s)) => s,
        _ => format!("{v:?}"),
    }
}
