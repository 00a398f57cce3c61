//! `offline`: senders send `messages` to each of `receivers` users who are not connected;
//! once every publish is acked, all receivers connect at once and the time until the last
//! stored message arrives gives the drain rate (the report's throughput and elapsed time
//! cover this second phase only). With `--server-pid`, the server's CPU time over the drain
//! (from the common start to the moment every thread has drained) is `drain_server_cpu_s`.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{close_all, drain, login_all, login_together, send_loop, SendPlan, UserSpec};
use crate::cli::Offline;
use crate::local::Local;
use crate::proto::{padding, Dest};
use crate::runner::Ctx;
use crate::stamp::now_us;
use crate::sys::cpu_seconds;

pub async fn run(t: usize, ctx: Arc<Ctx>, local: Rc<Local>, a: Offline) -> BTreeMap<String, f64> {
    let receivers: Vec<u32> = (0..a.receivers)
        .filter(|r| *r as usize % ctx.threads == t)
        .collect();
    let mut senders: Vec<u32> = (0..a.senders)
        .filter(|s| *s as usize % ctx.threads == t)
        .collect();
    if senders.is_empty() && !receivers.is_empty() {
        senders.push(a.senders + t as u32);
    }
    let sender_uid = |s: u32| ctx.uid_base + a.receivers + s;
    for &r in &receivers {
        local.expect(ctx.uid_base + r, r);
    }
    let users = senders
        .iter()
        .map(|&s| UserSpec {
            uid: sender_uid(s),
            topics: vec![],
        })
        .collect();
    let Some(links) = login_together(&ctx, &local, users).await else {
        // Still meet the other threads at the start and at the end of phase 2.
        ctx.ready.wait();
        ctx.ready.wait();
        return BTreeMap::new();
    };
    // Phase 1: store.
    let payload = Rc::new(padding(ctx.common.size, &ctx.proto));
    let end = Instant::now() + ctx.common.duration;
    let mut tasks = Vec::new();
    for (i, &r) in receivers.iter().enumerate() {
        let link = links[i % links.len()].clone();
        let plan = SendPlan {
            dest: Dest::User(ctx.uid_base + r),
            stream: r,
            rate: 0.0,
            window: a.window,
            count: a.messages,
            end_to_end: false,
            end,
        };
        tasks.push(monoio::spawn(send_loop(
            local.clone(),
            link,
            plan,
            payload.clone(),
        )));
    }
    for h in tasks {
        h.await;
    }
    let deadline = Instant::now() + ctx.common.drain_timeout;
    while links
        .iter()
        .any(|l| l.window.inflight.get() > 0 && !l.window.closed.get())
        && Instant::now() < deadline
    {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    close_all(&local, &links).await;
    local.stopping.set(false);
    // Phase 2: every thread's receivers connect together.
    ctx.ready.wait();
    local.phase_start_us.set(now_us());
    let cpu_before = ctx.server_pid.filter(|_| t == 0).and_then(cpu_seconds);
    let users = receivers
        .iter()
        .map(|&r| UserSpec {
            uid: ctx.uid_base + r,
            topics: vec![],
        })
        .collect();
    let rlinks = match login_all(&ctx, &local, users).await {
        Ok(l) => l,
        Err(e) => {
            super::failed(&local, e);
            ctx.ready.wait(); // the end of phase 2, which the other threads wait for
            return BTreeMap::new();
        }
    };
    drain(&local, &rlinks, ctx.common.drain_timeout).await;
    // Every thread has drained before the server's CPU is read (a blocking wait: nothing is
    // left to do on this thread).
    ctx.ready.wait();
    let mut extra = BTreeMap::new();
    if let (Some(pid), Some(before)) = (ctx.server_pid, cpu_before) {
        if let Some(after) = cpu_seconds(pid) {
            extra.insert("drain_server_cpu_s".to_string(), after - before);
        }
    }
    extra
}
