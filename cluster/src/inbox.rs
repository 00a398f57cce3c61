//! Inter-node mail on Redis streams.
//!
//! Every node has an inbox stream `im_inbox:<id>` with one consumer group `im`. Senders
//! append one entry per destination node per flush ([`flush_loop`]); the owner reads its
//! inbox as consumer `<id>` ([`read_loop`]), hands every message to the owner shard of its
//! recipient, and only then acknowledges and deletes the entry. An entry read but not yet
//! acknowledged stays pending in the group, so a node that dies holding it does not lose
//! it: a live node claims the dead node's pending and unread entries ([`reclaim`]) and
//! hands them on (the shards route them again over the new live set: to the recipient's
//! new home, or to the offline store). An entry appended twice (the sender retried after
//! its reply was lost) is handed on once: entries carry their sending process and a
//! sequence number per inbox ([`Receiving`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use fred::types::config::Options;
use fred::types::streams::XReadResponse;
use im_shards::control::ControlHandle;
use im_shards::Forward;
use tokio::sync::mpsc;

use crate::stats::ClusterStats;
use crate::wire::{self, Record, Sender};

pub(crate) const INBOX_PREFIX: &str = "im_inbox:";
pub(crate) const GROUP: &str = "im";
/// Records encoded into one entry at most.
const FLUSH_MAX: usize = 4096;
/// Entries read per XREADGROUP.
const READ_COUNT: u64 = 128;
/// How long one XREADGROUP waits for new entries (then it is issued again).
const BLOCK_MS: u64 = 1000;

/// Deletes a stream (and its consumer group) when it holds no entry.
const DELETE_IF_EMPTY: &str = r#"
if redis.call('XLEN', KEYS[1]) == 0 then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Entries as read: (stream id, fields).
type Entries = Vec<(String, HashMap<String, Bytes>)>;

/// What handing entries on needs: the shards, the stats, and the entries handed on lately.
pub(crate) struct Receiving {
    pub control: ControlHandle,
    pub stats: Arc<ClusterStats>,
    recent: Mutex<Recent>,
}

impl Receiving {
    pub fn new(control: ControlHandle, stats: Arc<ClusterStats>) -> Receiving {
        Receiving {
            control,
            stats,
            recent: Mutex::new(Recent::default()),
        }
    }
}

/// Per (sending process, inbox), the sequence numbers of the entries handed on lately.
#[derive(Default)]
struct Recent(HashMap<(u64, String), BTreeSet<u64>>);

/// Sequence numbers remembered per (sending process, inbox): a retried append lands right
/// after its first copy, far inside this.
const RECENT: usize = 1024;

impl Recent {
    /// Whether `sender`'s entry in `key` is new (remembering it). Not "above the last":
    /// a dead node's inbox is taken over pending entries last, after newer unread ones.
    fn first(&mut self, key: &str, sender: Sender) -> bool {
        if self.0.len() > 4096 {
            // Processes come and go; forgetting them risks only a duplicate.
            self.0.clear();
        }
        let seen = self.0.entry((sender.instance, key.to_owned())).or_default();
        if !seen.insert(sender.seq) {
            return false;
        }
        if seen.len() > RECENT {
            seen.pop_first();
        }
        true
    }
}

pub(crate) fn inbox_key(id: &str) -> String {
    format!("{INBOX_PREFIX}{id}")
}

/// Creates `key`'s consumer group (and the stream) if missing.
/// Entries in node `id`'s inbox not yet handed to its shards (each is deleted once it was).
pub(crate) async fn backlog(pool: &Pool, id: &str) -> Result<u64, Error> {
    pool.xlen(inbox_key(id)).await
}

pub(crate) async fn ensure_group(client: &Client, key: &str) -> Result<(), Error> {
    let r: Result<(), Error> = client.xgroup_create(key, GROUP, "0", true).await;
    match r {
        Err(e) if e.details().contains("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// One XREADGROUP of `key` as consumer `me` from `id` (`>`: new entries; `0`: this
/// consumer's pending ones); an empty list when it timed out (Redis answers nil).
async fn read_group(
    c: &(impl StreamsInterface + Sync),
    me: &str,
    block: Option<u64>,
    key: &str,
    id: &str,
) -> Result<Entries, Error> {
    let v: Value = c
        .xreadgroup(GROUP, me, Some(READ_COUNT), block, false, key, id)
        .await?;
    if v.is_null() {
        return Ok(Vec::new());
    }
    let r: XReadResponse<String, String, String, Bytes> = v.into_xread_response()?;
    Ok(r.into_values().flatten().collect())
}

/// Sends what the shards queued, one XADD per destination node per flush. A failed XADD
/// is retried (100 ms, doubling to 2 s) with the batch held; meanwhile the queue fills and
/// the shards store further messages offline instead.
pub(crate) async fn flush_loop(
    pool: Pool,
    me: Arc<str>,
    mut rx: mpsc::Receiver<(Arc<str>, Record)>,
    stats: Arc<ClusterStats>,
    unsent: Arc<std::sync::atomic::AtomicUsize>,
) {
    // This process, and the entries it sent each inbox.
    let instance = {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    let mut seqs: HashMap<Arc<str>, u64> = HashMap::new();
    while let Some(first) = rx.recv().await {
        let mut by_node: HashMap<Arc<str>, Vec<Record>> = HashMap::new();
        let mut n = 1;
        by_node.entry(first.0).or_default().push(first.1);
        while n < FLUSH_MAX {
            let Ok((node, r)) = rx.try_recv() else { break };
            by_node.entry(node).or_default().push(r);
            n += 1;
        }
        for (node, records) in by_node {
            let seq = seqs.entry(node.clone()).or_insert(0);
            *seq += 1;
            let sender = Sender {
                instance,
                seq: *seq,
            };
            // A retry sends the same body: the receiver recognises it.
            let body = Bytes::from(wire::encode(&me, sender, &records));
            let key = inbox_key(&node);
            let mut wait = Duration::from_millis(100);
            loop {
                let r: Result<String, Error> = pool
                    .next()
                    .xadd(&key, false, None, "*", vec![("b", body.clone())])
                    .await;
                match r {
                    Ok(id) => {
                        tracing::debug!(node = %node, id, records = records.len(), "sent an inbox entry");
                        stats.sent(&node, wire::recipients(&records));
                        unsent.fetch_sub(records.len(), std::sync::atomic::Ordering::SeqCst);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(node = %node, error = %e, "cannot append to a node's inbox; retrying");
                        stats.send_error();
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
    }
}

/// Reads this node's inbox until `stop`.
pub(crate) async fn read_loop(
    client: Client,
    me: Arc<str>,
    rx: Arc<Receiving>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let key = inbox_key(&me);
    // Entries this node read and had not acknowledged when it stopped (a crash, then a
    // restart with the same id) are pending for its consumer: hand them on first.
    loop {
        let entries = match read_group(&client, &me, None, &key, "0").await {
            Ok(e) => e,
            Err(_) => break,
        };
        if entries.is_empty() {
            break;
        }
        handle(&client, &key, entries, &rx).await;
    }
    let mut wait = Duration::from_millis(100);
    // The blocking read's own timeout: its block time plus the usual command timeout.
    let opts = Options {
        timeout: Some(Duration::from_millis(BLOCK_MS) + Duration::from_secs(2)),
        ..Default::default()
    };
    let blocking = client.with_options(&opts);
    while !*stop.borrow() {
        let read = tokio::select! {
            r = read_group(&blocking, &me, Some(BLOCK_MS), &key, ">") => r,
            _ = stop.changed() => break,
        };
        match read {
            Ok(entries) => {
                wait = Duration::from_millis(100);
                handle(&client, &key, entries, &rx).await;
            }
            Err(e) => {
                if e.details().contains("NOGROUP") {
                    let _ = ensure_group(&client, &key).await;
                }
                tracing::warn!(error = %e, "reading this node's inbox failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Hands the entries' messages to the shards, then acknowledges and deletes them.
pub(crate) async fn handle(client: &Client, key: &str, entries: Entries, rx: &Receiving) {
    let stats = &rx.stats;
    if entries.is_empty() {
        return;
    }
    let now_ms = im_storage::now_ms();
    tracing::debug!(key, entries = entries.len(), "inbox entries");
    let mut ids = Vec::with_capacity(entries.len());
    for (id, fields) in entries {
        ids.push(id);
        let Some(body) = fields.get("b") else {
            stats.corrupt();
            tracing::warn!(key, "an inbox entry without a body; dropped");
            continue;
        };
        // Mail carries the receiving process's clock as its acceptance time.
        let entry = match wire::decode(body, im_shards::engine_now()) {
            Ok(e) => e,
            Err(e) => {
                stats.corrupt();
                tracing::warn!(key, error = %e, "a malformed inbox entry; dropped");
                continue;
            }
        };
        if let Some(sender) = entry.sender {
            let new = rx
                .recent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .first(key, sender);
            if !new {
                stats.duplicate();
                tracing::debug!(
                    key,
                    from = entry.from,
                    "an entry appended twice; handed on once"
                );
                continue;
            }
        }
        stats.received(&entry.from, &entry.records, now_ms);
        for r in entry.records {
            offer(&rx.control, r.f).await;
        }
    }
    // Acknowledged and deleted in one round trip.
    let pipeline = client.pipeline();
    let queued: Result<(), Error> = async {
        pipeline
            .xack::<(), _, _, _>(key, GROUP, ids.clone())
            .await?;
        pipeline.xdel::<(), _, _>(key, ids).await
    }
    .await;
    let done = match queued {
        Ok(()) => pipeline.all::<(i64, i64)>().await.map(drop),
        Err(e) => Err(e),
    };
    if let Err(e) = done {
        // Handed on already: a later claim would deliver them again (at-least-once).
        tracing::warn!(key, error = %e, "could not acknowledge inbox entries");
    }
}

/// Hands one message to the shards, waiting while their queues are full.
async fn offer(control: &ControlHandle, f: Forward) {
    let mut pending = vec![f];
    while let Some(f) = pending.pop() {
        if let Err(left) = control.arrive(f) {
            pending.extend(left);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Takes over the inbox of a node that is no longer live: its pending entries (read, not
/// acknowledged) and its unread ones, handed on like this node's own; the stream and
/// group are deleted once empty. Runs on one node at a time per dead inbox as far as the
/// consumer group allows: an entry claimed by two nodes is delivered twice (at-least-once).
pub(crate) async fn reclaim(
    client: &Client,
    me: &str,
    dead: &str,
    rx: &Receiving,
    lease_ms: u64,
) -> Result<(), Error> {
    let key = inbox_key(dead);
    ensure_group(client, &key).await?;
    loop {
        let (_, claimed): (String, Entries) = client
            .xautoclaim_values(&key, GROUP, me, lease_ms, "0-0", Some(READ_COUNT), false)
            .await?;
        let mut entries = claimed;
        if entries.is_empty() {
            entries = read_group(client, me, None, &key, ">").await?;
        }
        if entries.is_empty() {
            break;
        }
        rx.stats.reclaimed(entries.len() as u64);
        tracing::info!(
            node = dead,
            entries = entries.len(),
            "taking over a dead node's inbox"
        );
        handle(client, &key, entries, rx).await;
    }
    // Deleted only if still empty, in one step: a node that has not yet seen this one
    // dead may append to it meanwhile (such an entry is taken over on the next round).
    let _: i64 = client
        .eval(DELETE_IF_EMPTY, vec![key.as_str()], Vec::<String>::new())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_seen_lately_is_a_duplicate_in_any_order() {
        let mut r = Recent::default();
        let s = |instance, seq| Sender { instance, seq };
        assert!(r.first("im_inbox:a", s(1, 5)));
        // A pending entry taken over after a newer unread one is still new.
        assert!(r.first("im_inbox:a", s(1, 4)));
        assert!(!r.first("im_inbox:a", s(1, 5)), "appended twice");
        assert!(r.first("im_inbox:b", s(1, 5)), "another inbox");
        assert!(r.first("im_inbox:a", s(2, 5)), "another process");
        for q in 100..100 + RECENT as u64 {
            assert!(r.first("im_inbox:a", s(1, q)));
        }
        // The oldest fell out of the window: seen again, it counts as new (a duplicate
        // at worst, never a loss).
        assert!(r.first("im_inbox:a", s(1, 4)));
        assert!(!r.first("im_inbox:a", s(1, 100 + RECENT as u64 - 1)));
    }
}
