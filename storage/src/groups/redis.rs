//! The Redis group store: the seed's `im_group:<gid>` SETs of decimal uids (database 1 by
//! default), through `fred`.
//!
//! **Runtime.** `fred` is written for tokio. Its `monoio` feature (10.1) is an empty stub
//! that does not compile, so the client cannot run on the shard runtimes; it runs on a tokio
//! runtime of its own thread (the control-plane runtime), and every call returns a future
//! the caller's executor awaits (a tokio `JoinHandle`, which any executor can poll). Shards
//! only get here on a membership-cache miss, so the hop is off the hot path. In-flight
//! lookups are bounded ([`RedisConfig::max_inflight`]); past that, lookups fail at once.
//!
//! **Freshness.** The business side may edit the sets directly. A subscriber connection
//! listens to keyspace notifications for `im_group:*` (enabled on the server with
//! `CONFIG SET notify-keyspace-events` when `keyspace_events` is on and Redis allows it)
//! and bumps the group's [`Versions`] entry, which invalidates every shard's cached copy.
//! Losing or regaining that connection invalidates everything. Where notifications cannot
//! be enabled, a cached membership lives for the shards' cache TTL.
//!
//! **Outages.** Commands time out after `timeout_ms`; the client reconnects in the
//! background. A lookup that fails makes the publish fail (refused), never guesses.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::config::{Config as FredConfig, ReconnectPolicy, ServerConfig, TlsConnector};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use super::{group_key, normalize, GroupError, GroupFuture, GroupStore, Versions};

/// Where and how to reach Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub host: String,
    pub port: u16,
    /// Database index; the seed uses 1.
    pub db: u8,
    /// ACL user name (Redis 6+); empty for none.
    pub username: String,
    /// Empty for none.
    pub password: String,
    /// Connect with TLS (rustls, system roots).
    pub tls: bool,
    /// Connection and command timeout.
    pub timeout_ms: u64,
    /// Connections used for lookups (round-robin).
    pub pool_size: usize,
    /// Turn on keyspace notifications for sets and generic commands (`CONFIG SET
    /// notify-keyspace-events`) and subscribe to them, so direct edits apply at once.
    pub keyspace_events: bool,
    /// Lookups allowed in flight at once; past this they fail at once.
    pub max_inflight: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 6379,
            db: 1,
            username: String::new(),
            password: String::new(),
            tls: false,
            timeout_ms: 1000,
            pool_size: 2,
            keyspace_events: true,
            max_inflight: 10_000,
        }
    }
}

struct Inner {
    pool: Pool,
    rt: Handle,
    versions: Arc<Versions>,
    inflight: AtomicUsize,
    max_inflight: usize,
}

/// Group membership in Redis.
pub struct RedisGroups {
    inner: Arc<Inner>,
    /// Keyspace notifications are flowing (decided at connect).
    notifications: bool,
    _subscriber: Option<SubscriberClient>,
}

fn unavailable(op: &'static str) -> impl Fn(Error) -> GroupError {
    move |e| GroupError::unavailable(op, e)
}

/// A fred builder for `cfg` (timeouts, reconnect policy, TLS, database).
pub fn builder(cfg: &RedisConfig) -> Result<Builder, GroupError> {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let mut config = FredConfig {
        server: ServerConfig::new_centralized(cfg.host.clone(), cfg.port),
        database: Some(cfg.db),
        username: (!cfg.username.is_empty()).then(|| cfg.username.clone()),
        password: (!cfg.password.is_empty()).then(|| cfg.password.clone()),
        // Keep retrying in the background when Redis is down at start.
        fail_fast: false,
        ..Default::default()
    };
    if cfg.tls {
        let tls = TlsConnector::default_rustls().map_err(unavailable("tls"))?;
        config.tls = Some(tls.into());
    }
    let mut b = Builder::from_config(config);
    b.with_performance_config(|p| p.default_command_timeout = timeout)
        .with_connection_config(|c| {
            c.connection_timeout = timeout;
            c.internal_command_timeout = timeout;
            c.max_command_attempts = 2;
        })
        // Retry forever, 100 ms doubling up to 2 s.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2000, 2));
    Ok(b)
}

/// Parses `im_group:<gid>`.
fn parse_key(key: &str) -> Option<u32> {
    key.strip_prefix("im_group:")?.parse().ok()
}

/// Members are decimal uids; anything else written by the business side is skipped.
fn parse_members(gid: u32, raw: Vec<String>) -> Vec<u32> {
    let mut bad = 0usize;
    let uids = raw
        .iter()
        .filter_map(|m| {
            let uid = m.parse::<u32>().ok().filter(|u| *u != 0);
            bad += uid.is_none() as usize;
            uid
        })
        .collect();
    if bad > 0 {
        tracing::warn!(
            gid,
            skipped = bad,
            "group set holds members that are not uids"
        );
    }
    normalize(uids)
}

impl RedisGroups {
    /// Connects on `rt` (must be called from outside that runtime). Returns once connected,
    /// or after `timeout_ms` with the client still retrying in the background (so the
    /// server can start while Redis is down; lookups fail until it is back).
    pub fn connect(cfg: &RedisConfig, rt: Handle) -> Result<Self, GroupError> {
        let versions = Arc::new(Versions::new());
        let pool = builder(cfg)?
            .build_pool(cfg.pool_size.max(1))
            .map_err(unavailable("connect"))?;
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let (connected, notifications, subscriber) = rt.block_on({
            let pool = pool.clone();
            let versions = versions.clone();
            let cfg = cfg.clone();
            async move {
                pool.connect();
                let connected = tokio::time::timeout(timeout, pool.wait_for_connect())
                    .await
                    .is_ok_and(|r| r.is_ok());
                let (notifications, subscriber) = if cfg.keyspace_events {
                    subscribe(&cfg, &pool, versions, connected).await
                } else {
                    (false, None)
                };
                (connected, notifications, subscriber)
            }
        });
        if !connected {
            tracing::warn!(
                host = %cfg.host, port = cfg.port,
                "Redis is not reachable yet; group messages are refused until it is"
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                rt,
                versions,
                inflight: AtomicUsize::new(0),
                max_inflight: cfg.max_inflight.max(1),
            }),
            notifications,
            _subscriber: subscriber,
        })
    }

    /// Whether direct edits in Redis reach the caches through keyspace notifications.
    pub fn notifications(&self) -> bool {
        self.notifications
    }

    /// Runs `f` against the pool on the Redis runtime, bounded by `max_inflight`.
    fn call<T, F, Fut>(&self, f: F) -> GroupFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: std::future::Future<Output = Result<T, GroupError>> + Send + 'static,
    {
        let inner = &self.inner;
        let n = inner.inflight.fetch_add(1, Ordering::Relaxed);
        if n >= inner.max_inflight {
            inner.inflight.fetch_sub(1, Ordering::Relaxed);
            return Box::pin(std::future::ready(Err(GroupError::Busy(n))));
        }
        let fut = f(inner.clone());
        let guard_inner = inner.clone();
        let handle = inner.rt.spawn(async move {
            let r = fut.await;
            guard_inner.inflight.fetch_sub(1, Ordering::Relaxed);
            r
        });
        Box::pin(async move {
            handle
                .await
                .map_err(|e| GroupError::unavailable("runtime", e))?
        })
    }
}

#[derive(Clone, Copy)]
enum SetOp {
    Add,
    Remove,
}

impl RedisGroups {
    /// SADD / SREM of `uids` on the group's set; returns how many changed.
    fn edit(&self, gid: u32, uids: Vec<u32>, op: SetOp) -> GroupFuture<usize> {
        self.call(move |inner| async move {
            if uids.is_empty() {
                return Ok(0);
            }
            let (key, vals) = (
                group_key(gid),
                uids.iter().map(u32::to_string).collect::<Vec<_>>(),
            );
            let n: usize = match op {
                SetOp::Add => inner.pool.sadd(key, vals).await.map_err(unavailable("add")),
                SetOp::Remove => inner
                    .pool
                    .srem(key, vals)
                    .await
                    .map_err(unavailable("remove")),
            }?;
            inner.versions.bump(gid);
            Ok(n)
        })
    }
}

/// Enables keyspace notifications if needed, subscribes to `im_group:*` changes and keeps
/// `versions` in step with them. Returns whether notifications are on.
async fn subscribe(
    cfg: &RedisConfig,
    pool: &Pool,
    versions: Arc<Versions>,
    connected: bool,
) -> (bool, Option<SubscriberClient>) {
    let enabled = match enable_notifications(pool).await {
        Ok(()) => true,
        Err(e) if connected => {
            tracing::warn!(error = %e, "cannot enable Redis keyspace notifications; direct membership edits apply after the cache TTL");
            return (false, None);
        }
        // Not reachable yet: set up the subscriber anyway, it enables them on connect.
        Err(_) => false,
    };
    let sub = match builder(cfg).and_then(|b| {
        b.build_subscriber_client()
            .map_err(unavailable("subscribe"))
    }) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot create the Redis subscriber");
            return (false, None);
        }
    };
    let pattern = format!("__keyspace@{}__:im_group:*", cfg.db);
    let mut events = sub.keyspace_event_rx();
    let mut reconnects = sub.reconnect_rx();
    let mut errors = sub.error_rx();
    let db = cfg.db;
    let v = versions.clone();
    tokio::spawn(async move {
        while let Ok(ev) = events.recv().await {
            if ev.db == db {
                if let Some(gid) = ev.key.as_str().and_then(parse_key) {
                    v.bump(gid);
                }
            }
        }
    });
    let (v, sub2, pool2, pattern2) = (versions.clone(), sub.clone(), pool.clone(), pattern.clone());
    tokio::spawn(async move {
        // A restarted Redis has lost both the CONFIG and the subscription, and changes made
        // while the stream was down were not heard: redo both, drop every cached copy.
        while reconnects.recv().await.is_ok() {
            v.bump_all();
            late_subscribe(&sub2, &pool2, &v, pattern2.clone()).await;
        }
    });
    let v = versions.clone();
    tokio::spawn(async move {
        while errors.recv().await.is_ok() {
            v.bump_all();
        }
    });
    sub.connect();
    let timeout = Duration::from_millis(cfg.timeout_ms);
    if tokio::time::timeout(timeout, sub.wait_for_connect())
        .await
        .is_ok_and(|r| r.is_ok())
    {
        if let Err(e) = sub.psubscribe(pattern).await {
            tracing::warn!(error = %e, "cannot subscribe to keyspace notifications");
            return (false, Some(sub));
        }
    } else {
        // Redis is down at start: set everything up once the first connection is made.
        let (sub, pool, versions) = (sub.clone(), pool.clone(), versions.clone());
        tokio::spawn(async move {
            if sub.wait_for_connect().await.is_ok() {
                late_subscribe(&sub, &pool, &versions, pattern).await;
            }
        });
    }
    (enabled, Some(sub))
}

/// (Re-)subscribes and (re-)enables notifications after a (re)connection. The lookup pool
/// reconnects on its own schedule, so enabling is retried for a while; once it succeeds,
/// every cached membership is dropped (changes before that were not heard).
async fn late_subscribe(sub: &SubscriberClient, pool: &Pool, versions: &Versions, pattern: String) {
    if let Err(e) = sub.psubscribe(pattern).await {
        tracing::warn!(error = %e, "cannot subscribe to keyspace notifications");
    }
    for attempt in 0..60 {
        match enable_notifications(pool).await {
            Ok(()) => {
                versions.bump_all();
                return;
            }
            Err(e) if attempt == 59 => {
                tracing::warn!(error = %e, "cannot enable keyspace notifications");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Makes sure the server publishes keyspace events for set and generic commands (`K`, `s`,
/// `g`; `x` for expiry), keeping whatever else the operator enabled.
async fn enable_notifications(pool: &Pool) -> Result<(), Error> {
    let current: Vec<String> = pool.config_get("notify-keyspace-events").await?;
    let flags = current.get(1).cloned().unwrap_or_default();
    let has = |c: char| flags.contains(c);
    let all = has('A');
    if has('K') && (all || (has('s') && has('g') && has('x'))) {
        return Ok(());
    }
    let mut wanted = flags.clone();
    // `A` already covers every class but the `K`/`E` channel selectors.
    let needed: &[char] = if all { &['K'] } else { &['K', 's', 'g', 'x'] };
    for &c in needed {
        if !wanted.contains(c) {
            wanted.push(c);
        }
    }
    pool.config_set("notify-keyspace-events", wanted).await
}

impl GroupStore for RedisGroups {
    fn members(&self, gid: u32) -> GroupFuture<Vec<u32>> {
        self.call(move |inner| async move {
            let raw: Vec<String> = inner
                .pool
                .smembers(group_key(gid))
                .await
                .map_err(unavailable("members"))?;
            Ok(parse_members(gid, raw))
        })
    }

    fn add(&self, gid: u32, uids: Vec<u32>) -> GroupFuture<usize> {
        self.edit(gid, uids, SetOp::Add)
    }

    fn remove(&self, gid: u32, uids: Vec<u32>) -> GroupFuture<usize> {
        self.edit(gid, uids, SetOp::Remove)
    }

    fn delete(&self, gid: u32) -> GroupFuture<bool> {
        self.call(move |inner| async move {
            let n: usize = inner
                .pool
                .del(group_key(gid))
                .await
                .map_err(unavailable("delete"))?;
            inner.versions.bump(gid);
            Ok(n > 0)
        })
    }

    fn groups(&self) -> GroupFuture<Vec<u32>> {
        self.call(move |inner| async move {
            let mut out = Vec::new();
            let mut cursor = "0".to_string();
            loop {
                let (next, keys): (String, Vec<String>) = inner
                    .pool
                    .next()
                    .scan_page(cursor, "im_group:*", Some(1000), None)
                    .await
                    .map_err(unavailable("groups"))?;
                out.extend(keys.iter().filter_map(|k| parse_key(k)));
                if next == "0" {
                    break;
                }
                cursor = next;
            }
            Ok(normalize(out))
        })
    }

    fn versions(&self) -> &Versions {
        &self.inner.versions
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_members_parse_strictly() {
        assert_eq!(parse_key("im_group:12"), Some(12));
        assert_eq!(parse_key("im_group:x"), None);
        assert_eq!(parse_key("other:12"), None);
        let m = parse_members(
            1,
            vec!["3".into(), "1".into(), "x".into(), "0".into(), "3".into()],
        );
        assert_eq!(m, vec![1, 3]);
    }
}
