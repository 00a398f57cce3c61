//! The ScyllaDB offline store: one partition per user, clustered by sequence number, with
//! a delivered cursor instead of a DELETE per acked message.
//!
//! Schema (created on first connect when missing; names under `scylla.keyspace`):
//!
//! ```cql
//! CREATE TABLE offline_messages (uid bigint, seq bigint, expires_at bigint, frame blob,
//!   PRIMARY KEY (uid, seq)) WITH CLUSTERING ORDER BY (seq ASC)
//!   AND default_time_to_live = <delivery.retention_days in seconds>;
//! CREATE TABLE offline_cursor (uid bigint PRIMARY KEY, delivered bigint);
//! CREATE TABLE offline_meta (name text PRIMARY KEY, value bigint);
//! ```
//!
//! - Sequence numbers: see [`seq`] (a hybrid clock with a floor stored in `offline_meta`).
//! - Acks move `offline_cursor.delivered` (see [`plan`]); reads slice the partition above
//!   it, so acked rows cost nothing until the table TTL drops them. Retention is the table
//!   TTL; [`OfflineStore::purge_expired`] has nothing to do ([`OfflineStore::expires_natively`]).
//! - Reads also filter `seq` and `expires_at` on the client, so a message past its own
//!   expiry is never delivered even before ScyllaDB drops it.
//! - Prepared statements only (DDL aside), all idempotent, so the driver's retry policy may
//!   retry them. One batch's statements run concurrently (at most `max_concurrency`); a
//!   batch is not atomic across users, only each statement is. A failed batch is reported
//!   failed as a whole; a retry of it writes the same rows again under new numbers, so the
//!   worst case after a partial failure is a duplicate, never a loss.
//!
//! The `scylla` driver is tokio-only: it runs on the control runtime, and the storage thread
//! (which batches every shard's writes of one turn) blocks on each call. When ScyllaDB is
//! unreachable the store answers errors (counted as storage failures, shown by `/readyz`)
//! and tries to reconnect at most every `reconnect_interval_ms`; online traffic is served
//! meanwhile.

mod config;
pub mod plan;
pub mod seq;
#[cfg(feature = "cql-test-server")]
pub mod test_server;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::response::PagingState;
use scylla::statement::prepared::PreparedStatement;
use tokio::runtime::Handle;

pub use config::ScyllaConfig;

use crate::error::StoreError;
use crate::offline::{OfflineStore, StoredMessage, Write};
use plan::Queue;
use seq::SeqClock;

const SEQ_FLOOR: &str = "seq_floor";
const PAGE: i32 = 1_000;

/// The prepared statements.
struct Statements {
    insert: PreparedStatement,
    select_after: PreparedStatement,
    select_seqs: PreparedStatement,
    delete: PreparedStatement,
    get_cursor: PreparedStatement,
    set_cursor: PreparedStatement,
    get_meta: PreparedStatement,
    set_meta: PreparedStatement,
}

struct Conn {
    session: Session,
    st: Statements,
}

#[derive(Default)]
struct State {
    conn: Option<Arc<Conn>>,
    clock: Option<SeqClock>,
    last_attempt: Option<Instant>,
    last_error: String,
}

/// Offline messages in ScyllaDB.
pub struct ScyllaOffline {
    cfg: ScyllaConfig,
    ttl_secs: u64,
    rt: Handle,
    state: Mutex<State>,
}

fn err(op: &'static str) -> impl Fn(String) -> StoreError {
    move |e| StoreError::engine(op, e)
}

impl ScyllaOffline {
    /// A store that connects on first use (and again after failures). `ttl_secs` is the
    /// retention, used as the table's `default_time_to_live`. Checks the configuration.
    pub fn new(cfg: ScyllaConfig, ttl_secs: u64, rt: Handle) -> Result<Self, StoreError> {
        cfg.consistency()?;
        cfg.replication()?;
        cfg.keyspace()?;
        if cfg.contact_points.is_empty() {
            return Err(StoreError::engine(
                "config",
                "scylla.contact_points is empty",
            ));
        }
        Ok(Self {
            cfg,
            ttl_secs: ttl_secs.clamp(1, i32::MAX as u64),
            rt,
            state: Mutex::new(State::default()),
        })
    }

    /// Connects now (creating the schema when missing); the store stays usable either way.
    pub fn connect_now(&self) -> Result<(), StoreError> {
        self.conn(true).map(|_| ())
    }

    /// The connection, connecting first when there is none and the last attempt is older
    /// than the reconnect interval (or `force`).
    fn conn(&self, force: bool) -> Result<Arc<Conn>, StoreError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = &st.conn {
            return Ok(c.clone());
        }
        let wait = Duration::from_millis(self.cfg.reconnect_interval_ms);
        if !force && st.last_attempt.is_some_and(|t| t.elapsed() < wait) {
            return Err(StoreError::engine(
                "connect",
                format!("ScyllaDB unreachable: {}", st.last_error),
            ));
        }
        st.last_attempt = Some(Instant::now());
        let budget = Duration::from_millis(self.cfg.connect_timeout_ms);
        let result = self
            .rt
            .block_on(async { tokio::time::timeout(budget, self.open()).await })
            .unwrap_or_else(|_| Err(format!("no answer within {} ms", budget.as_millis())));
        match result {
            Ok((conn, floor)) => {
                let conn = Arc::new(conn);
                st.conn = Some(conn.clone());
                if st.clock.is_none() {
                    st.clock = Some(SeqClock::new(floor));
                }
                tracing::info!(nodes = ?self.cfg.contact_points, "connected to ScyllaDB");
                Ok(conn)
            }
            Err(e) => {
                let msg = format!(
                    "{} at {:?}: {e}",
                    self.cfg.keyspace, self.cfg.contact_points
                );
                tracing::warn!("ScyllaDB offline store unreachable: {msg}");
                st.last_error = msg.clone();
                Err(StoreError::engine(
                    "connect",
                    format!("ScyllaDB unreachable: {msg}"),
                ))
            }
        }
    }

    async fn open(&self) -> Result<(Conn, u64), String> {
        let c = &self.cfg;
        let profile = ExecutionProfile::builder()
            .consistency(c.consistency().map_err(|e| e.to_string())?)
            .request_timeout(Some(Duration::from_millis(c.request_timeout_ms)))
            .build();
        let mut b = SessionBuilder::new()
            .known_nodes(&c.contact_points)
            .connection_timeout(Duration::from_millis(c.connect_timeout_ms))
            .default_execution_profile_handle(profile.into_handle());
        if !c.username.is_empty() {
            b = b.user(&c.username, &c.password);
        }
        let session = b.build().await.map_err(|e| e.to_string())?;
        let ks = c.keyspace().map_err(|e| e.to_string())?;
        let ddl = [
            format!(
                "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {}",
                c.replication().map_err(|e| e.to_string())?
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.offline_messages (uid bigint, seq bigint, \
                 expires_at bigint, frame blob, PRIMARY KEY (uid, seq)) \
                 WITH CLUSTERING ORDER BY (seq ASC) AND default_time_to_live = {}",
                self.ttl_secs
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.offline_cursor \
                 (uid bigint PRIMARY KEY, delivered bigint)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.offline_meta \
                 (name text PRIMARY KEY, value bigint)"
            ),
        ];
        for q in &ddl {
            session
                .query_unpaged(q.as_str(), &[])
                .await
                .map_err(|e| format!("{q}: {e}"))?;
        }
        let prep = |q: String, page: bool| {
            let session = &session;
            async move {
                let mut p = session
                    .prepare(q.as_str())
                    .await
                    .map_err(|e| format!("preparing {q}: {e}"))?;
                p.set_is_idempotent(true);
                if page {
                    p.set_page_size(PAGE);
                }
                Ok::<_, String>(p)
            }
        };
        let st = Statements {
            insert: prep(
                format!(
                    "INSERT INTO {ks}.offline_messages (uid, seq, expires_at, frame) \
                     VALUES (?, ?, ?, ?)"
                ),
                false,
            )
            .await?,
            select_after: prep(
                format!(
                    "SELECT seq, expires_at, frame FROM {ks}.offline_messages \
                     WHERE uid = ? AND seq > ?"
                ),
                true,
            )
            .await?,
            select_seqs: prep(
                format!(
                    "SELECT seq, expires_at FROM {ks}.offline_messages WHERE uid = ? AND seq > ?"
                ),
                true,
            )
            .await?,
            delete: prep(
                format!("DELETE FROM {ks}.offline_messages WHERE uid = ? AND seq = ?"),
                false,
            )
            .await?,
            get_cursor: prep(
                format!("SELECT delivered FROM {ks}.offline_cursor WHERE uid = ?"),
                false,
            )
            .await?,
            set_cursor: prep(
                format!("INSERT INTO {ks}.offline_cursor (uid, delivered) VALUES (?, ?)"),
                false,
            )
            .await?,
            get_meta: prep(
                format!("SELECT value FROM {ks}.offline_meta WHERE name = ?"),
                false,
            )
            .await?,
            set_meta: prep(
                format!("INSERT INTO {ks}.offline_meta (name, value) VALUES (?, ?)"),
                false,
            )
            .await?,
        };
        let conn = Conn { session, st };
        let floor = conn.meta(SEQ_FLOOR).await?.unwrap_or(0);
        Ok((conn, floor))
    }

    /// Runs `f` on the driver's runtime, bounded by a few request timeouts.
    fn run<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, StoreError> {
        let budget = Duration::from_millis(self.cfg.request_timeout_ms.saturating_mul(3));
        self.rt
            .block_on(async { tokio::time::timeout(budget, f).await })
            .map_err(|_| {
                StoreError::engine(
                    op,
                    format!("ScyllaDB did not answer within {} ms", budget.as_millis()),
                )
            })?
            .map_err(err(op))
    }

    /// Hands out sequence numbers, storing a new floor first when needed.
    fn take_seqs(&self, conn: &Conn, n: usize) -> Result<Vec<u64>, StoreError> {
        let (seqs, floor) = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let clock = st.clock.get_or_insert_with(|| SeqClock::new(0));
            clock.take(n, seq::now_us())
        };
        if let Some(floor) = floor {
            if let Err(e) = self.run("write", conn.set_meta(SEQ_FLOOR, floor)) {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(c) = st.clock.as_mut() {
                    c.unreserve(floor);
                }
                return Err(e);
            }
        }
        Ok(seqs)
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// One write statement of a batch.
enum Job<'a> {
    /// `(uid, seq, expires_at_ms, frame)`.
    Insert(u32, u64, u64, &'a Bytes),
    /// `(uid, seq)`.
    Delete(u32, u64),
    /// `(uid, delivered)`.
    Cursor(u32, u64),
}

impl Conn {
    async fn apply(&self, job: Job<'_>) -> Result<(), String> {
        let (st, s) = (&self.st, &self.session);
        match job {
            Job::Insert(uid, seq, exp, frame) => {
                let values = (i64::from(uid), i64_of(seq), i64_of(exp), frame.as_ref());
                s.execute_unpaged(&st.insert, values).await
            }
            Job::Delete(uid, seq) => {
                s.execute_unpaged(&st.delete, (i64::from(uid), i64_of(seq)))
                    .await
            }
            Job::Cursor(uid, c) => {
                s.execute_unpaged(&st.set_cursor, (i64::from(uid), i64_of(c)))
                    .await
            }
        }
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    async fn meta(&self, name: &str) -> Result<Option<u64>, String> {
        let r = self
            .session
            .execute_unpaged(&self.st.get_meta, (name,))
            .await
            .map_err(|e| e.to_string())?
            .into_rows_result()
            .map_err(|e| e.to_string())?;
        let row = r.maybe_first_row::<(i64,)>().map_err(|e| e.to_string())?;
        Ok(row.map(|(v,)| u64_of(v)))
    }

    async fn set_meta(&self, name: &str, value: u64) -> Result<(), String> {
        self.session
            .execute_unpaged(&self.st.set_meta, (name, i64_of(value)))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn cursor(&self, uid: u32) -> Result<u64, String> {
        let r = self
            .session
            .execute_unpaged(&self.st.get_cursor, (i64::from(uid),))
            .await
            .map_err(|e| e.to_string())?
            .into_rows_result()
            .map_err(|e| e.to_string())?;
        let row = r.maybe_first_row::<(i64,)>().map_err(|e| e.to_string())?;
        Ok(row.map(|(v,)| u64_of(v)).unwrap_or(0))
    }

    /// Rows of `uid` above `after`, in order, until `keep` says stop (returns false).
    /// Filters `seq` on the client too: the slice is the server's job, correctness is ours.
    async fn scan(
        &self,
        uid: u32,
        after: u64,
        with_frames: bool,
        mut keep: impl FnMut(u64, u64, Option<Vec<u8>>) -> bool,
    ) -> Result<(), String> {
        let stmt = if with_frames {
            &self.st.select_after
        } else {
            &self.st.select_seqs
        };
        let mut paging = PagingState::start();
        let mut rows: Vec<(u64, u64, Option<Vec<u8>>)> = Vec::new();
        loop {
            let (res, next) = self
                .session
                .execute_single_page(stmt, (i64::from(uid), i64_of(after)), paging)
                .await
                .map_err(|e| e.to_string())?;
            let res = res.into_rows_result().map_err(|e| e.to_string())?;
            rows.clear();
            if with_frames {
                for r in res
                    .rows::<(i64, i64, Option<Vec<u8>>)>()
                    .map_err(|e| e.to_string())?
                {
                    let (s, e, f) = r.map_err(|e| e.to_string())?;
                    rows.push((u64_of(s), u64_of(e), Some(f.unwrap_or_default())));
                }
            } else {
                for r in res.rows::<(i64, i64)>().map_err(|e| e.to_string())? {
                    let (s, e) = r.map_err(|e| e.to_string())?;
                    rows.push((u64_of(s), u64_of(e), None));
                }
            }
            rows.sort_unstable_by_key(|r| r.0);
            for (s, e, f) in rows.drain(..) {
                if s > after && !keep(s, e, f) {
                    return Ok(());
                }
            }
            match next.into_paging_control_flow() {
                std::ops::ControlFlow::Continue(p) => paging = p,
                std::ops::ControlFlow::Break(()) => return Ok(()),
            }
        }
    }
}

impl OfflineStore for ScyllaOffline {
    fn write_batch(&self, writes: &[Write<'_>]) -> Result<Vec<Vec<u64>>, StoreError> {
        let conn = self.conn(false)?;
        let appended: usize = writes
            .iter()
            .map(|w| match w {
                Write::Append(m) => m.len(),
                Write::Remove { .. } => 0,
            })
            .sum();
        let mut all = self.take_seqs(&conn, appended)?.into_iter();
        let seqs: Vec<Vec<u64>> = writes
            .iter()
            .map(|w| match w {
                Write::Append(m) => all.by_ref().take(m.len()).collect(),
                Write::Remove { .. } => Vec::new(),
            })
            .collect();

        // What the removals need: each user's cursor and the front of its queue.
        let mut wanted: HashMap<u32, usize> = HashMap::new();
        for w in writes {
            if let Write::Remove { uid, seqs } = w {
                *wanted.entry(*uid).or_default() += seqs.len();
            }
        }
        let queues: HashMap<u32, Queue> = self.run("write", async {
            stream::iter(wanted)
                .map(|(uid, n)| {
                    let conn = &conn;
                    async move {
                        let cursor = conn.cursor(uid).await?;
                        let mut front = Vec::new();
                        conn.scan(uid, cursor, false, |s, _, _| {
                            front.push(s);
                            front.len() <= n
                        })
                        .await?;
                        Ok::<_, String>((uid, Queue { cursor, front }))
                    }
                })
                .buffer_unordered(self.cfg.max_concurrency.max(1))
                .try_collect()
                .await
        })?;

        let p = plan::plan(writes, &seqs, &queues);
        let mut jobs: Vec<Job<'_>> =
            Vec::with_capacity(p.inserts.len() + p.deletes.len() + p.cursors.len());
        for &(i, j, seq) in &p.inserts {
            if let Some(Write::Append(msgs)) = writes.get(i) {
                if let Some(m) = msgs.get(j) {
                    jobs.push(Job::Insert(m.uid, seq, m.expires_at_ms, &m.frame));
                }
            }
        }
        jobs.extend(p.deletes.iter().map(|&(uid, seq)| Job::Delete(uid, seq)));
        jobs.extend(p.cursors.iter().map(|&(uid, c)| Job::Cursor(uid, c)));
        let conn = &*conn;
        self.run("write", async {
            stream::iter(jobs)
                .map(|job| conn.apply(job))
                .buffer_unordered(self.cfg.max_concurrency.max(1))
                .try_collect::<Vec<()>>()
                .await
        })?;
        Ok(seqs)
    }

    fn fetch(
        &self,
        uid: u32,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let conn = self.conn(false)?;
        self.run("fetch", async {
            let cursor = conn.cursor(uid).await?;
            let mut out = Vec::new();
            if limit == 0 {
                return Ok(out);
            }
            conn.scan(uid, after.max(cursor), true, |seq, exp, frame| {
                if exp > now_ms {
                    out.push(StoredMessage {
                        seq,
                        frame: Bytes::from(frame.unwrap_or_default()),
                    });
                }
                out.len() < limit
            })
            .await?;
            Ok(out)
        })
    }

    fn check(&self) -> Result<(), StoreError> {
        let conn = self.conn(false)?;
        self.run("check", async { conn.meta(SEQ_FLOOR).await.map(|_| ()) })
    }

    fn purge_expired(&self, _now_ms: u64) -> Result<usize, StoreError> {
        Ok(0)
    }

    fn expires_natively(&self) -> bool {
        true
    }

    fn count(&self, uid: u32) -> Result<usize, StoreError> {
        let conn = self.conn(false)?;
        self.run("count", async {
            let cursor = conn.cursor(uid).await?;
            let mut n = 0usize;
            conn.scan(uid, cursor, false, |_, _, _| {
                n += 1;
                true
            })
            .await?;
            Ok(n)
        })
    }
}
