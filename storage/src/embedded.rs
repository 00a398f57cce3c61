//! The embedded offline store on `redb`: one file on local disk, no external service.
//!
//! Layout: one table keyed by `(uid, seq)` so a user's queue is one contiguous key range
//! (append = insert at the end, drain = range scan, ack = point delete; a B-tree delete
//! frees the space, there are no tombstones to skip on later scans). The value is the
//! expiry (8 bytes, big-endian Unix ms) followed by the encoded push frame.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::StoreError;
use crate::offline::{OfflineStore, StoredMessage, Write};

const MESSAGES: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("offline_v1");

/// The default offline store: a single redb file.
///
/// redb refuses all work after an I/O error ("Previous I/O error occurred. Please close and
/// re-open the database") — a full disk, say. So after any failed operation the file is
/// closed and opened again; while that fails too (the disk is still full), operations fail
/// with a clear error and the next one retries the open. A failed write transaction is rolled
/// back whole: nothing acked is lost and nothing half-written remains.
pub struct EmbeddedStore {
    path: PathBuf,
    /// `None` between a failed reopen and the next successful one.
    db: RwLock<Option<Database>>,
    /// Next sequence number per user, loaded lazily from the last key of the user's range.
    next_seq: Mutex<HashMap<u32, u64>>,
    /// The last write failed (readiness reports it until a write succeeds).
    write_failing: AtomicBool,
}

fn open_db(path: &Path) -> Result<Database, StoreError> {
    let db = Database::create(path).map_err(|e| StoreError::engine("open", e))?;
    let txn = db
        .begin_write()
        .map_err(|e| StoreError::engine("open", e))?;
    txn.open_table(MESSAGES)
        .map_err(|e| StoreError::engine("open", e))?;
    txn.commit().map_err(|e| StoreError::engine("open", e))?;
    Ok(db)
}

impl EmbeddedStore {
    /// Opens (or creates) the store at `path`; the parent directory is created if missing.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::engine("open", e))?;
        }
        let db = open_db(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            db: RwLock::new(Some(db)),
            next_seq: Mutex::new(HashMap::new()),
            write_failing: AtomicBool::new(false),
        })
    }

    /// Runs `f` on the open database; after a failure, reopens it (see the type's docs).
    fn with_db<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let r = {
            let g = self.db.read().unwrap_or_else(|p| p.into_inner());
            match g.as_ref() {
                Some(db) => f(db),
                None => Err(StoreError::engine(
                    op,
                    "database closed after an I/O error; it is reopened on the next operation",
                )),
            }
        };
        if r.is_err() {
            self.reopen();
        }
        r
    }

    fn reopen(&self) {
        let mut g = self.db.write().unwrap_or_else(|p| p.into_inner());
        // Closed first: redb holds a lock on the file while it is open.
        *g = None;
        match open_db(&self.path) {
            Ok(db) => *g = Some(db),
            Err(e) => {
                tracing::warn!(error = %e, path = %self.path.display(), "reopening the offline store failed; retrying on the next operation")
            }
        }
    }
}

fn encode_value(expires_at_ms: u64, frame: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + frame.len());
    v.extend_from_slice(&expires_at_ms.to_be_bytes());
    v.extend_from_slice(frame);
    v
}

fn decode_value(v: &[u8]) -> Option<(u64, &[u8])> {
    let (exp, frame) = v.split_at_checked(8)?;
    Some((u64::from_be_bytes(exp.try_into().ok()?), frame))
}

impl OfflineStore for EmbeddedStore {
    fn write_batch(&self, writes: &[Write<'_>]) -> Result<Vec<Vec<u64>>, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::engine("write", e);
        let mut next = self.next_seq.lock().unwrap_or_else(|p| p.into_inner());
        // Sequence numbers handed out in a failed transaction must not stay cached.
        let snapshot: Vec<(u32, Option<u64>)> = writes
            .iter()
            .flat_map(|w| match w {
                Write::Append(m) => m.iter().map(|m| m.uid).collect(),
                Write::Remove { .. } => Vec::new(),
            })
            .map(|uid| (uid, next.get(&uid).copied()))
            .collect();
        let result = self.with_db("write", |db| {
            let txn = db.begin_write().map_err(|e| err(&e))?;
            let mut out = Vec::with_capacity(writes.len());
            {
                let mut table = txn.open_table(MESSAGES).map_err(|e| err(&e))?;
                for w in writes {
                    match w {
                        Write::Append(msgs) => {
                            let mut seqs = Vec::with_capacity(msgs.len());
                            for m in msgs.iter() {
                                let seq = match next.get(&m.uid) {
                                    Some(s) => *s,
                                    None => table
                                        .range((m.uid, 0)..=(m.uid, u64::MAX))
                                        .map_err(|e| err(&e))?
                                        .next_back()
                                        .transpose()
                                        .map_err(|e| err(&e))?
                                        .map_or(1, |(k, _)| k.value().1 + 1),
                                };
                                let value = encode_value(m.expires_at_ms, &m.frame);
                                table
                                    .insert((m.uid, seq), value.as_slice())
                                    .map_err(|e| err(&e))?;
                                next.insert(m.uid, seq + 1);
                                seqs.push(seq);
                            }
                            out.push(seqs);
                        }
                        Write::Remove { uid, seqs } => {
                            for s in seqs.iter() {
                                table.remove((*uid, *s)).map_err(|e| err(&e))?;
                            }
                            out.push(Vec::new());
                        }
                    }
                }
            }
            txn.commit().map_err(|e| err(&e))?;
            Ok(out)
        });
        self.write_failing.store(result.is_err(), Ordering::Relaxed);
        if result.is_err() {
            for (uid, old) in snapshot.into_iter().rev() {
                match old {
                    Some(s) => next.insert(uid, s),
                    None => next.remove(&uid),
                };
            }
        }
        result
    }

    fn fetch(
        &self,
        uid: u32,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::engine("fetch", e);
        if after == u64::MAX {
            return Ok(Vec::new());
        }
        self.with_db("fetch", |db| {
            let txn = db.begin_read().map_err(|e| err(&e))?;
            let table = txn.open_table(MESSAGES).map_err(|e| err(&e))?;
            let mut out = Vec::new();
            for item in table
                .range((uid, after + 1)..=(uid, u64::MAX))
                .map_err(|e| err(&e))?
            {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = item.map_err(|e| err(&e))?;
                let Some((exp, frame)) = decode_value(v.value()) else {
                    continue;
                };
                if exp > now_ms {
                    out.push(StoredMessage {
                        seq: k.value().1,
                        frame: Bytes::copy_from_slice(frame),
                    });
                }
            }
            Ok(out)
        })
    }

    fn purge_expired(&self, now_ms: u64) -> Result<usize, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::engine("purge", e);
        self.with_db("purge", |db| {
            let txn = db.begin_write().map_err(|e| err(&e))?;
            let mut purged = 0;
            {
                let mut table = txn.open_table(MESSAGES).map_err(|e| err(&e))?;
                table
                    .retain(|_, v| {
                        let keep = decode_value(v).is_some_and(|(exp, _)| exp > now_ms);
                        purged += usize::from(!keep);
                        keep
                    })
                    .map_err(|e| err(&e))?;
            }
            txn.commit().map_err(|e| err(&e))?;
            Ok(purged)
        })
    }

    fn count(&self, uid: u32) -> Result<usize, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::engine("count", e);
        self.with_db("count", |db| {
            let txn = db.begin_read().map_err(|e| err(&e))?;
            let table = txn.open_table(MESSAGES).map_err(|e| err(&e))?;
            Ok(table
                .range((uid, 0)..=(uid, u64::MAX))
                .map_err(|e| err(&e))?
                .count())
        })
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.write_failing.load(Ordering::Relaxed) {
            return Err(StoreError::engine(
                "check",
                "the last write failed (disk full or I/O error?)",
            ));
        }
        Ok(())
    }
}
