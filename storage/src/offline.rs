//! The offline-message store trait and its data types.

use bytes::Bytes;

use crate::error::StoreError;

/// A message waiting for delivery to `uid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineMessage {
    pub uid: u32,
    /// The encoded server push packet (command 3, 5 or 11), exactly as it goes on the wire.
    pub frame: Bytes,
    /// Unix milliseconds after which the message is dropped (retention).
    pub expires_at_ms: u64,
}

/// A stored message with its per-user sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub seq: u64,
    pub frame: Bytes,
}

/// One write of a batch.
#[derive(Debug, Clone, Copy)]
pub enum Write<'a> {
    /// Append each message to the end of its user's queue, in slice order.
    Append(&'a [OfflineMessage]),
    /// Remove these sequence numbers of `uid` (absent ones are ignored).
    Remove { uid: u32, seqs: &'a [u64] },
}

/// Per-user ordered queues of undelivered messages.
///
/// Sequence numbers are per user, strictly increasing in append order, and never reused
/// while a smaller one is still stored. Implementations are called from one storage thread
/// (see [`crate::StoreHandle`]) but must be `Send + Sync`.
pub trait OfflineStore: Send + Sync + 'static {
    /// Applies every write atomically (all or none) and durably. Returns, for each write in
    /// order, the sequence numbers it assigned (empty for removals).
    fn write_batch(&self, writes: &[Write<'_>]) -> Result<Vec<Vec<u64>>, StoreError>;

    /// Up to `limit` messages of `uid` with `seq > after` that have not expired at `now_ms`,
    /// in sequence order.
    fn fetch(
        &self,
        uid: u32,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Deletes every message expired at `now_ms`; returns how many. Backends whose engine
    /// drops expired rows itself (see [`OfflineStore::expires_natively`]) return 0.
    fn purge_expired(&self, now_ms: u64) -> Result<usize, StoreError>;

    /// True when the engine expires messages by itself (ScyllaDB's TTL): `purge_expired`
    /// then has nothing to do, and `count` may include expired messages until the engine
    /// drops them. Fetches never return expired messages either way.
    fn expires_natively(&self) -> bool {
        false
    }

    /// Number of messages stored for `uid`, expired or not.
    fn count(&self, uid: u32) -> Result<usize, StoreError>;

    /// Answers whether the backend can be reached now (`/readyz`); the default is yes.
    fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Appends messages; see [`Write::Append`].
    fn append(&self, msgs: &[OfflineMessage]) -> Result<Vec<u64>, StoreError> {
        let mut r = self.write_batch(&[Write::Append(msgs)])?;
        Ok(r.pop().unwrap_or_default())
    }

    /// Removes messages; see [`Write::Remove`].
    fn remove(&self, uid: u32, seqs: &[u64]) -> Result<(), StoreError> {
        self.write_batch(&[Write::Remove { uid, seqs }]).map(|_| ())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
