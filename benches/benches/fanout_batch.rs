//! Building a group fan-out on the sender's shard: the push frame encoded once with its
//! JSON envelope, and the members split by owner shard, for groups of 100 and 10,000.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use im_shards::bench_api::build_fanout;

fn fanout(c: &mut Criterion) {
    let msg_id = *b"0123456789abcdef0123456789abcdef";
    let payload = vec![b'x'; 64];
    let mut g = c.benchmark_group("fanout_batch");
    for members in [100u32, 10_000] {
        let uids: Vec<u32> = (1..=members).collect();
        g.throughput(Throughput::Elements(members as u64));
        g.bench_with_input(BenchmarkId::from_parameter(members), &uids, |b, uids| {
            b.iter(|| black_box(build_fanout(7, 1, &msg_id, &payload, black_box(uids), 2)))
        });
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
