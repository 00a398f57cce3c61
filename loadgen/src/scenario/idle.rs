//! `idle`: N connections logged in and held (answering heartbeats) for `--duration`. With
//! `--server-pid`, the server's resident memory is read from /proc before the first
//! connection and once all are up; the difference per connection is reported, as is the load
//! generator's own.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::{close_all, login_together, UserSpec};
use crate::cli::Idle;
use crate::local::Local;
use crate::runner::Ctx;
use crate::sys::rss_bytes;

/// How long after the last login the memory is read.
const SETTLE: Duration = Duration::from_secs(4);

/// Server memory before any connection, read by the main thread before the run starts.
pub fn before(pid: Option<u32>) -> Option<u64> {
    pid.and_then(rss_bytes)
}

pub async fn run(
    t: usize,
    ctx: Arc<Ctx>,
    local: Rc<Local>,
    a: Idle,
    server_before: Option<u64>,
    self_before: Option<u64>,
) -> BTreeMap<String, f64> {
    let users: Vec<UserSpec> = (0..a.conns)
        .filter(|i| *i as usize % ctx.threads == t)
        .map(|i| UserSpec {
            uid: ctx.uid_base + i,
            topics: vec![],
        })
        .collect();
    let Some(links) = login_together(&ctx, &local, users).await else {
        return BTreeMap::new();
    };
    let mut extra = BTreeMap::new();
    // Let the server settle, then measure once: this server puts a connection quiet for a
    // second to sleep at its next once-a-second sweep and hands the freed memory back to
    // the system at the sweep after that, so 4 s after the logins every session is asleep
    // and trimmed (measured at 2 s, 5,000 connections read ~1.4 KB each instead of ~1.0 KB).
    let settle = SETTLE.min(ctx.common.duration);
    monoio::time::sleep(settle).await;
    if t == 0 {
        let n = a.conns.max(1) as f64;
        if let (Some(pid), Some(b)) = (ctx.server_pid, server_before) {
            if let Some(after) = rss_bytes(pid) {
                extra.insert("server_rss_before_mib".into(), b as f64 / 1048576.0);
                extra.insert("server_rss_after_mib".into(), after as f64 / 1048576.0);
                extra.insert(
                    "server_bytes_per_conn".into(),
                    after.saturating_sub(b) as f64 / n,
                );
            }
        }
        if let (Some(b), Some(after)) = (self_before, rss_bytes(std::process::id())) {
            extra.insert(
                "loadgen_bytes_per_conn".into(),
                after.saturating_sub(b) as f64 / n,
            );
        }
    }
    monoio::time::sleep(ctx.common.duration.saturating_sub(settle)).await;
    let alive = links.iter().filter(|l| !l.window.closed.get()).count();
    extra.insert("alive_at_end".into(), alive as f64);
    close_all(&local, &links).await;
    extra
}
