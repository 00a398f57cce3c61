//! The embedded group store on `redb`: one file on local disk, same semantics as the Redis
//! sets (a group exists while it has members).
//!
//! Layout: one table keyed by `(gid, uid)`, so a group's members are one contiguous, sorted
//! key range. Operations run on the calling thread when called (reads take microseconds per
//! hundred members; writes commit durably and are meant for the admin paths, not shards);
//! the returned future is already complete.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableDefinition};

use super::{GroupError, GroupFuture, GroupStore, Versions};

const MEMBERS: TableDefinition<(u32, u32), ()> = TableDefinition::new("group_members_v1");

/// The default group store: a single redb file.
pub struct EmbeddedGroups {
    db: Database,
    versions: Arc<Versions>,
}

fn err(op: &'static str) -> impl Fn(&dyn std::fmt::Display) -> GroupError {
    move |e| GroupError::unavailable(op, e)
}

impl EmbeddedGroups {
    /// Opens (or creates) the store at `path`; the parent directory is created if missing.
    /// Fails when another process (a running server) has it open.
    pub fn open(path: &Path) -> Result<Self, GroupError> {
        let e = err("open");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|x| e(&x))?;
        }
        let db = Database::create(path).map_err(|x| e(&x))?;
        let txn = db.begin_write().map_err(|x| e(&x))?;
        txn.open_table(MEMBERS).map_err(|x| e(&x))?;
        txn.commit().map_err(|x| e(&x))?;
        Ok(Self {
            db,
            versions: Arc::new(Versions::new()),
        })
    }

    fn read_members(&self, gid: u32) -> Result<Vec<u32>, GroupError> {
        let e = err("members");
        let txn = self.db.begin_read().map_err(|x| e(&x))?;
        let table = txn.open_table(MEMBERS).map_err(|x| e(&x))?;
        let mut out = Vec::new();
        for row in table.range((gid, 0)..=(gid, u32::MAX)).map_err(|x| e(&x))? {
            let (k, _) = row.map_err(|x| e(&x))?;
            out.push(k.value().1);
        }
        Ok(out)
    }

    fn write(
        &self,
        op: &'static str,
        gid: u32,
        f: impl FnOnce(&mut redb::Table<(u32, u32), ()>) -> Result<usize, redb::StorageError>,
    ) -> Result<usize, GroupError> {
        let e = err(op);
        let txn = self.db.begin_write().map_err(|x| e(&x))?;
        let n = {
            let mut table = txn.open_table(MEMBERS).map_err(|x| e(&x))?;
            f(&mut table).map_err(|x| e(&x))?
        };
        txn.commit().map_err(|x| e(&x))?;
        self.versions.bump(gid);
        Ok(n)
    }

    fn list_groups(&self) -> Result<Vec<u32>, GroupError> {
        let e = err("groups");
        let txn = self.db.begin_read().map_err(|x| e(&x))?;
        let table = txn.open_table(MEMBERS).map_err(|x| e(&x))?;
        let mut out = Vec::new();
        let mut from = 0u32;
        // Skip from group to group: one seek per group, not one step per member.
        loop {
            let next = table
                .range((from, 0)..)
                .map_err(|x| e(&x))?
                .next()
                .transpose()
                .map_err(|x| e(&x))?;
            let Some((k, _)) = next else { break };
            let gid = k.value().0;
            out.push(gid);
            match gid.checked_add(1) {
                Some(n) => from = n,
                None => break,
            }
        }
        Ok(out)
    }
}

fn ready<T: Send + 'static>(r: Result<T, GroupError>) -> GroupFuture<T> {
    Box::pin(std::future::ready(r))
}

impl GroupStore for EmbeddedGroups {
    fn members(&self, gid: u32) -> GroupFuture<Vec<u32>> {
        ready(self.read_members(gid))
    }

    fn add(&self, gid: u32, uids: Vec<u32>) -> GroupFuture<usize> {
        ready(self.write("add", gid, |t| {
            let mut added = 0;
            for uid in uids {
                if t.insert((gid, uid), ())?.is_none() {
                    added += 1;
                }
            }
            Ok(added)
        }))
    }

    fn remove(&self, gid: u32, uids: Vec<u32>) -> GroupFuture<usize> {
        ready(self.write("remove", gid, |t| {
            let mut removed = 0;
            for uid in uids {
                if t.remove((gid, uid))?.is_some() {
                    removed += 1;
                }
            }
            Ok(removed)
        }))
    }

    fn delete(&self, gid: u32) -> GroupFuture<bool> {
        ready(
            self.write("delete", gid, |t| {
                let n = t.extract_from_if((gid, 0)..=(gid, u32::MAX), |_, _| true)?;
                Ok(n.count())
            })
            .map(|n| n > 0),
        )
    }

    fn groups(&self) -> GroupFuture<Vec<u32>> {
        ready(self.list_groups())
    }

    fn versions(&self) -> &Versions {
        &self.versions
    }

    fn name(&self) -> &'static str {
        "embedded"
    }
}
