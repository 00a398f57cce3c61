//! The measurement: connect every member, the 1:1 baseline, each group size (latency with
//! one message in flight, throughput with 8), the probe phases, and the report section.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use im_protocol::ClientPacket;
use im_token::TokenAuth;
use monoio::io::Splitable;

use crate::client::{drain, frame, hist, login, msg_id, receiver, run_phase, State};
use crate::probe::{probe, PROBE_BUSY, PROBE_IDLE, PROBE_OFF, PROBE_STEADY, PROBE_STOP};
use crate::{MEMBERS, SECRET, SIZES};

struct Row {
    size: u32,
    lat_p50: u64,
    lat_p99: u64,
    per_sec: f64,
    tp_p99: u64,
}

pub async fn bench(port: u16, chunk: usize) -> String {
    let auth = TokenAuth::new(SECRET);
    let st = Rc::new(State {
        start: Instant::now(),
        pending: RefCell::new(HashMap::new()),
        fanout: RefCell::new(hist()),
        delivery: RefCell::new(hist()),
        delivered: Cell::new(0),
        completed: Cell::new(0),
        waiter: Cell::new(None),
    });
    let t = Instant::now();
    for uid in 2..=MEMBERS {
        let s = login(port, uid, &auth).await.expect("member login");
        let (rd, wr) = s.into_split();
        monoio::spawn(receiver(rd, wr, st.clone()));
    }
    eprintln!("connected {} members in {:?}", MEMBERS, t.elapsed());
    let (rd, mut sender) = login(port, 1, &auth).await.expect("sender").into_split();
    monoio::spawn(drain(rd));
    let phase = Arc::new(AtomicU8::new(PROBE_IDLE));
    let probe_thread = {
        let phase = phase.clone();
        std::thread::spawn(move || {
            monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .build()
                .expect("probe runtime")
                .block_on(probe(port, phase))
        })
    };
    monoio::time::sleep(Duration::from_secs(2)).await;
    phase.store(PROBE_OFF, Ordering::Relaxed);

    // 1:1 baseline: 20,000 messages round-robin to uids 2..=1001, 64 in flight.
    st.delivery.borrow_mut().reset();
    let n_base = 20_000u64;
    let took = run_phase(&st, &mut sender, n_base, 1024, 0, 0, |seq, t0| {
        let id = msg_id(b'B', seq, t0);
        frame(&ClientPacket::Publish {
            to: 2 + (seq % 1000) as u32,
            msg_id: &id,
            payload: b"hello from the benchmark",
        })
    })
    .await;
    let base_rate = n_base as f64 / took.as_secs_f64();
    let base_p99 = st.delivery.borrow().value_at_quantile(0.99);
    eprintln!("1:1 baseline: {base_rate:.0} deliveries/s");

    let mut rows = Vec::new();
    let mut seq = 1_000_000u64;
    for &size in &SIZES {
        let count = (200_000 / size as u64).clamp(20, 300);
        let make = |seq: u64, t0: u64| {
            let id = msg_id(b'G', seq, t0);
            frame(&ClientPacket::GroupPublish {
                group: size,
                msg_id: &id,
                payload: b"hello from the benchmark",
            })
        };
        // Latency: one message at a time.
        st.fanout.borrow_mut().reset();
        let last = size == SIZES[SIZES.len() - 1];
        if last {
            phase.store(PROBE_STEADY, Ordering::Relaxed);
        }
        run_phase(&st, &mut sender, count, 1, size - 1, seq, make).await;
        phase.store(PROBE_OFF, Ordering::Relaxed);
        seq += count;
        let (lat_p50, lat_p99) = {
            let h = st.fanout.borrow();
            (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
        };
        // Throughput: 8 in flight.
        st.fanout.borrow_mut().reset();
        let before = st.delivered.get();
        if last {
            phase.store(PROBE_BUSY, Ordering::Relaxed);
        }
        let took = run_phase(&st, &mut sender, count, 8, size - 1, seq, make).await;
        phase.store(PROBE_OFF, Ordering::Relaxed);
        seq += count;
        let per_sec = (st.delivered.get() - before) as f64 / took.as_secs_f64();
        let tp_p99 = st.fanout.borrow().value_at_quantile(0.99);
        eprintln!("group {size}: p50 {lat_p50} µs, p99 {lat_p99} µs, {per_sec:.0} deliveries/s");
        rows.push(Row {
            size,
            lat_p50,
            lat_p99,
            per_sec,
            tp_p99,
        });
    }
    phase.store(PROBE_STOP, Ordering::Relaxed);
    let [probe_idle, probe_steady, probe_busy] = probe_thread.join().expect("probe thread");

    let mut r = format!("\n## groups.fanout_chunk = {chunk}\n\n");
    r += &format!(
        "**1:1 baseline (same run):** {base_rate:.0} deliveries/s (one sender, 1,024 in flight), p99 delivery latency {base_p99} µs.\n\n"
    );
    r += "| group size | fan-out p50 (µs) | fan-out p99 (µs) | deliveries/s (8 in flight) | vs 1:1 baseline | fan-out p99 under load (µs) |\n";
    r += "| ---: | ---: | ---: | ---: | ---: | ---: |\n";
    for row in &rows {
        r += &format!(
            "| {} | {} | {} | {:.0} | {:.1}x | {} |\n",
            row.size,
            row.lat_p50,
            row.lat_p99,
            row.per_sec,
            row.per_sec / base_rate,
            row.tp_p99
        );
    }
    let q = |h: &Histogram<u64>| {
        (
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max(),
            h.len(),
        )
    };
    let (ip50, ip99, imax, in_) = q(&probe_idle);
    r += &format!(
        "\n**1:1 probe** (a message every 2 ms between two non-members, on its own client thread):\n\n\
         | while | p50 (µs) | p99 (µs) | max (µs) | samples | p99 vs idle |\n| --- | ---: | ---: | ---: | ---: | ---: |\n\
         | idle | {ip50} | {ip99} | {imax} | {in_} | 1.0x |\n"
    );
    for (name, h) in [
        ("10,000-member group, 1 message in flight", &probe_steady),
        (
            "10,000-member group, 8 in flight (CPU saturated)",
            &probe_busy,
        ),
    ] {
        let (p50, p99, max, n) = q(h);
        r += &format!(
            "| {name} | {p50} | {p99} | {max} | {n} | {:.1}x |\n",
            p99 as f64 / ip99.max(1) as f64
        );
    }
    r
}
