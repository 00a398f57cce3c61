//! The scenarios, and what they share: logging users in (a few at a time, so the target's
//! accept backlog is not overrun), the sender loop with its rate and window, and the drain at
//! the end of a run. All of it runs inside one loadgen thread.

pub mod connect;
pub mod group;
pub mod idle;
pub mod offline;
pub mod p2p;

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn;
use crate::link::Link;
use crate::local::{Counters, Local};
use crate::proto::{Dest, LoginError};
use crate::runner::Ctx;
use crate::stamp::{now_us, Stamp};

/// Logins in flight at once per thread.
const LOGIN_BATCH: usize = 64;

/// One user to log in, and the MQTT topics it subscribes to.
pub struct UserSpec {
    pub uid: u32,
    pub topics: Vec<String>,
}

/// Opens, logs in and starts one connection; records the connect latency.
pub async fn login(
    ctx: &Ctx,
    local: &Rc<Local>,
    uid: u32,
    topics: &[String],
) -> Result<Rc<Link>, LoginError> {
    let t0 = Instant::now();
    let (mut rd, mut wr, mut fr) = conn::open(&ctx.ep, uid as usize).await?;
    ctx.proto
        .login(&mut rd, &mut wr, &mut fr, uid, topics)
        .await?;
    let _ = local
        .hists
        .borrow_mut()
        .connect
        .record(t0.elapsed().as_micros().max(1) as u64);
    Counters::add(&local.counters.conns, 1);
    Ok(Link::start(
        uid,
        ctx.proto.clone(),
        local.clone(),
        rd,
        wr,
        fr,
    ))
}

/// [`login`], retried for up to `--login-retry` (a target that is restarting).
async fn login_retrying(
    ctx: &Ctx,
    local: &Rc<Local>,
    uid: u32,
    topics: &[String],
) -> Result<Rc<Link>, LoginError> {
    let deadline = Instant::now() + ctx.common.login_retry;
    loop {
        match login(ctx, local, uid, topics).await {
            Err(_) if Instant::now() < deadline => {
                monoio::time::sleep(Duration::from_millis(100)).await
            }
            r => return r,
        }
    }
}

/// Logs every user in, [`LOGIN_BATCH`] at a time. Fails with the first error and a count
/// (a message scenario with a missing user would only measure that user's absence).
pub async fn login_all(
    ctx: &Arc<Ctx>,
    local: &Rc<Local>,
    users: Vec<UserSpec>,
) -> Result<Vec<Rc<Link>>, String> {
    let mut links = Vec::with_capacity(users.len());
    let mut failed = 0usize;
    let mut first = None;
    let total = users.len();
    let mut it = users.into_iter().peekable();
    while it.peek().is_some() {
        let batch: Vec<_> = it
            .by_ref()
            .take(LOGIN_BATCH)
            .map(|u| {
                let (ctx, local) = (ctx.clone(), local.clone());
                monoio::spawn(async move {
                    login_retrying(&ctx, &local, u.uid, &u.topics)
                        .await
                        .map_err(|e| (u.uid, e))
                })
            })
            .collect();
        for h in batch {
            match h.await {
                Ok(l) => links.push(l),
                Err((uid, e)) => {
                    local.error(e.kind());
                    failed += 1;
                    first.get_or_insert(format!("uid {uid}: {e}"));
                }
            }
        }
    }
    match first {
        None => Ok(links),
        Some(e) => Err(format!("{failed} of {total} logins failed; first: {e}")),
    }
}

/// How one sender sends.
#[derive(Clone, Copy)]
pub struct SendPlan {
    pub dest: Dest,
    pub stream: u32,
    /// Messages per second; 0: flat out.
    pub rate: f64,
    pub window: u32,
    /// Stop after this many messages (`u32::MAX`: until `end`).
    pub count: u32,
    /// The window also bounds messages not yet received by every recipient (closed loop:
    /// a flat-out sender runs at the rate the target delivers, never ahead of its slowest
    /// reader). Off where the recipients are offline (`offline`).
    pub end_to_end: bool,
    pub end: Instant,
}

/// Sends until `plan.end` (or `plan.count`), keeping at most `window` unacked.
///
/// At a rate, message `seq` is due at `start + seq / rate` and carries that intended time,
/// not the time it left: latency then includes any wait for the window or the timer, so a
/// target that falls behind cannot hide its queueing (coordinated omission). How late each
/// message left is recorded as the pacing error (`pace.rs`: a timerfd per thread, to within
/// tens of microseconds; monoio's 1 ms timer without io_uring).
pub async fn send_loop(local: Rc<Local>, link: Rc<Link>, plan: SendPlan, payload: Rc<Vec<u8>>) {
    let start_us = now_us();
    // Senders run out of step: each schedule is offset by a fraction of one interval
    // (golden-ratio spacing of the stream id), so N senders at a rate offer one even stream
    // instead of N messages at the same instant every interval, whose queueing would then
    // count as latency.
    let phase = (plan.stream as f64 * 0.618_033_988_749_895).fract();
    let mut seq: u32 = 0;
    while seq < plan.count && Instant::now() < plan.end && !link.window.closed.get() {
        if !link.window.has_room(plan.window, plan.end_to_end) {
            link.window
                .open(plan.window, plan.end_to_end, Duration::from_millis(50))
                .await;
            continue;
        }
        let t_us = if plan.rate > 0.0 {
            let due_us = start_us + ((seq as f64 + phase) * 1e6 / plan.rate) as u64;
            let now = now_us();
            if now < due_us {
                crate::pace::sleep_until(due_us).await;
                continue;
            }
            let _ = local
                .hists
                .borrow_mut()
                .pacing
                .record((now - due_us).max(1));
            due_us
        } else {
            now_us()
        };
        let s = Stamp {
            run: local.run,
            stream: plan.stream,
            seq,
            t_us,
        };
        link.publish(plan.dest, s, &payload);
        Counters::add(&local.counters.sent, 1);
        seq += 1;
    }
}

/// One sender of a timed run: its uid, where it sends, its stream.
pub struct Sender {
    pub uid: u32,
    pub dest: Dest,
    pub stream: u32,
}

/// The body of the timed message scenarios: logs `users` in, starts sending on every thread
/// at once, runs each sender at `rate` with `window` until `--duration` is over, then drains.
pub async fn timed_run(
    ctx: &Arc<Ctx>,
    local: &Rc<Local>,
    users: Vec<UserSpec>,
    senders: Vec<Sender>,
    rate: f64,
    window: u32,
) {
    let Some(links) = login_together(ctx, local, users).await else {
        return;
    };
    let by_uid: std::collections::HashMap<u32, _> =
        links.iter().map(|l| (l.uid, l.clone())).collect();
    local.phase_start_us.set(now_us());
    let end = Instant::now() + ctx.common.duration;
    let payload = Rc::new(crate::proto::padding(ctx.common.size, &ctx.proto));
    let mut tasks = Vec::new();
    for s in senders {
        let Some(link) = by_uid.get(&s.uid).cloned() else {
            continue;
        };
        let plan = SendPlan {
            dest: s.dest,
            stream: s.stream,
            rate,
            window,
            count: u32::MAX,
            end_to_end: true,
            end,
        };
        local.track(s.stream, link.window.clone());
        tasks.push(monoio::spawn(send_loop(
            local.clone(),
            link,
            plan,
            payload.clone(),
        )));
    }
    for t in tasks {
        t.await;
    }
    drain(local, &links, ctx.common.drain_timeout).await;
}

/// After sending: waits until every acked message has arrived and every publish is answered
/// (or `timeout`), then closes the connections.
pub async fn drain(local: &Local, links: &[Rc<Link>], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let inflight: u32 = links
            .iter()
            .filter(|l| !l.window.closed.get())
            .map(|l| l.window.inflight.get())
            .sum();
        if inflight == 0 && local.outstanding() == 0 {
            break;
        }
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    close_all(local, links).await;
}

/// Closes every connection and gives the writers a moment to flush.
pub async fn close_all(local: &Local, links: &[Rc<Link>]) {
    local.stopping.set(true);
    for l in links {
        l.close();
    }
    monoio::time::sleep(Duration::from_millis(50)).await;
}

/// A thread whose setup failed: the error is printed once per thread and counted; the run
/// reports it (and, having no traffic, fails its checks by having nothing to show).
pub fn failed(local: &Local, e: String) {
    eprintln!("\nloadgen: {e}");
    local.error("setup_failed");
    local.stopping.set(true);
}

/// Logs `users` in, then waits for every thread to be ready, so the measured phase starts
/// together. `None` (after reporting the error) when a login failed.
pub async fn login_together(
    ctx: &Arc<Ctx>,
    local: &Rc<Local>,
    users: Vec<UserSpec>,
) -> Option<Vec<Rc<Link>>> {
    let links = login_all(ctx, local, users).await;
    ctx.ready.wait();
    links.map_err(|e| failed(local, e)).ok()
}
