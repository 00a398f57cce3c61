//! Embedded-engine benchmark for the offline-message workload, redb against fjall, in one
//! run on the same disk: append per user (small batches, durable commit each), drain each
//! user's queue in order, remove after ack (batched). Prints a Markdown table with the ratio
//! of each figure to redb's.
//!
//! `cargo run --release -p im-benches --bin engine-bench -- [users] [msgs_per_user]`

use std::time::{Duration, Instant};

const BODY: usize = 200;

trait Engine {
    fn name(&self) -> &'static str;
    /// One durable commit of these (uid, seq, value) inserts.
    fn append(&mut self, batch: &[(u32, u64, Vec<u8>)]);
    /// All values of `uid` in seq order.
    fn drain(&mut self, uid: u32) -> Vec<(u64, Vec<u8>)>;
    /// One durable commit removing these keys.
    fn remove(&mut self, keys: &[(u32, u64)]);
}

fn key(uid: u32, seq: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&uid.to_be_bytes());
    k[4..].copy_from_slice(&seq.to_be_bytes());
    k
}

struct Redb {
    db: redb::Database,
}
const T: redb::TableDefinition<(u32, u64), &[u8]> = redb::TableDefinition::new("q");

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn append(&mut self, batch: &[(u32, u64, Vec<u8>)]) {
        let tx = self.db.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            for (u, s, v) in batch {
                t.insert((*u, *s), v.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn drain(&mut self, uid: u32) -> Vec<(u64, Vec<u8>)> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read().unwrap();
        let t = tx.open_table(T).unwrap();
        t.range((uid, 0)..=(uid, u64::MAX))
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.value().1, v.value().to_vec())
            })
            .collect()
    }
    fn remove(&mut self, keys: &[(u32, u64)]) {
        let tx = self.db.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            for k in keys {
                t.remove(*k).unwrap();
            }
        }
        tx.commit().unwrap();
    }
}

struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall"
    }
    fn append(&mut self, batch: &[(u32, u64, Vec<u8>)]) {
        let mut b = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncAll));
        for (u, s, v) in batch {
            b.insert(&self.ks, key(*u, *s), v.as_slice());
        }
        b.commit().unwrap();
    }
    fn drain(&mut self, uid: u32) -> Vec<(u64, Vec<u8>)> {
        self.ks
            .prefix(uid.to_be_bytes())
            .map(|kv| {
                let (k, v) = kv.into_inner().unwrap();
                let mut s = [0u8; 8];
                s.copy_from_slice(&k[4..12]);
                (u64::from_be_bytes(s), v.to_vec())
            })
            .collect()
    }
    fn remove(&mut self, keys: &[(u32, u64)]) {
        let mut b = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncAll));
        for (u, s) in keys {
            b.remove(&self.ks, key(*u, *s));
        }
        b.commit().unwrap();
    }
}

struct Figures {
    append: Duration,
    drain: Duration,
    remove: Duration,
    redrain: Duration,
}

fn run(e: &mut dyn Engine, users: u32, per: u64) -> Figures {
    let body = vec![7u8; BODY];
    // Append: round-robin over users, 64 messages per durable commit (a shard turn).
    let t = Instant::now();
    let mut batch = Vec::with_capacity(64);
    for seq in 1..=per {
        for u in 0..users {
            batch.push((u, seq, body.clone()));
            if batch.len() == 64 {
                e.append(&batch);
                batch.clear();
            }
        }
    }
    if !batch.is_empty() {
        e.append(&batch);
    }
    let append = t.elapsed();
    // Drain every queue in order.
    let t = Instant::now();
    let mut total = 0;
    for u in 0..users {
        let got = e.drain(u);
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "in order");
        total += got.len();
    }
    assert_eq!(total as u64, users as u64 * per);
    let drain = t.elapsed();
    // Remove after ack, 64 keys per commit.
    let t = Instant::now();
    let keys: Vec<(u32, u64)> = (0..users)
        .flat_map(|u| (1..=per).map(move |s| (u, s)))
        .collect();
    for c in keys.chunks(64) {
        e.remove(c);
    }
    let remove = t.elapsed();
    // Drain again: empty queues after deletes (LSM tombstones vs B-tree).
    let t = Instant::now();
    for u in 0..users {
        assert!(e.drain(u).is_empty());
    }
    let redrain = t.elapsed();
    Figures {
        append,
        drain,
        remove,
        redrain,
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let users = args.first().copied().unwrap_or(1000) as u32;
    let per = args.get(1).copied().unwrap_or(20);
    let n = users as f64 * per as f64;
    let dir = tempfile::tempdir_in(".").unwrap();
    let mut redb = Redb {
        db: redb::Database::create(dir.path().join("r.redb")).unwrap(),
    };
    let fdb = fjall::Database::builder(dir.path().join("fjall"))
        .open()
        .unwrap();
    let ks = fdb
        .keyspace("q", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let mut fjall = Fjall { db: fdb, ks };
    let base = run(&mut redb, users, per);
    let other = run(&mut fjall, users, per);
    println!("workload: {users} users x {per} messages of {BODY} B; commits of 64 (durable)\n");
    println!("| engine | append msg/s | drain msg/s | remove msg/s | empty re-drain ms |");
    println!("|---|---|---|---|---|");
    for (name, f) in [(redb.name(), &base), (fjall.name(), &other)] {
        println!(
            "| {name} | {:.0} ({:.2}x) | {:.0} ({:.2}x) | {:.0} ({:.2}x) | {:.1} ({:.2}x) |",
            n / f.append.as_secs_f64(),
            base.append.as_secs_f64() / f.append.as_secs_f64(),
            n / f.drain.as_secs_f64(),
            base.drain.as_secs_f64() / f.drain.as_secs_f64(),
            n / f.remove.as_secs_f64(),
            base.remove.as_secs_f64() / f.remove.as_secs_f64(),
            f.redrain.as_secs_f64() * 1e3,
            base.redrain.as_secs_f64() / f.redrain.as_secs_f64(),
        );
    }
    println!("\n(ratios: redb time / engine time; above 1 = faster than redb)");
}
