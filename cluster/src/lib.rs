//! Many imserver nodes sharing one Redis.
//!
//! - **Membership** ([`membership`]): each node holds a lease `im_node:<id>` it renews; the
//!   live set is every node holding one. A node id already held is refused at start.
//! - **Home nodes** (`im_shards::NodeMap`): every user has one home node, by rendezvous
//!   hashing over the live set; the user's sessions live there. A client that connects to
//!   another node is relayed to its home (`im_shards` `net::relay`); the HTTP login
//!   endpoint tells clients their home so they connect there directly.
//! - **Inboxes** ([`inbox`]): a message for a user whose home is another node goes into
//!   that node's Redis stream, one entry per destination node per flush; entries stay
//!   pending until handed to the shards, and a dead node's entries are taken over.
//!
//! Runs on the control plane's tokio runtime (fred is tokio-only); the shards reach it
//! only through [`Link`] (a bounded queue, never blocking) and their mailboxes.

mod config;
mod inbox;
mod membership;
pub mod stats;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use fred::prelude::*;
use im_shards::control::ControlHandle;
use im_shards::{ClusterLink, Forward, NodeMap};
use im_storage::RedisConfig;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

pub use crate::config::{ClusterConfig, NodeInfo};
use crate::stats::ClusterStats;
use crate::wire::Record;

/// The outbound queue's items: destination node, record.
type Outgoing = (Arc<str>, Record);
/// The live set by id, and the shards' view of it.
type Live = Arc<RwLock<(BTreeMap<String, NodeInfo>, Arc<NodeMap>)>>;

/// Why the cluster layer cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Redis: {0}")]
    Redis(String),
    #[error("cluster.node_id {0:?} is held by a live node; give this node another id (or wait for the other one's lease to lapse)")]
    NodeIdTaken(String),
    #[error("this node's address {0} does not resolve")]
    Address(String),
}

/// The shards' side of the outbound queue.
pub struct Link {
    tx: mpsc::Sender<Outgoing>,
    unsent: Arc<std::sync::atomic::AtomicUsize>,
}

impl ClusterLink for Link {
    fn forward(&self, to: &Arc<str>, f: Forward) -> Result<(), Forward> {
        let r = Record {
            sent_ms: im_storage::now_ms(),
            f,
        };
        use std::sync::atomic::Ordering;
        self.unsent.fetch_add(1, Ordering::SeqCst);
        self.tx.try_send((to.clone(), r)).map_err(|e| {
            self.unsent.fetch_sub(1, Ordering::SeqCst);
            match e {
                mpsc::error::TrySendError::Full((_, r))
                | mpsc::error::TrySendError::Closed((_, r)) => r.f,
            }
        })
    }
}

/// A running cluster membership.
pub struct Cluster {
    me: NodeInfo,
    lease_ms: u64,
    pool: Pool,
    rt: Handle,
    link: Arc<Link>,
    rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    stats: Arc<ClusterStats>,
    live: Live,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Records queued or being sent by the flusher.
    unsent: Arc<std::sync::atomic::AtomicUsize>,
}

impl Cluster {
    /// Connects, takes this node's lease, waits half a lease (so every node sees it before
    /// it takes users) and reads the live set. Blocks (on `rt`) for at most the Redis
    /// timeout per step.
    pub fn join(
        cfg: &ClusterConfig,
        redis: &RedisConfig,
        me: NodeInfo,
        rt: Handle,
    ) -> Result<Cluster, ClusterError> {
        if me.relay_addr().is_none() {
            return Err(ClusterError::Address(format!(
                "{}:{}",
                me.host, me.tcp_port
            )));
        }
        let mut builder = im_storage::groups::redis_builder(redis)
            .map_err(|e| ClusterError::Redis(e.to_string()))?;
        // Reconnect within a quarter lease once Redis is back: every node then takes its
        // lease again well inside the one lease the others hold the live set after an
        // outage (the shared default backs off to 2 s, longer than a short lease).
        let cap = (cfg.lease_ms / 4).clamp(50, 2000) as u32;
        builder.set_policy(fred::types::config::ReconnectPolicy::new_exponential(
            0,
            cap.min(100),
            cap,
            2,
        ));
        let pool = builder
            .build_pool(redis.pool_size.max(2))
            .map_err(membership::redis)?;
        let timeout = Duration::from_millis(redis.timeout_ms.max(1000));
        let p = pool.clone();
        let lease_ms = cfg.lease_ms;
        let me2 = me.clone();
        let live = rt.block_on(async move {
            p.connect();
            tokio::time::timeout(timeout, p.wait_for_connect())
                .await
                .map_err(|_| ClusterError::Redis("not reachable in time".into()))?
                .map_err(membership::redis)?;
            membership::register(&p, &me2, lease_ms).await?;
            inbox::ensure_group(p.next(), &inbox::inbox_key(&me2.id))
                .await
                .map_err(membership::redis)?;
            // Every node re-reads the live set each third of a lease: after half a lease
            // they all route this node's users here, so none of their messages is stored
            // elsewhere while those users log in here.
            tokio::time::sleep(Duration::from_millis(lease_ms / 2)).await;
            membership::renew(&p, &me2, lease_ms).await?;
            membership::live(&p).await
        })?;
        let map = membership::node_map(&me.id, &live)
            .ok_or_else(|| ClusterError::Redis("this node's lease vanished at start".into()))?;
        let (tx, rx) = mpsc::channel(cfg.outbox_capacity);
        let unsent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stats = Arc::new(ClusterStats::default());
        stats.set_live(live.len());
        Ok(Cluster {
            me,
            lease_ms,
            pool,
            rt,
            link: Arc::new(Link {
                tx,
                unsent: unsent.clone(),
            }),
            rx: Mutex::new(Some(rx)),
            stats,
            live: Arc::new(RwLock::new((live, map))),
            stop: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
            reader: Mutex::new(None),
            unsent,
        })
    }

    /// What the shards start with: the link and the live set.
    pub fn shard_link(&self) -> (Arc<dyn ClusterLink>, Arc<NodeMap>) {
        let map = self
            .live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone();
        (self.link.clone(), map)
    }

    /// Starts the outbound flusher, the inbox reader and the lease/live-set loop.
    pub fn run(&self, control: ControlHandle) -> Result<(), ClusterError> {
        let Some(rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(());
        };
        let me: Arc<str> = Arc::from(self.me.id.as_str());
        // The blocking inbox read gets a connection of its own.
        let reader = self.pool.next().clone_new();
        let mut tasks = vec![self.rt.spawn(inbox::flush_loop(
            self.pool.clone(),
            me.clone(),
            rx,
            self.stats.clone(),
            self.unsent.clone(),
        ))];
        let receiving = Arc::new(inbox::Receiving::new(control, self.stats.clone()));
        let (r, rcv, stop) = (reader.clone(), receiving.clone(), self.stop.subscribe());
        let m = me.clone();
        *self.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.rt.spawn(async move {
            r.init().await.ok();
            inbox::read_loop(r, m, rcv, stop).await;
        }));
        tasks.push(self.rt.spawn(lease_loop(
            self.pool.clone(),
            self.me.clone(),
            self.lease_ms,
            receiving,
            self.live.clone(),
            self.stop.subscribe(),
        )));
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tasks);
        Ok(())
    }

    /// The home node of `uid` with its client addresses.
    pub fn home_of(&self, uid: u32) -> Option<NodeInfo> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        let id = live.1.home(uid).id.clone();
        live.0.get(&*id).cloned()
    }

    pub fn stats(&self) -> Arc<ClusterStats> {
        self.stats.clone()
    }

    pub fn node_id(&self) -> &str {
        &self.me.id
    }

    /// First step of a graceful stop, before the shards stop: gives the lease up (the
    /// other nodes stop routing here at their next live-set read, and take over whatever
    /// is left in this node's inbox) and stops reading the inbox (an entry being handed to
    /// the shards is finished first).
    pub fn leave(&self) {
        let _ = self.stop.send(true);
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
        let pool = self.pool.clone();
        let me = self.me.clone();
        self.rt.block_on(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), membership::release(&pool, &me)).await;
            if let Some(r) = reader {
                let _ = tokio::time::timeout(Duration::from_secs(3), r).await;
            }
        });
    }

    /// Last step, after the shards stopped: sends what they still queued for other nodes
    /// (for up to `wait`), then ends the tasks.
    pub fn finish(&self, wait: Duration) {
        use std::sync::atomic::Ordering;
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let unsent = self.unsent.clone();
        self.rt.block_on(async move {
            let end = tokio::time::Instant::now() + wait;
            while unsent.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let left = unsent.load(Ordering::SeqCst);
            if left > 0 {
                tracing::error!(left, "messages for other nodes not sent before the stop");
            }
            for t in tasks {
                t.abort();
            }
        });
    }
}

/// Renews the lease every third of it, re-reads the live set, tells the shards when it
/// changed, and takes over the inboxes of nodes that are gone. When the others had counted
/// this node dead, it closes its sessions once they have all seen it back (see
/// [`membership`]).
async fn lease_loop(
    pool: Pool,
    me: NodeInfo,
    lease_ms: u64,
    rx: Arc<inbox::Receiving>,
    live: Live,
    mut stop: watch::Receiver<bool>,
) {
    let (control, stats) = (&rx.control, &rx.stats);
    // The first tick is at once: the lease was taken (or renewed) just before the shards
    // started, however long that took.
    let mut every = tokio::time::interval(Duration::from_millis(lease_ms / 3));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let claimer = pool.next().clone_new();
    claimer.init().await.ok();
    // Until then the live set may grow but not shrink: set when this node's own lease was
    // lost or could not be renewed (Redis restarted empty, or was out of reach), so that
    // the other nodes have a whole lease to take theirs again before they count as dead.
    let mut hold_until: Option<tokio::time::Instant> = None;
    // When to close every session after an eviction: half a lease after this node is live
    // again, when every other node has re-read the live set (each does every third).
    let mut close_at: Option<tokio::time::Instant> = None;
    let lease = Duration::from_millis(lease_ms);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        if close_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
            close_at = None;
            tracing::warn!("closing every session: their clients log in again and collect what was stored for them while this node counted as dead");
            tell_shards(control, Mail::Evicted).await;
        }
        match membership::renew(&pool, &me, lease_ms).await {
            Ok(r) => {
                if r.lapsed {
                    stats.lease_lost();
                    hold_until = Some(tokio::time::Instant::now() + lease);
                    tracing::warn!("this node's lease had lapsed; taken again");
                }
                if r.evicted {
                    stats.evicted();
                    close_at = Some(tokio::time::Instant::now() + lease / 2);
                    tracing::warn!("the other nodes had counted this node dead");
                }
            }
            Err(e) => {
                hold_until = Some(tokio::time::Instant::now() + lease);
                tracing::error!(error = %e, "cannot renew this node's lease");
                continue;
            }
        }
        match inbox::backlog(&pool, &me.id).await {
            Ok(n) => stats.set_inbox(n),
            Err(e) => tracing::warn!(error = %e, "cannot read this node's inbox length"),
        }
        let mut now = match membership::live(&pool).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the live set");
                continue;
            }
        };
        if !now.contains_key(&me.id) {
            // This node's own lease is gone already (Redis restarted empty between the
            // renewal and this read): the set is not to be trusted; take the lease again
            // at the next tick and hold the set meanwhile.
            hold_until = Some(tokio::time::Instant::now() + lease);
            tracing::warn!("this node's lease vanished after its renewal; reading again");
            continue;
        }
        if hold_until.is_some_and(|t| tokio::time::Instant::now() < t) {
            let cur = live.read().unwrap_or_else(|e| e.into_inner());
            for (id, info) in &cur.0 {
                now.entry(id.clone()).or_insert_with(|| info.clone());
            }
        }
        let gone: Vec<NodeInfo> = {
            let cur = live.read().unwrap_or_else(|e| e.into_inner());
            cur.0
                .values()
                .filter(|n| n.id != me.id && !now.contains_key(&n.id))
                .cloned()
                .collect()
        };
        if !gone.is_empty() {
            let refs: Vec<&NodeInfo> = gone.iter().collect();
            if let Err(e) = membership::mark_evicted(&pool, &refs).await {
                tracing::warn!(error = %e, "cannot mark nodes gone; keeping them for now");
                continue;
            }
        }
        stats.set_live(now.len());
        let changed = {
            let cur = live.read().unwrap_or_else(|e| e.into_inner());
            cur.0 != now
        };
        if changed {
            if let Some(map) = membership::node_map(&me.id, &now) {
                tracing::info!(nodes = ?now.keys().collect::<Vec<_>>(), "live set changed");
                *live.write().unwrap_or_else(|e| e.into_inner()) = (now.clone(), map.clone());
                tell_shards(control, Mail::Nodes(map)).await;
            }
        }
        if let Err(e) = reclaim_dead(&claimer, &pool, &me.id, &now, &rx, lease_ms).await {
            tracing::warn!(error = %e, "taking over dead nodes' inboxes failed; retrying");
        }
    }
}

/// What the lease loop tells every shard.
enum Mail {
    Nodes(Arc<NodeMap>),
    Evicted,
}

async fn tell_shards(control: &ControlHandle, mail: Mail) {
    for shard in 0..control.shards() {
        loop {
            let taken = match &mail {
                Mail::Nodes(map) => control.set_nodes(shard, map.clone()),
                Mail::Evicted => control.evicted(shard),
            };
            if taken {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Inboxes of nodes not in `live`.
async fn reclaim_dead(
    claimer: &Client,
    pool: &Pool,
    me: &str,
    live: &BTreeMap<String, NodeInfo>,
    rx: &inbox::Receiving,
    lease_ms: u64,
) -> Result<(), Error> {
    let mut cursor = "0".to_string();
    let mut dead = Vec::new();
    loop {
        let (next, page): (String, Vec<String>) = pool
            .next()
            .custom(
                fred::cmd!("SCAN"),
                vec![
                    cursor.clone(),
                    "MATCH".into(),
                    format!("{}*", inbox::INBOX_PREFIX),
                    "COUNT".into(),
                    "1000".into(),
                    "TYPE".into(),
                    "stream".into(),
                ],
            )
            .await?;
        for key in page {
            if let Some(id) = key.strip_prefix(inbox::INBOX_PREFIX) {
                if !live.contains_key(id) {
                    dead.push(id.to_owned());
                }
            }
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    for id in dead {
        inbox::reclaim(claimer, me, &id, rx, lease_ms).await?;
    }
    Ok(())
}
