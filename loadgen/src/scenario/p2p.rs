//! `p2p`: pairs of users sending to each other (two streams per pair), at a rate or flat out.
//! Against the echo baseline each connection's frames come back to it (same connections,
//! same offered load).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use super::{timed_run, Sender, UserSpec};
use crate::cli::{P2p, Target};
use crate::local::Local;
use crate::proto::{user_topic, Dest};
use crate::runner::Ctx;

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
    for &(from, to, stream) in &streams {
        local.expect(to, stream);
        if let Some(cross) = ctx.ep.crosses(from, to) {
            local.placement(to, stream, cross);
        }
    }
    let senders = streams
        .iter()
        .map(|&(uid, to, stream)| Sender {
            uid,
            dest: Dest::User(to),
            stream,
        })
        .collect();
    timed_run(&ctx, &local, users, senders, a.rate, a.window).await;
    BTreeMap::new()
}
