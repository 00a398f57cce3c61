//! The mailbox hop between shards: shard 0 puts fan-out batches in shard 1's inbox while
//! another thread drains it, as two shard threads do. Measures hops per second through the
//! bounded lock-free queue (back-pressure included: a full queue makes the sender spin).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use im_shards::engine::{Batch, Time, Uids};
use im_shards::Mesh;

const HOPS: u64 = 10_000;

/// Puts one group fan-out batch (a shared frame and member slice, as the server sends them)
/// in the `from → to` mailbox. `false`: the mailbox is full.
fn send_batch(
    mesh: &Mesh<Batch>,
    from: usize,
    to: usize,
    frame: &Bytes,
    uids: &Arc<[u32]>,
) -> bool {
    let batch = Batch {
        accepted: Time::default(),
        frame: frame.clone(),
        uids: Uids::Shared(uids.clone()),
        seqs: None,
        exclude: 0,
        hops: 0,
    };
    mesh.try_send(from, to, batch).is_ok()
}

/// Empties shard `me`'s inbox; returns how many mails it held.
fn drain(mesh: &Mesh<Batch>, me: usize) -> usize {
    mesh.drain(me, drop)
}

fn mailbox(c: &mut Criterion) {
    let mesh: Arc<Mesh<Batch>> = Arc::new(Mesh::new(2, 1024));
    let frame = Bytes::from(vec![0u8; 128]);
    let uids: Arc<[u32]> = (0..16).collect::<Vec<u32>>().into();
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (mesh, stop) = (mesh.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if drain(&mesh, 1) == 0 {
                    std::hint::spin_loop();
                }
            }
        })
    };
    let mut g = c.benchmark_group("mailbox");
    g.throughput(Throughput::Elements(HOPS));
    g.bench_function("hop_cross_thread_10k", |b| {
        b.iter(|| {
            for _ in 0..HOPS {
                while !send_batch(&mesh, 0, 1, &frame, &uids) {
                    std::hint::spin_loop();
                }
            }
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("hop_same_thread", |b| {
        // Baseline without the other core: enqueue and dequeue on one thread (shard 0 to
        // itself, which nothing else drains).
        b.iter(|| {
            let sent = send_batch(&mesh, 0, 0, &frame, &uids);
            (sent, drain(&mesh, 0))
        })
    });
    g.finish();
    stop.store(true, Ordering::Relaxed);
    let _ = consumer.join();
}

criterion_group!(benches, mailbox);
criterion_main!(benches);
