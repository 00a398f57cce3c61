//! Thread-per-core execution: one OS thread per loadgen shard, each with its own monoio
//! runtime (io_uring where the kernel has it, epoll otherwise) and its own [`Local`] state;
//! the main thread prints the live progress line and merges the results.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::cli::Common;
use crate::conn::Endpoint;
use crate::local::{Counters, Local};
use crate::proto::Proto;
use crate::report::ThreadResult;

/// What every thread of a run shares.
pub struct Ctx {
    pub common: Common,
    pub ep: Endpoint,
    pub proto: Proto,
    pub run: u32,
    pub uid_base: u32,
    pub threads: usize,
    /// Every thread waits here once its connections are up, so sending starts together.
    pub ready: Barrier,
    pub server_pid: Option<u32>,
}

/// Runs `body` on every thread and returns what each produced.
pub fn run<F, Fut>(ctx: Arc<Ctx>, body: F) -> anyhow::Result<Vec<ThreadResult>>
where
    F: Fn(usize, Arc<Ctx>, Rc<Local>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = BTreeMap<String, f64>>,
{
    let counters: Vec<Arc<Counters>> = (0..ctx.threads).map(|_| Arc::default()).collect();
    let mut handles = Vec::new();
    for (i, c) in counters.iter().enumerate() {
        let (ctx, body, c) = (ctx.clone(), body.clone(), c.clone());
        let h = std::thread::Builder::new()
            .name(format!("loadgen-{i}"))
            .spawn(move || -> std::io::Result<ThreadResult> {
                let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                    .with_entries(4096)
                    .enable_timer()
                    .build()?;
                let local = Rc::new(Local::new(ctx.run, c.clone()));
                let extra = rt.block_on(body(i, ctx, local.clone()));
                let checks = local.finish();
                let hists = local.hists.take();
                let errors = local.errors.take();
                Ok(ThreadResult {
                    hists,
                    errors,
                    checks,
                    sent: c.sent.load(Relaxed),
                    acked: c.acked.load(Relaxed),
                    delivered: c.delivered.load(Relaxed),
                    conns: c.conns.load(Relaxed),
                    send_start_us: local.phase_start_us.get(),
                    last_delivery_us: local.last_delivery_us.get(),
                    extra,
                })
            })?;
        handles.push(h);
    }
    let t0 = Instant::now();
    let mut last = (0u64, Instant::now());
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        if ctx.common.quiet || last.1.elapsed() < Duration::from_secs(1) {
            continue;
        }
        let sum = |f: fn(&Counters) -> u64| counters.iter().map(|c| f(c)).sum::<u64>();
        let delivered = sum(|c| c.delivered.load(Relaxed));
        let rate = (delivered - last.0) as f64 / last.1.elapsed().as_secs_f64();
        last = (delivered, Instant::now());
        eprint!(
            "\r[{:>4.0}s] conns {:>6} · sent {:>9} · acked {:>9} · delivered {:>9} ({:>8.0}/s) · errors {}   ",
            t0.elapsed().as_secs_f64(),
            sum(|c| c.conns.load(Relaxed)),
            sum(|c| c.sent.load(Relaxed)),
            sum(|c| c.acked.load(Relaxed)),
            delivered,
            rate,
            sum(|c| c.errors.load(Relaxed)),
        );
        let _ = std::io::stderr().flush();
    }
    if !ctx.common.quiet {
        eprintln!();
    }
    let mut out = Vec::new();
    for h in handles {
        match h.join() {
            Ok(r) => out.push(r?),
            Err(_) => anyhow::bail!("a loadgen thread panicked"),
        }
    }
    Ok(out)
}
