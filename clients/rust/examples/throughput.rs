//! The client library's throughput against a running server, to set beside the load
//! generator's `p2p` on the same server: `--pairs` pairs of users, each sender keeping
//! `--window` sends in flight (each task awaits its PUB_ACK, then sends the next), each
//! receiver taking messages from `Events` (acknowledged automatically). Prints deliveries/s
//! over `--seconds` after a one-second warm-up, and with `--server-pid` the server's CPU
//! (cores) over the same interval.
//!
//! ```sh
//! cargo run --release -p imclient --example throughput -- --pairs 50 --window 32 \
//!     --server-pid $(pidof imserver)
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use imclient::{Client, ClientConfig, Event};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "tcp://127.0.0.1:19095")]
    server: String,
    /// The server's `auth.secret` (tokens are minted here).
    #[arg(long, default_value = "change-me-im-secret")]
    secret: String,
    #[arg(long, default_value_t = 50)]
    pairs: u32,
    #[arg(long, default_value_t = 32)]
    window: u32,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    #[arg(long, default_value_t = 900_000)]
    uid_base: u32,
    /// Worker threads of the client's tokio runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Report this process's CPU use (the server's) over the measured interval.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let auth = im_token::TokenAuth::new(&args.secret);
    let endpoint: imclient::Endpoint = args.server.parse()?;
    let connect = |uid: u32| {
        let token = auth.mint(uid, Duration::from_secs(3600)).expect("token");
        Client::connect(ClientConfig::new(endpoint.clone(), uid, token))
    };
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let payload = vec![b'x'; args.size];
    let mut tasks = Vec::new();
    for p in 0..args.pairs {
        let (from, to) = (args.uid_base + 2 * p, args.uid_base + 2 * p + 1);
        let (sender, _sender_events) = connect(from).await?;
        let (_receiver, mut events) = connect(to).await?;
        let count = Arc::clone(&received);
        tasks.push(tokio::spawn(async move {
            let _keep = (_receiver, _sender_events);
            while let Some(ev) = events.recv().await {
                if let Event::Message(_) = ev {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        for _ in 0..args.window {
            let (sender, stop, payload) = (sender.clone(), Arc::clone(&stop), payload.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if sender.send(to, &payload).await.is_err() {
                        break;
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (t0, n0) = (Instant::now(), received.load(Ordering::Relaxed));
    let cpu0 = args.server_pid.and_then(cpu_seconds);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (secs, n) = (
        t0.elapsed().as_secs_f64(),
        received.load(Ordering::Relaxed) - n0,
    );
    let cpu1 = args.server_pid.and_then(cpu_seconds);
    stop.store(true, Ordering::Relaxed);
    let rate = n as f64 / secs;
    let cores = match (cpu0, cpu1) {
        (Some(a), Some(b)) => format!("{:.2}", (b - a) / secs),
        _ => "-".into(),
    };
    println!(
        "imclient p2p: pairs {} window {} size {}: {:.0} deliveries/s over {:.1} s, server cores {}",
        args.pairs, args.window, args.size, rate, secs, cores
    );
    println!(
        "{{\"deliveries_per_s\":{rate:.0},\"server_cores\":\"{cores}\",\"delivered_total\":{},\"pairs\":{},\"window\":{}}}",
        received.load(Ordering::Relaxed),
        args.pairs,
        args.window
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}
