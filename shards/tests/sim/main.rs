//! Deterministic simulation of the shard engines (in the spirit of TigerBeetle's VOPR and
//! FoundationDB's simulation testing).
//!
//! Each seed builds a world — 1 to 3 shard engines, a few users and groups, a persistence
//! mode, a duplicate-login policy, a fault rate — and runs a random schedule of clients
//! (logins, duplicate logins, 1:1, group and part publishes, acks and missing acks, slow
//! readers, disconnects, retransmissions, invalid input, server-side sends) and faults
//! (failing and slow storage, membership look-ups that fail, stalled mail between shards,
//! crashes that lose every engine's memory while the store survives) on a virtual clock.
//! After every event it checks the engines' own bookkeeping and the clients' view
//! (no push after its ack, at most 1 + `redelivery_max` copies per session, per-sender
//! order), and at the end, after everyone reconnected and acked, that every message the
//! server acknowledged reached every recipient (under `on_failure`, except those
//! acknowledged before a crash) and that the store is empty.
//!
//! The store here is a model (an ordered map behind one FIFO queue with latency, as the
//! storage thread), not redb: the point is a schedule that is a pure function of the seed.
//!
//! - `cargo test -p im-shards --test sim` runs seeds for `SIM_SECONDS` (default 45).
//! - `SIM_SEED=N cargo test -p im-shards --test sim` replays one seed.
//! - `SIM_STEPS` sets the steps per seed (default 3000).

mod ledger;
mod rng;
mod world;

use std::time::{Duration, Instant};

use world::World;

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs one seed; the error names the step and the setup.
fn run(seed: u64, steps: u64) -> Result<World, String> {
    let mut w = World::new(seed);
    for _ in 0..steps {
        if let Err(e) = w.step() {
            return Err(format!("step {}: {e}\n  setup: {:?}", w.steps, w.setup));
        }
    }
    if let Err(e) = w.settle() {
        return Err(format!(
            "at the end (after {} steps): {e}\n  setup: {:?}",
            w.steps, w.setup
        ));
    }
    Ok(w)
}

#[test]
fn simulation() {
    let steps = env("SIM_STEPS").unwrap_or(3_000);
    if let Some(seed) = env("SIM_SEED") {
        if std::env::var("SIM_TRACE").is_ok() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    std::env::var("SIM_LOG").unwrap_or_else(|_| "im_shards=debug".into()),
                )
                .with_writer(std::io::stderr)
                .try_init();
        }
        if let Err(e) = run(seed, steps) {
            panic!("seed {seed} failed: {e}");
        }
        return;
    }
    let budget = Duration::from_secs(env("SIM_SECONDS").unwrap_or(45));
    let first = env("SIM_FIRST_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            * 1_000
    });
    let start = Instant::now();
    let (mut seeds, mut total_steps) = (0u64, 0u64);
    let mut totals = ledger::Stats::default();
    let mut seed = first;
    while start.elapsed() < budget {
        match run(seed, steps) {
            Ok(w) => {
                total_steps += w.steps;
                let s = w.ledger.stats;
                totals.accepted += s.accepted;
                totals.received += s.received;
                totals.redelivered += s.redelivered;
                totals.crashes += s.crashes;
                totals.refused += s.refused;
            }
            Err(e) => panic!(
                "seed {seed} failed: {e}\n  replay: SIM_SEED={seed} SIM_STEPS={steps} cargo test -p im-shards --test sim"
            ),
        }
        seeds += 1;
        seed += 1;
    }
    println!(
        "simulation: {seeds} seeds ({first}..{seed}), {total_steps} steps, {} messages acknowledged, {} pushes received, {} redelivered, {} refused, {} crashes, in {:.1?}",
        totals.accepted,
        totals.received,
        totals.redelivered,
        totals.refused,
        totals.crashes,
        start.elapsed()
    );
    assert!(
        seeds > 0 && totals.accepted > 0,
        "the simulation ran nothing"
    );
}
