//! A bounded soak: mixed traffic (1:1 over TCP at a steady rate, group fan-out over
//! WebSocket, a block of idle connections answering heartbeats) for `SOAK_SECS` seconds
//! (default 20 for CI). The server's resident memory is sampled every second; after warm-up
//! it must stay flat (the mean of the last quarter within 10% + 8 MiB of the mean of the
//! first quarter after warm-up), and every loadgen run must finish with nothing lost,
//! duplicated or reordered.
//!
//! The long run (10 minutes, release build):
//!
//! ```sh
//! cargo build --release -p imserver -p loadgen
//! SOAK_SECS=600 cargo test --release -p loadgen --test soak -- --nocapture
//! ```
//!
//! The warm-up covers the dedupe window (message ids are remembered that long, so memory
//! legitimately grows until the first ids expire); short runs shorten the window to fit.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{report, Server};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn soak_mixed_traffic_memory_flat_nothing_lost() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dedupe_ms = (secs * 1000 / 6).min(60_000);
    let warmup = Duration::from_millis(dedupe_ms + 5_000).max(Duration::from_secs(secs / 4));
    let srv = Server::start(&[(
        "IMSERVER_DELIVERY__DEDUPE_WINDOW_MS",
        &dedupe_ms.to_string(),
    )]);
    let duration = format!("{secs}s");
    let (tcp, ws) = (srv.tcp.to_string(), srv.ws.to_string());
    let admin = srv.admin_url();
    let runs: Vec<(&str, Vec<&str>)> = vec![
        (
            "p2p",
            vec![
                "--uid-base",
                "100000",
                "--port",
                &tcp,
                "p2p",
                "--pairs",
                "50",
                "--rate",
                "50",
            ],
        ),
        (
            "group",
            vec![
                "--uid-base",
                "200000",
                "--transport",
                "ws",
                "--port",
                &ws,
                "--admin-url",
                &admin,
                "group",
                "--groups",
                "10",
                "--members",
                "20",
                "--rate",
                "10",
            ],
        ),
        (
            "idle",
            vec![
                "--uid-base",
                "300000",
                "--port",
                &tcp,
                "idle",
                "--conns",
                "500",
            ],
        ),
    ];
    let children: Vec<_> = runs
        .iter()
        .map(|(name, args)| {
            let c = common::loadgen_cmd(&duration)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start loadgen");
            (*name, c)
        })
        .collect();
    let t0 = Instant::now();
    let mut samples: Vec<(f64, u64)> = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        samples.push((t0.elapsed().as_secs_f64(), rss_kib(srv.pid())));
    }
    for (name, c) in children {
        let out = c.wait_with_output().expect("loadgen finished");
        let r = report(&out);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for k in ["lost", "duplicated", "reordered", "unexpected"] {
            assert_eq!(r[k], 0, "{name}: {k} in {r}");
        }
        eprintln!(
            "soak {name}: {} delivered, p99 {} µs, errors {}",
            r["delivered"], r["latency_us"]["p99"], r["errors"]
        );
    }
    // Memory oscillates (message ids expiring from the dedupe window, allocator reuse), so
    // compare means: the first quarter after warm-up against the last quarter of the run.
    let after: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= warmup.as_secs_f64())
        .map(|(_, r)| *r)
        .collect();
    assert!(after.len() >= 8, "run longer than the warm-up ({warmup:?})");
    let q = after.len() / 4;
    let mean = |v: &[u64]| v.iter().sum::<u64>() / v.len() as u64;
    let (early, late) = (mean(&after[..q]), mean(&after[after.len() - q..]));
    let (min, max) = (
        after.iter().min().copied().unwrap_or(0),
        after.iter().max().copied().unwrap_or(0),
    );
    eprintln!(
        "soak {secs} s: server RSS {} KiB at start; after the {warmup:?} warm-up: min {min}, max {max}, \
         mean of the first quarter {early} KiB, of the last quarter {late} KiB ({:+.1}%)",
        samples.first().map_or(0, |s| s.1),
        100.0 * (late as f64 - early as f64) / early as f64
    );
    assert!(
        late <= early + early / 10 + 8 * 1024,
        "memory grew after warm-up: mean {early} -> {late} KiB ({samples:?})"
    );
}
