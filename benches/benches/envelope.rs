//! The push frame the sending shard builds for every accepted 1:1 PUBLISH: the packet with
//! the JSON envelope around a 64-byte chat text (`{"from","to","role","content"}`), checked
//! for characters that need escaping and copied in.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use im_shards::bench_api::push_frame;

fn envelope(c: &mut Criterion) {
    let msg_id = [b'7'; 32];
    let text = b"see you at the station at half past six, bring the tickets please";
    let payload = &text[..64];
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    g.bench_function("push_frame_json_64B", |b| {
        b.iter(|| {
            push_frame(
                black_box(1_000_001),
                black_box(1_000_002),
                &msg_id,
                black_box(payload),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, envelope);
criterion_main!(benches);
