//! `group`: G groups of M members; member 0 of each group sends (at a rate or flat out), the
//! other M-1 receive. Reports per-delivery latency and fan-out latency (send → last member).
//! The groups are created through the control API before the threads start ([`setup`]).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use super::{timed_run, Sender, UserSpec};
use crate::cli::{Group, Target};
use crate::local::Local;
use crate::proto::{group_topic, Dest};
use crate::runner::Ctx;

/// Group `g`'s id and member uids (the sender first).
pub fn members(base: u32, g: u32, m: u32) -> (u32, Vec<u32>) {
    (base + g, (0..m).map(|j| base + g * m + j).collect())
}

pub async fn run(t: usize, ctx: Arc<Ctx>, local: Rc<Local>, a: Group) -> BTreeMap<String, f64> {
    let mqtt = ctx.common.target == Target::Mqtt;
    let mine: Vec<u32> = (0..a.groups)
        .filter(|g| *g as usize % ctx.threads == t)
        .collect();
    let mut users = Vec::new();
    let mut senders = Vec::new();
    for &g in &mine {
        let (gid, uids) = members(ctx.uid_base, g, a.members);
        local.fanout(g, a.members - 1);
        for (j, &u) in uids.iter().enumerate() {
            let topics = if mqtt && j > 0 {
                vec![group_topic(gid)]
            } else {
                vec![]
            };
            users.push(UserSpec { uid: u, topics });
            if j == 0 {
                senders.push(Sender {
                    uid: u,
                    dest: Dest::Group(gid),
                    stream: g,
                });
            } else {
                local.expect(u, g);
                if let Some(cross) = ctx.ep.crosses(uids[0], u) {
                    local.placement(u, g, cross);
                }
            }
        }
    }
    timed_run(&ctx, &local, users, senders, a.rate, a.window).await;
    BTreeMap::new()
}

/// Creates the groups through the control API (replacing any left from an earlier run with
/// the same ids). Only for the IM target: MQTT groups are topics.
pub fn setup(admin_url: &str, secret: &str, base: u32, a: &Group) -> anyhow::Result<()> {
    let agent = ureq::Agent::new_with_defaults();
    for g in 0..a.groups {
        let (gid, uids) = members(base, g, a.members);
        let _ = agent
            .delete(format!("{admin_url}/groups/{gid}"))
            .header("token", secret)
            .call();
        let body = serde_json::json!({ "gid": gid, "members": uids });
        let mut resp = agent
            .post(format!("{admin_url}/groups"))
            .header("token", secret)
            .send_json(&body)
            .map_err(|e| anyhow::anyhow!("creating group {gid} at {admin_url}: {e}"))?;
        let v: serde_json::Value = resp.body_mut().read_json()?;
        if v.get("errCode").and_then(|c| c.as_i64()).unwrap_or(0) != 0 {
            anyhow::bail!("creating group {gid}: {v}");
        }
    }
    Ok(())
}

/// Deletes the groups again.
pub fn teardown(admin_url: &str, secret: &str, base: u32, a: &Group) {
    let agent = ureq::Agent::new_with_defaults();
    for g in 0..a.groups {
        let (gid, _) = members(base, g, a.members);
        let _ = agent
            .delete(format!("{admin_url}/groups/{gid}"))
            .header("token", secret)
            .call();
    }
}
