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

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use im_protocol::{framing, ClientPacket, ServerPacket};
use im_shards::TokenAuth;
use monoio::io::{
    AsyncReadRent, AsyncReadRentExt, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;

const SIZES: [u32; 4] = [10, 100, 1_000, 10_000];
const MEMBERS: u32 = 10_000;
const PROBE_FROM: u32 = 20_001;
const PROBE_TO: u32 = 20_002;
const SECRET: &str = "fanout-bench-secret";
const DEADLINE: Duration = Duration::from_secs(300);

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// What the receivers record.
struct State {
    start: Instant,
    /// Group message seq → members still to receive it.
    pending: RefCell<HashMap<u64, u32>>,
    fanout: RefCell<Histogram<u64>>,
    delivery: RefCell<Histogram<u64>>,
    delivered: Cell<u64>,
    completed: Cell<u64>,
    /// The controller waiting for `completed` to move.
    waiter: Cell<Option<Waker>>,
}

impl State {
    fn complete(&self) {
        self.completed.set(self.completed.get() + 1);
        if let Some(w) = self.waiter.take() {
            w.wake();
        }
    }

    /// Resolves once `completed >= n`.
    async fn completed_at_least(&self, n: u64) {
        poll_fn(|cx| {
            if self.completed.get() >= n {
                Poll::Ready(())
            } else {
                self.waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// Message ids carry a kind, a sequence number and the send time (µs since start).
fn msg_id(kind: u8, seq: u64, t0: u64) -> [u8; 32] {
    let s = format!("{}{seq:015x}{t0:016x}", kind as char);
    let mut id = [0u8; 32];
    id.copy_from_slice(s.as_bytes());
    id
}

fn parse_id(id: &[u8; 32]) -> Option<(u8, u64, u64)> {
    let s = std::str::from_utf8(&id[1..]).ok()?;
    Some((
        id[0],
        u64::from_str_radix(&s[..15], 16).ok()?,
        u64::from_str_radix(&s[15..], 16).ok()?,
    ))
}

fn frame(p: &ClientPacket<'_>) -> Vec<u8> {
    let body = p.to_vec();
    let mut out = Vec::with_capacity(body.len() + 4);
    framing::put_prefix(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

async fn login(port: u16, uid: u32, auth: &TokenAuth) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.set_nodelay(true)?;
    let token = auth
        .mint(uid, Duration::from_secs(3600))
        .map_err(std::io::Error::other)?;
    let uid_s = uid.to_string();
    let connect = frame(&ClientPacket::Connect {
        username: uid_s.as_bytes(),
        password: token.as_bytes(),
        role: Some(0),
        flags: Some(1),
    });
    let (r, _) = s.write_all(connect).await;
    r?;
    let (r, buf) = s.read_exact(vec![0u8; 6]).await;
    r?;
    if buf != [0, 0, 0, 2, 2, 0] {
        return Err(std::io::Error::other(format!(
            "uid {uid}: CONNECT refused: {buf:?}"
        )));
    }
    Ok(s)
}

/// Reads pushes, records them, and acks them (one write per read).
async fn receiver(
    mut rd: OwnedReadHalf<TcpStream>,
    mut wr: OwnedWriteHalf<TcpStream>,
    st: Rc<State>,
) {
    let mut acc: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let (r, b) = rd.read(chunk).await;
        chunk = b;
        match r {
            Ok(0) | Err(_) => return,
            Ok(n) => acc.extend_from_slice(&chunk[..n]),
        }
        let mut acks = Vec::new();
        let used = framing::for_each(&acc, 1 << 20, |p| {
            let ack = match ServerPacket::decode(p) {
                Ok(ServerPacket::GroupPush { msg_id, .. }) => {
                    on_group(&st, msg_id);
                    Some(ClientPacket::GroupPubAck { msg_id })
                }
                Ok(ServerPacket::Push { msg_id, .. }) => {
                    on_direct(&st, msg_id);
                    Some(ClientPacket::PubAck { msg_id })
                }
                _ => None,
            };
            if let Some(a) = ack {
                acks.extend_from_slice(&frame(&a));
            }
            Ok::<(), ()>(())
        });
        match used {
            Ok(n) => {
                acc.drain(..n);
            }
            Err(_) => return,
        }
        if !acks.is_empty() {
            let (r, _) = wr.write_all(acks).await;
            if r.is_err() {
                return;
            }
        }
    }
}

fn on_group(st: &State, id: &[u8; 32]) {
    let Some((_, seq, t0)) = parse_id(id) else {
        return;
    };
    let now = st.now_us();
    let _ = st
        .delivery
        .borrow_mut()
        .record(now.saturating_sub(t0).max(1));
    st.delivered.set(st.delivered.get() + 1);
    let mut pending = st.pending.borrow_mut();
    if let Some(left) = pending.get_mut(&seq) {
        *left -= 1;
        if *left == 0 {
            pending.remove(&seq);
            let _ = st.fanout.borrow_mut().record(now.saturating_sub(t0).max(1));
            st.complete();
        }
    }
}

fn on_direct(st: &State, id: &[u8; 32]) {
    let Some((_, _, t0)) = parse_id(id) else {
        return;
    };
    let lat = st.now_us().saturating_sub(t0).max(1);
    let _ = st.delivery.borrow_mut().record(lat);
    st.delivered.set(st.delivered.get() + 1);
    st.complete();
}

/// Discards what the sender's connection receives (its acks).
async fn drain(mut rd: OwnedReadHalf<TcpStream>) {
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let (r, b) = rd.read(chunk).await;
        chunk = b;
        if !matches!(r, Ok(n) if n > 0) {
            return;
        }
    }
}

/// Sends `count` messages built by `make(seq, t0)` keeping at most `window` unfinished;
/// returns the elapsed time once all completed.
async fn run_phase(
    st: &State,
    wr: &mut OwnedWriteHalf<TcpStream>,
    count: u64,
    window: u64,
    fanout: u32,
    seq0: u64,
    make: impl Fn(u64, u64) -> Vec<u8>,
) -> Duration {
    let base = st.completed.get();
    let t = Instant::now();
    for i in 0..count {
        if i >= window {
            st.completed_at_least(base + i + 1 - window).await;
        }
        let seq = seq0 + i;
        if fanout > 0 {
            st.pending.borrow_mut().insert(seq, fanout);
        }
        let (r, _) = wr.write_all(make(seq, st.now_us())).await;
        r.expect("sender write");
    }
    monoio::select! {
        _ = st.completed_at_least(base + count) => {}
        _ = monoio::time::sleep(DEADLINE.saturating_sub(st.start.elapsed())) => {
            panic!("benchmark deadline passed");
        }
    }
    t.elapsed()
}

const PROBE_OFF: u8 = 0;
const PROBE_IDLE: u8 = 1;
const PROBE_BUSY: u8 = 2;
const PROBE_STOP: u8 = 3;
const PROBE_STEADY: u8 = 4;

/// The 1:1 probe, on its own thread and runtime so the member connections' work on the
/// main client thread never delays it: a message every 2 ms from one non-member to
/// another; latencies are kept per phase (idle, busy). Returns (idle, busy).
async fn probe(port: u16, phase: Arc<AtomicU8>) -> [Histogram<u64>; 3] {
    let auth = TokenAuth::new(SECRET);
    let start = Instant::now();
    let to = login(port, PROBE_TO, &auth).await.expect("probe login");
    let (mut from_rd, mut from) = login(port, PROBE_FROM, &auth)
        .await
        .expect("probe")
        .into_split();
    let (mut rd, mut wr) = to.into_split();
    monoio::spawn(async move {
        let mut chunk = vec![0u8; 4096];
        loop {
            let (r, b) = from_rd.read(chunk).await;
            chunk = b;
            if !matches!(r, Ok(n) if n > 0) {
                return;
            }
        }
    });
    let hists = Rc::new(RefCell::new([hist(), hist(), hist()]));
    let h2 = hists.clone();
    let ph = phase.clone();
    monoio::spawn(async move {
        let mut acc = Vec::new();
        let mut chunk = vec![0u8; 4096];
        loop {
            let (r, b) = rd.read(chunk).await;
            chunk = b;
            match r {
                Ok(n) if n > 0 => acc.extend_from_slice(&chunk[..n]),
                _ => return,
            }
            let now = start.elapsed().as_micros() as u64;
            let mut acks = Vec::new();
            let used = framing::for_each(&acc, 1 << 20, |p| {
                if let Ok(ServerPacket::Push { msg_id, .. }) = ServerPacket::decode(p) {
                    if let Some((kind, _, t0)) = parse_id(msg_id) {
                        let lat = now.saturating_sub(t0).max(1);
                        let mut h = h2.borrow_mut();
                        match kind {
                            b'I' => drop(h[0].record(lat)),
                            b'S' => drop(h[1].record(lat)),
                            b'L' => drop(h[2].record(lat)),
                            _ => {}
                        }
                    }
                    acks.extend_from_slice(&frame(&ClientPacket::PubAck { msg_id }));
                }
                Ok::<(), ()>(())
            });
            match used {
                Ok(n) => drop(acc.drain(..n)),
                Err(_) => return,
            }
            let (r, _) = wr.write_all(acks).await;
            if r.is_err() || ph.load(Ordering::Relaxed) == PROBE_STOP {
                return;
            }
        }
    });
    let mut n = 0u64;
    loop {
        let kind = match phase.load(Ordering::Relaxed) {
            PROBE_IDLE => b'I',
            PROBE_STEADY => b'S',
            PROBE_BUSY => b'L',
            PROBE_STOP => break,
            _ => b'O',
        };
        let id = msg_id(kind, n, start.elapsed().as_micros() as u64);
        let (r, _) = from
            .write_all(frame(&ClientPacket::Publish {
                to: PROBE_TO,
                msg_id: &id,
                payload: b"probe",
            }))
            .await;
        r.expect("probe write");
        n += 1;
        monoio::time::sleep(Duration::from_millis(2)).await;
    }
    monoio::time::sleep(Duration::from_millis(100)).await;
    let h = hists.borrow();
    h.clone()
}

struct Row {
    size: u32,
    lat_p50: u64,
    lat_p99: u64,
    per_sec: f64,
    tp_p99: u64,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn start_server(bin: &PathBuf, data: &std::path::Path, port: u16, ws: u16, chunk: usize) -> Child {
    for &n in &SIZES {
        let mut cmd = Command::new(bin);
        cmd.args(["--config", "/dev/null", "--data-dir"])
            .arg(data)
            .args(["group", "add", &n.to_string()])
            .args((1..=n).map(|u| u.to_string()));
        let out = cmd.output().expect("run imserver group add");
        assert!(out.status.success(), "group add: {out:?}");
    }
    let mut child = Command::new(bin)
        .args([
            "--config",
            "/dev/null",
            "--shards",
            "2",
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tcp-port",
            &port.to_string(),
            "--ws-port",
            &ws.to_string(),
        ])
        .arg("--data-dir")
        .arg(data)
        .env("IMSERVER_AUTH__SECRET", SECRET)
        .env("IMSERVER_DELIVERY__REDELIVERY_INTERVAL_MS", "30000")
        .env("IMSERVER_GROUPS__FANOUT_CHUNK", chunk.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn imserver");
    let out = child.stdout.take().expect("stdout");
    let lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    for l in lines.map_while(Result::ok) {
        if l == "ready" {
            return child;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("server did not start");
}

/// Kills the server when the benchmark ends, also on a panic.
struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server with this chunk setting and measures it; returns the report section.
fn run_one(bin: &PathBuf, chunk: usize) -> String {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (port, ws) = (free_port(), free_port());
    let _server = ServerGuard(start_server(bin, tmp.path(), port, ws, chunk));
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("runtime")
        .block_on(bench(port, chunk))
}

fn nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    r.rlim_cur
}

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
    let limit = nofile_limit();
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
        print!("{}", run_one(&bin, chunk));
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

async fn bench(port: u16, chunk: usize) -> String {
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
