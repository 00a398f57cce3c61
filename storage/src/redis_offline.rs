//! The Redis offline store: the model of seed 001, a LIST per user (`im_offline:<uid>`) in
//! append order, for deployments that already run Redis.
//!
//! Each entry is `<seq>:<expires_at_ms>:<frame bytes>`; sequence numbers come from a
//! per-user counter (`im_offline_seq:<uid>`, never reset). A whole batch of appends and
//! removals runs as one Lua script, so it is atomic; how durable it is depends on the Redis
//! server's persistence settings (for `before_ack` guarantees: `appendonly yes`,
//! `appendfsync always`). Acked messages are nearly always at the front of the list, so a
//! removal pops them; anything else is found with one scan of the list. Expired entries
//! are skipped by fetches and deleted by [`OfflineStore::purge_expired`] (SCAN over the
//! queues, one script per queue). Standalone Redis (or Sentinel): the scripts touch keys of
//! several users, which a Redis Cluster would refuse.
//!
//! `fred` runs on the tokio runtime it is given; the storage thread (not a tokio thread)
//! blocks on each call, bounded by `timeout_ms`.

use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use fred::types::Value;
use tokio::runtime::Handle;

use crate::error::StoreError;
use crate::groups::RedisConfig;
use crate::offline::{OfflineStore, StoredMessage, Write};

const WRITE_SCRIPT: &str = r#"
local out = {}
local i = 1
while i <= #ARGV do
  local op, uid, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local list = 'im_offline:' .. uid
  if op == 'A' then
    local last = redis.call('INCRBY', 'im_offline_seq:' .. uid, n)
    local seqs = {}
    for k = 0, n - 1 do
      local seq = last - n + 1 + k
      redis.call('RPUSH', list, seq .. ':' .. ARGV[i] .. ':' .. ARGV[i + 1])
      i = i + 2
      seqs[#seqs + 1] = seq
    end
    out[#out + 1] = seqs
  else
    local want, left = {}, 0
    for k = 1, n do
      if not want[ARGV[i]] then left = left + 1 end
      want[ARGV[i]] = true
      i = i + 1
    end
    while left > 0 do
      local head = redis.call('LINDEX', list, 0)
      if not head then break end
      local seq = string.match(head, '^(%d+):')
      if not want[seq] then break end
      redis.call('LPOP', list)
      want[seq] = nil
      left = left - 1
    end
    if left > 0 then
      for _, e in ipairs(redis.call('LRANGE', list, 0, -1)) do
        local seq = string.match(e, '^(%d+):')
        if want[seq] then
          redis.call('LREM', list, 1, e)
          want[seq] = nil
        end
      end
    end
    out[#out + 1] = {}
  end
end
return out
"#;

const PURGE_SCRIPT: &str = r#"
local n = 0
for _, e in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local exp = tonumber(string.match(e, '^%d+:(%d+):'))
  if exp and exp <= tonumber(ARGV[1]) then
    n = n + redis.call('LREM', KEYS[1], 1, e)
  end
end
return n
"#;

/// Offline messages in Redis lists.
pub struct RedisOffline {
    pool: Pool,
    rt: Handle,
    timeout: Duration,
}

fn engine(op: &'static str) -> impl Fn(Error) -> StoreError {
    move |e| StoreError::engine(op, e)
}

fn list_key(uid: u32) -> String {
    format!("im_offline:{uid}")
}

/// Splits `<seq>:<expiry>:<frame>`.
fn decode(entry: &[u8]) -> Option<(u64, u64, Bytes)> {
    let a = entry.iter().position(|b| *b == b':')?;
    let b = a + 1 + entry[a + 1..].iter().position(|b| *b == b':')?;
    let seq = std::str::from_utf8(&entry[..a]).ok()?.parse().ok()?;
    let exp = std::str::from_utf8(&entry[a + 1..b]).ok()?.parse().ok()?;
    Some((seq, exp, Bytes::copy_from_slice(&entry[b + 1..])))
}

impl RedisOffline {
    /// Connects (from outside `rt`); fails if Redis cannot be reached within the timeout.
    pub fn connect(cfg: &RedisConfig, rt: Handle) -> Result<Self, StoreError> {
        let pool = crate::groups::builder(cfg)
            .map_err(|e| StoreError::engine("connect", e))?
            .build_pool(cfg.pool_size.max(1))
            .map_err(engine("connect"))?;
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let p = pool.clone();
        rt.block_on(async move {
            p.connect();
            tokio::time::timeout(timeout, p.wait_for_connect()).await
        })
        .map_err(|_| StoreError::engine("connect", "Redis not reachable in time"))?
        .map_err(engine("connect"))?;
        Ok(Self { pool, rt, timeout })
    }

    fn run<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, StoreError> {
        self.rt
            .block_on(async { tokio::time::timeout(self.timeout, f).await })
            .map_err(|_| StoreError::engine(op, "Redis did not answer in time"))?
            .map_err(engine(op))
    }
}

impl OfflineStore for RedisOffline {
    fn write_batch(&self, writes: &[Write<'_>]) -> Result<Vec<Vec<u64>>, StoreError> {
        let mut args: Vec<Value> = Vec::new();
        for w in writes {
            match w {
                Write::Append(msgs) => {
                    // One op per message keeps per-user counters simple; consecutive
                    // messages of one user still share nothing but the script run.
                    for m in msgs.iter() {
                        args.extend([
                            Value::from("A"),
                            Value::from(m.uid.to_string()),
                            Value::from("1"),
                            Value::from(m.expires_at_ms.to_string()),
                            Value::Bytes(m.frame.clone()),
                        ]);
                    }
                }
                Write::Remove { uid, seqs } => {
                    args.extend([
                        Value::from("R"),
                        Value::from(uid.to_string()),
                        Value::from(seqs.len().to_string()),
                    ]);
                    args.extend(seqs.iter().map(|s| Value::from(s.to_string())));
                }
            }
        }
        if args.is_empty() {
            return Ok(writes.iter().map(|_| Vec::new()).collect());
        }
        let per_op: Vec<Vec<u64>> = self.run(
            "write",
            self.pool.eval(WRITE_SCRIPT, Vec::<String>::new(), args),
        )?;
        // Regroup: one script op per appended message, one per removal.
        let mut ops = per_op.into_iter();
        let mut out = Vec::with_capacity(writes.len());
        for w in writes {
            match w {
                Write::Append(msgs) => {
                    let seqs: Vec<u64> = ops.by_ref().take(msgs.len()).flatten().collect();
                    if seqs.len() != msgs.len() {
                        return Err(StoreError::engine(
                            "write",
                            "script answered too few sequence numbers",
                        ));
                    }
                    out.push(seqs);
                }
                Write::Remove { .. } => {
                    ops.next();
                    out.push(Vec::new());
                }
            }
        }
        Ok(out)
    }

    fn fetch(
        &self,
        uid: u32,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let key = list_key(uid);
        let step = (limit.saturating_mul(2)).clamp(64, 4096) as i64;
        let mut out = Vec::new();
        let mut start = 0i64;
        while out.len() < limit {
            let page: Vec<Bytes> =
                self.run("fetch", self.pool.lrange(&key, start, start + step - 1))?;
            for e in &page {
                match decode(e) {
                    Some((seq, exp, frame)) if seq > after && exp > now_ms => {
                        out.push(StoredMessage { seq, frame });
                        if out.len() == limit {
                            break;
                        }
                    }
                    Some(_) => {}
                    None => tracing::warn!(uid, "skipping a malformed offline entry in Redis"),
                }
            }
            if (page.len() as i64) < step {
                break;
            }
            start += step;
        }
        Ok(out)
    }

    fn purge_expired(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut purged = 0usize;
        let mut cursor = "0".to_string();
        loop {
            let (next, keys): (String, Vec<String>) = self.run(
                "purge",
                self.pool
                    .next()
                    .scan_page(cursor, "im_offline:*", Some(500), None),
            )?;
            for key in keys {
                let n: usize = self.run(
                    "purge",
                    self.pool
                        .eval(PURGE_SCRIPT, vec![key], vec![now_ms.to_string()]),
                )?;
                purged += n;
            }
            if next == "0" {
                return Ok(purged);
            }
            cursor = next;
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        self.run("check", self.pool.next().ping::<()>(None))
    }

    fn count(&self, uid: u32) -> Result<usize, StoreError> {
        self.run("count", self.pool.llen(list_key(uid)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_decode_with_binary_frames() {
        assert_eq!(
            decode(b"12:3400:a:b\xff"),
            Some((12, 3400, Bytes::from_static(b"a:b\xff")))
        );
        assert_eq!(decode(b"x:1:f"), None);
        assert_eq!(decode(b"1:2"), None);
    }
}
