//! The duplicate-publish check of every PUBLISH, at a busy shard's steady state: 100 senders
//! with full tables (1,024 ids each, the default), every id new, so each admit also evicts
//! the sender's oldest id. Senders take turns, as pairs flat out do, so the tables are not
//! all in cache.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use im_shards::bench_api::Dedupe;

const SENDERS: u32 = 100;
const PER_SENDER: usize = 1_024;

/// A MsgId as clients make them: 32 bytes that differ per message.
fn id(n: u64) -> [u8; 32] {
    let mut id = [b'0'; 32];
    id[..8].copy_from_slice(&n.to_le_bytes());
    id[8..16].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    id
}

fn dedupe(c: &mut Criterion) {
    let mut d = Dedupe::new(60_000_000, PER_SENDER);
    let mut n = 0u64;
    // Fill every table, so the measured admits evict.
    for _ in 0..PER_SENDER {
        for uid in 0..SENDERS {
            assert!(d.admit(uid, &id(n), 1));
            n += 1;
        }
    }
    let mut g = c.benchmark_group("dedupe");
    g.throughput(Throughput::Elements(u64::from(SENDERS)));
    g.bench_function("admit_full_100_senders", |b| {
        b.iter(|| {
            for uid in 0..SENDERS {
                black_box(d.admit(uid, &id(n), 2));
                n += 1;
            }
        })
    });
    g.finish();
}

criterion_group!(benches, dedupe);
criterion_main!(benches);
