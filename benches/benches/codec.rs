//! Codec micro-benchmarks: encoding a PUBLISH with its length prefix, and decoding a
//! server push out of a buffer of framed packets, as the session loop does.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use im_protocol::{framing, ClientPacket, ServerPacket};

fn codec(c: &mut Criterion) {
    let msg_id = *b"0123456789abcdef0123456789abcdef";
    let payload = vec![b'x'; 64];
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_publish_64B", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            let p = ClientPacket::Publish {
                to: black_box(42),
                msg_id: &msg_id,
                payload: &payload,
            };
            framing::put_prefix(&mut out, p.encoded_len());
            p.encode(&mut out);
            black_box(out.len())
        })
    });
    let push = ServerPacket::Push {
        msg_id: &msg_id,
        payload: &payload,
    }
    .to_vec();
    let mut stream = Vec::new();
    for _ in 0..64 {
        framing::put_prefix(&mut stream, push.len());
        stream.extend_from_slice(&push);
    }
    g.throughput(Throughput::Elements(64));
    g.bench_function("decode_64_framed_pushes", |b| {
        b.iter(|| {
            let mut n = 0u32;
            let used = framing::for_each(black_box(&stream), 1 << 20, |p| {
                if let Ok(ServerPacket::Push { payload, .. }) = ServerPacket::decode(p) {
                    n += payload.len() as u32;
                }
                Ok::<(), ()>(())
            });
            black_box((used.is_ok(), n))
        })
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
