//! Group fan-out benchmark against the real server binary over real loopback sockets.
//!
//! Starts `imserver` (release build, embedded stores, 2 shards) with groups of 10, 100,
//! 1,000 and 10,000 members (uids 1..=N, created with `imserver group add` before start),
//! connects 10,000 members over TCP plus a 1:1 probe pair, and measures from one monoio
//! client thread:
//!
//! - a **1:1 baseline** in the same run: one sender, PUBLISH round-robin to 1,000 users,
//!   1,024 in flight → deliveries/s (what fan-out is compared against);
//! - per group size, **fan-out latency** (send → the last member received it) with one
//!   message in flight, then **throughput** (deliveries/s) with 8 in flight;
//! - a **1:1 latency probe** (a message every 2 ms between two non-members) while idle and
//!   while the 10,000-member group is fanned out (one message at a time, then 8 in flight):
//!   the ratio shows whether fan-out stalls other sessions on the shards. `--chunk N` sets
//!   the server's `groups.fanout_chunk` values to run, one server per value, in the same
//!   invocation (default `256,1000000000`: the default, and no chunking for comparison).
//!
//! Every receiver acks every push (the server's redelivery machinery is live). Needs about
//! 20,100 descriptors in total: ~10,000 here and ~10,000 in the server, each under this
//! machine's `ulimit -n` of 20,000; a lower limit is reported before anything starts.
//!
//! Usage: `cargo build --release && cargo run --release -p im-benches --bin fanout-bench --
//! [--server target/release/imserver] [--out benches/FANOUT.md]`. Bounded: it gives up
//! after 5 minutes.

mod client;
mod probe;
mod scenario;
mod server;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Group sizes measured (gid = size, members 1..=size).
pub const SIZES: [u32; 4] = [10, 100, 1_000, 10_000];
/// Member connections held (uids 1..=MEMBERS; uid 1 sends).
pub const MEMBERS: u32 = 10_000;
pub const PROBE_FROM: u32 = 20_001;
pub const PROBE_TO: u32 = 20_002;
pub const SECRET: &str = "fanout-bench-secret";
/// The whole run gives up after this long.
pub const DEADLINE: Duration = Duration::from_secs(300);

fn main() {
    let mut args = std::env::args().skip(1);
    let mut bin = PathBuf::from("target/release/imserver");
    let mut out: Option<PathBuf> = None;
    let mut chunks: Vec<usize> = vec![256, 1_000_000_000];
    while let Some(a) = args.next() {
        match a.as_str() {
            "--server" => bin = args.next().expect("--server PATH").into(),
            "--out" => out = Some(args.next().expect("--out FILE").into()),
            "--chunk" => {
                chunks = args
                    .next()
                    .and_then(|c| c.split(',').map(|n| n.parse().ok()).collect())
                    .expect("--chunk N[,N...] (members per fan-out step)")
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let limit = server::nofile_limit();
    if limit < MEMBERS as u64 + 100 {
        eprintln!(
            "open-file limit is {limit}; this benchmark needs {} (ulimit -n)",
            MEMBERS + 100
        );
        std::process::exit(2);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut text = format!(
        "# Group fan-out benchmark\n\n\
         Command: `cargo build --release && cargo run --release -p im-benches --bin fanout-bench -- --out benches/FANOUT.md` \
         (one invocation: one section per `groups.fanout_chunk` setting, {}).\n\
         Machine: {cores} cores, shared and noisy; server with 2 shards, embedded stores, JSON envelope; one monoio \
         client thread holding {MEMBERS} member connections (TCP, loopback), every push acked; server, client and \
         probe all share the {cores} cores.\n\n\
         Fan-out latency = GROUP_PUBLISH sent → the last member received the push. \"vs 1:1 baseline\" divides group \
         deliveries/s by the 1:1 deliveries/s measured against the same server: above 1 means a group message costs \
         less per recipient than a 1:1 message (the push frame is built once and shared, membership is cached).\n",
        chunks.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
    );
    if let [chunk] = chunks[..] {
        // One configuration: run it here and print its section only.
        print!("{}", server::run_one(&bin, chunk));
        return;
    }
    // Several: one child process each (a process per server keeps descriptors and memory
    // of one configuration from leaking into the next), sections concatenated.
    for &chunk in &chunks {
        let out = Command::new(std::env::current_exe().expect("own path"))
            .arg("--server")
            .arg(&bin)
            .args(["--chunk", &chunk.to_string()])
            .stderr(Stdio::inherit())
            .output()
            .expect("run benchmark child");
        assert!(out.status.success(), "benchmark with chunk {chunk} failed");
        text += &String::from_utf8_lossy(&out.stdout);
    }
    print!("{text}");
    if let Some(path) = out {
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("write report");
        eprintln!("wrote {}", path.display());
    }
}
