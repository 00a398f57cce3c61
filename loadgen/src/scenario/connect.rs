//! `connect`: a connect + authenticate storm. Each thread keeps `concurrency` connectors
//! busy: open, log in, close, again, until the time is up. Each connector reuses one uid, so
//! the target never holds more than `threads × concurrency` sessions.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::login;
use crate::cli::Connect;
use crate::local::Local;
use crate::runner::Ctx;
use crate::stamp::now_us;

pub async fn run(t: usize, ctx: Arc<Ctx>, local: Rc<Local>, a: Connect) -> BTreeMap<String, f64> {
    ctx.ready.wait();
    local.phase_start_us.set(now_us());
    let started = Instant::now();
    let end = started + ctx.common.duration;
    let mut tasks = Vec::new();
    for k in 0..a.concurrency {
        let uid = ctx.uid_base + t as u32 * a.concurrency + k;
        let (ctx, local) = (ctx.clone(), local.clone());
        tasks.push(monoio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < end {
                match login(&ctx, &local, uid, &[]).await {
                    Ok(link) => {
                        done += 1;
                        local.stopping.set(true);
                        link.close();
                    }
                    Err(e) => local.error(e.kind()),
                }
            }
            done
        }));
    }
    let mut total = 0;
    for h in tasks {
        total += h.await;
    }
    local.last_delivery_us.set(now_us());
    let secs = started.elapsed().as_secs_f64();
    BTreeMap::from([("connects_per_s".to_string(), total as f64 / secs)])
}
