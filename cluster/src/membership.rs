//! Node leases in Redis and the live set.
//!
//! A node holds `im_node:<id>` (its [`NodeInfo`] as JSON) with a time-to-live of
//! `cluster.lease_ms`, set with `NX` at start (an id already held is refused) and renewed
//! every third of the lease by a script that extends it only while it still holds this
//! process's `instance` value. A lapsed lease is a dead node. Every renewal also reads the
//! live set (`SCAN im_node:*` + `MGET`), so every node knows it within a third of a lease.
//!
//! A node that drops another from its live set first marks it `im_evicted:<id>` (with the
//! process that held the lease, so a later process with the same id ignores it): it is
//! about to route that node's users elsewhere (their messages stored offline there). The
//! renewal script takes the mark away and tells the node, which then makes its clients log
//! in again to collect those messages (a node cut off from Redis, or paused, for longer
//! than its lease learns this way that the others went on without it).

use std::collections::BTreeMap;
use std::sync::Arc;

use fred::prelude::*;
use im_shards::{Node, NodeMap};

use crate::config::NodeInfo;
use crate::ClusterError;

pub(crate) const NODE_PREFIX: &str = "im_node:";
const EVICTED_PREFIX: &str = "im_evicted:";
/// How long an eviction mark waits for its node to come back.
const EVICTED_TTL_MS: i64 = 24 * 3600 * 1000;

/// Extends the lease only if this process still holds it (bit 0) and takes this node's
/// eviction mark away (bit 1: there was one for this process, `ARGV[3]`; a mark left for
/// an earlier process with the same id is dropped unheeded).
const RENEW: &str = r#"
local held = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  held = 1
end
local evicted = 0
local mark = redis.call('GET', KEYS[2])
if mark then
  redis.call('DEL', KEYS[2])
  if mark == ARGV[3] then evicted = 2 end
end
return held + evicted
"#;

pub(crate) fn node_key(id: &str) -> String {
    format!("{NODE_PREFIX}{id}")
}

fn evicted_key(id: &str) -> String {
    format!("{EVICTED_PREFIX}{id}")
}

/// What a renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Renewal {
    /// The lease had lapsed (this node was too slow, or Redis lost it) and was taken again.
    pub lapsed: bool,
    /// Another node had dropped this one from its live set meanwhile.
    pub evicted: bool,
}

/// Takes the lease for `me`; refused when another process holds it.
pub(crate) async fn register(
    pool: &Pool,
    me: &NodeInfo,
    lease_ms: u64,
) -> Result<(), ClusterError> {
    let value = serde_json::to_string(me).map_err(|e| ClusterError::Redis(e.to_string()))?;
    let set: Option<String> = pool
        .set(
            node_key(&me.id),
            value,
            Some(Expiration::PX(lease_ms as i64)),
            Some(SetOptions::NX),
            false,
        )
        .await
        .map_err(redis)?;
    if set.is_none() {
        return Err(ClusterError::NodeIdTaken(me.id.clone()));
    }
    Ok(())
}

/// Renews the lease, taking it again when it lapsed; `Err(NodeIdTaken)`: another process
/// holds the id now.
pub(crate) async fn renew(
    pool: &Pool,
    me: &NodeInfo,
    lease_ms: u64,
) -> Result<Renewal, ClusterError> {
    let value = serde_json::to_string(me).map_err(|e| ClusterError::Redis(e.to_string()))?;
    let code: i64 = pool
        .next()
        .eval(
            RENEW,
            vec![node_key(&me.id), evicted_key(&me.id)],
            vec![value, lease_ms.to_string(), me.instance.clone()],
        )
        .await
        .map_err(redis)?;
    let r = Renewal {
        lapsed: code & 1 == 0,
        evicted: code & 2 != 0,
    };
    if r.lapsed {
        register(pool, me, lease_ms).await?;
    }
    Ok(r)
}

/// Marks `gone` (by id, the process that held the lease) as dropped from the live set,
/// before routing their users elsewhere.
pub(crate) async fn mark_evicted(pool: &Pool, gone: &[&NodeInfo]) -> Result<(), ClusterError> {
    for n in gone {
        let _: Option<String> = pool
            .set(
                evicted_key(&n.id),
                n.instance.as_str(),
                Some(Expiration::PX(EVICTED_TTL_MS)),
                None,
                false,
            )
            .await
            .map_err(redis)?;
    }
    Ok(())
}

/// The nodes holding a lease now, by id.
pub(crate) async fn live(pool: &Pool) -> Result<BTreeMap<String, NodeInfo>, ClusterError> {
    let client = pool.next();
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, mut page): (String, Vec<String>) = client
            .custom(
                fred::cmd!("SCAN"),
                vec![
                    cursor.clone(),
                    "MATCH".into(),
                    format!("{NODE_PREFIX}*"),
                    "COUNT".into(),
                    "1000".into(),
                ],
            )
            .await
            .map_err(redis)?;
        keys.append(&mut page);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    let mut out = BTreeMap::new();
    if keys.is_empty() {
        return Ok(out);
    }
    let values: Vec<Option<String>> = client.mget(keys.clone()).await.map_err(redis)?;
    for (key, v) in keys.iter().zip(values) {
        let Some(v) = v else { continue };
        match serde_json::from_str::<NodeInfo>(&v) {
            Ok(info) if key.strip_prefix(NODE_PREFIX) == Some(info.id.as_str()) => {
                out.insert(info.id.clone(), info);
            }
            _ => tracing::warn!(key, "ignoring a malformed node entry"),
        }
    }
    Ok(out)
}

/// The shards' view of the live set (`None` when `me` is missing from it).
pub(crate) fn node_map(me: &str, live: &BTreeMap<String, NodeInfo>) -> Option<Arc<NodeMap>> {
    let nodes = live
        .values()
        .filter_map(|n| match n.relay_addr() {
            Some(a) => Some(Node::new(&n.id, a).with_weight(n.weight)),
            None => {
                tracing::warn!(node = %n.id, host = %n.host, "cannot resolve a node's address");
                None
            }
        })
        .collect();
    NodeMap::new(me, nodes).map(Arc::new)
}

/// Gives the lease up (graceful stop): the others see the node gone at once.
pub(crate) async fn release(pool: &Pool, me: &NodeInfo) {
    let value = serde_json::to_string(me).unwrap_or_default();
    const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;
    let r: Result<i64, _> = pool
        .next()
        .eval(RELEASE, vec![node_key(&me.id)], vec![value])
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not release this node's lease");
    }
}

pub(crate) fn redis(e: Error) -> ClusterError {
    ClusterError::Redis(e.to_string())
}
