//! `p2p`: pairs of users sending to each other (two streams per pair), at a rate or flat out.
//! Against the echo baseline each connection's frames come back to it (same connections,
//! same offered load).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::{drain, login_all, send_loop, SendPlan, UserSpec};
use crate::cli::{P2p, Target};
use crate::local::Local;
use crate::proto::{padding, user_topic, Dest};
use crate::runner::Ctx;
use crate::stamp::now_us;

pub async fn run(t: usize, ctx: Arc<Ctx>, local: Rc<Local>, a: P2p) -> BTreeMap<String, f64> {
    let echo = ctx.common.target == Target::Echo;
    let mqtt = ctx.common.target == Target::Mqtt;
    let pairs: Vec<u32> = (0..a.pairs)
        .filter(|p| *p as usize % ctx.threads == t)
        .collect();
    let mut users = Vec::new();
    // (sender uid, receiver uid, stream)
    let mut streams = Vec::new();
    for &p in &pairs {
        let (ua, ub) = (ctx.uid_base + 2 * p, ctx.uid_base + 2 * p + 1);
        let topics = |u| if mqtt { vec![user_topic(u)] } else { vec![] };
        users.push(UserSpec {
            uid: ua,
            topics: topics(ua),
        });
        users.push(UserSpec {
            uid: ub,
            topics: topics(ub),
        });
        if echo {
            // Same connections and offered load; each one's frames come back to it.
            streams.push((ua, ua, 2 * p));
            streams.push((ub, ub, 2 * p + 1));
        } else {
            streams.push((ua, ub, 2 * p));
            streams.push((ub, ua, 2 * p + 1));
        }
    }
    for &(_, to, stream) in &streams {
        local.expect(to, stream);
    }
    let links = login_all(&ctx, &local, users).await;
    ctx.ready.wait();
    let links = match links {
        Ok(l) => l,
        Err(e) => return super::failed(&local, e),
    };
    let by_uid: std::collections::HashMap<u32, _> =
        links.iter().map(|l| (l.uid, l.clone())).collect();
    local.phase_start_us.set(now_us());
    let end = Instant::now() + ctx.common.duration;
    let payload = Rc::new(padding(ctx.common.size, &ctx.proto));
    let mut tasks = Vec::new();
    for &(from, to, stream) in &streams {
        let plan = SendPlan {
            dest: Dest::User(to),
            stream,
            rate: a.rate,
            window: a.window,
            count: u32::MAX,
            end,
        };
        let Some(link) = by_uid.get(&from).cloned() else {
            continue;
        };
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
    drain(&local, &links, ctx.common.drain_timeout).await;
    BTreeMap::new()
}
