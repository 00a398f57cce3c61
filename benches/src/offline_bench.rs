//! Offline-store throughput per backend available here, same workload through the
//! `OfflineStore` trait (what the storage thread calls): the embedded redb store, and Redis
//! (a real `redis-server` on a free port) without persistence and with
//! `appendonly yes` + `appendfsync always` (what `before_ack` needs to mean "durable").
//!
//! Workload: USERS users × PER messages of 200 bytes, written in group commits of 256
//! messages (one `write_batch` each, as the storage thread batches a turn); then drained
//! user by user in pages of 256 (`fetch`), each page removed after it is "acked" (one
//! `write_batch` of removals per page). Ratios are against the embedded store in the same
//! run. ScyllaDB cannot run on this machine (see README), so it is not in the table.
//!
//! Usage: `cargo run --release -p im-benches --bin offline-bench -- [USERS] [PER] [--out FILE]`
//! (defaults 200 × 100).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use im_storage::{EmbeddedStore, OfflineMessage, OfflineStore, RedisConfig, RedisOffline, Write};
use im_testkit::RedisServer;

const BATCH: usize = 256;

struct Result {
    name: &'static str,
    write: Duration,
    drain: Duration,
}

fn run(name: &'static str, store: &dyn OfflineStore, users: u32, per: u32) -> Result {
    let frame = Bytes::from(vec![b'm'; 200]);
    let far = u64::MAX / 2;
    let msgs: Vec<OfflineMessage> = (0..per)
        .flat_map(|_| {
            (1..=users).map(|uid| OfflineMessage {
                uid,
                frame: frame.clone(),
                expires_at_ms: far,
            })
        })
        .collect();
    let t = Instant::now();
    for chunk in msgs.chunks(BATCH) {
        store.write_batch(&[Write::Append(chunk)]).expect("append");
    }
    let write = t.elapsed();
    let t = Instant::now();
    let mut drained = 0usize;
    for uid in 1..=users {
        let mut after = 0;
        loop {
            let page = store.fetch(uid, after, BATCH, 1).expect("fetch");
            if page.is_empty() {
                break;
            }
            let seqs: Vec<u64> = page.iter().map(|m| m.seq).collect();
            after = *seqs.last().unwrap_or(&after);
            drained += page.len();
            store
                .write_batch(&[Write::Remove { uid, seqs: &seqs }])
                .expect("remove");
        }
    }
    let drain = t.elapsed();
    assert_eq!(drained, msgs.len(), "{name}: every message drained once");
    for uid in [1, users] {
        assert_eq!(store.count(uid).expect("count"), 0, "{name}: queues empty");
    }
    Result { name, write, drain }
}

fn redis_store(redis: &RedisServer, rt: &tokio::runtime::Runtime) -> Arc<dyn OfflineStore> {
    let cfg = RedisConfig {
        port: redis.port,
        timeout_ms: 10_000,
        ..RedisConfig::default()
    };
    Arc::new(RedisOffline::connect(&cfg, rt.handle().clone()).expect("connect redis"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut nums = Vec::new();
    let mut out = None;
    while let Some(a) = args.next() {
        if a == "--out" {
            out = args.next();
        } else {
            nums.push(a.parse::<u32>().expect("USERS PER"));
        }
    }
    let users = nums.first().copied().unwrap_or(200);
    let per = nums.get(1).copied().unwrap_or(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");

    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = EmbeddedStore::open(&dir.path().join("offline.redb")).expect("redb");
    let mut results = vec![run(
        "embedded (redb, fsync per commit)",
        &embedded,
        users,
        per,
    )];
    let plain = RedisServer::start();
    results.push(run(
        "redis, no persistence",
        &*redis_store(&plain, &rt),
        users,
        per,
    ));
    drop(plain);
    let aof = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    results.push(run(
        "redis, appendfsync always",
        &*redis_store(&aof, &rt),
        users,
        per,
    ));

    let total = (users * per) as f64;
    let base = &results[0];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut r = format!(
        "# Offline store throughput\n\nCommand: `cargo run --release -p im-benches --bin offline-bench -- {users} {per} --out benches/OFFLINE.md`. \
         {users} users × {per} messages of 200 bytes; writes in group commits of {BATCH}; drain in pages of {BATCH}, each removed after fetch. \
         Machine: {cores} cores, shared and noisy. Ratios: throughput relative to the embedded store in the same run (above 1 = faster).\n\n\
         | backend | write msgs/s | vs embedded | drain msgs/s | vs embedded |\n| --- | ---: | ---: | ---: | ---: |\n"
    );
    for x in &results {
        let (w, d) = (total / x.write.as_secs_f64(), total / x.drain.as_secs_f64());
        let (bw, bd) = (
            total / base.write.as_secs_f64(),
            total / base.drain.as_secs_f64(),
        );
        r += &format!(
            "| {} | {w:.0} | {:.2}x | {d:.0} | {:.2}x |\n",
            x.name,
            w / bw,
            d / bd
        );
    }
    r += "\nScyllaDB: not measured here (it cannot be installed on this machine).\n";
    print!("{r}");
    if let Some(path) = out {
        std::fs::write(&path, &r).expect("write report");
        eprintln!("wrote {path}");
    }
}
