//! The body of one inbox entry: every message one node hands another in one flush.
//!
//! ```text
//! entry   = version:u8 (2) | from_len:u8 | from (node id, UTF-8) | instance:u64 | seq:u64
//!           | count:u32 | record*count
//!           (version 1, still read: no instance and seq)
//! record  = kind:u8 | hops:u8 | sent_ms:u64 | frame_len:u32 | frame | body
//! body    = kind 1 (one user):  to:u32 | has_seq:u8 | [seq:u64]
//!         = kind 2 (group):     exclude:u32 | n:u32 | uid:u32*n | has_seqs:u8 | [seq:u64*n]
//! ```
//!
//! Big-endian. The frame is the encoded push packet exactly as the recipient gets it.
//! `instance` is a random value of the sending process and `seq` counts its entries per
//! destination inbox, so an entry appended twice (a retry after a reply lost to a broken
//! connection) is recognised and handed on once.
//! [`decode`] refuses anything malformed, truncated or over the limits with a [`WireError`]
//! (the inbox counts and drops such an entry); it never panics (fuzz target
//! `cluster_entry`).

use bytes::{Buf, BufMut, Bytes};
use im_shards::engine::{Batch, Delivery, Time, Uids};
use im_shards::Forward;

/// Format version written first in every entry.
pub const VERSION: u8 = 2;
/// Largest frame accepted in a record (the protocol's own frame limit is below this).
pub const MAX_FRAME: usize = 1 << 20;
/// Most members in one group record.
pub const MAX_MEMBERS: usize = 1 << 20;

/// Why an entry was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("unknown entry version {0}")]
    Version(u8),
    #[error("entry ends inside {0}")]
    Truncated(&'static str),
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("{0} over its limit")]
    TooLarge(&'static str),
    #[error("node id is not UTF-8")]
    NodeId,
    #[error("{0} bytes after the last record")]
    Trailing(usize),
    #[error("a message with no recipient")]
    Empty,
}

/// One forwarded message with when it was sent (wall clock, for the latency histogram).
#[derive(Debug, Clone)]
pub struct Record {
    pub sent_ms: u64,
    pub f: Forward,
}

/// Users the records reach (one per 1:1 record, every member of a group record).
pub fn recipients(records: &[Record]) -> u64 {
    records
        .iter()
        .map(|r| match &r.f {
            Forward::One(_) => 1,
            Forward::Group(b) => b.uids.len() as u64,
        })
        .sum()
}

/// Which process sent an entry and its number among those it sent the same inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sender {
    pub instance: u64,
    pub seq: u64,
}

/// Encodes the records one node (`from`, process `sender`) sends another in one entry.
pub fn encode(from: &str, sender: Sender, records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + records.len() * 64);
    out.put_u8(VERSION);
    let id = &from.as_bytes()[..from.len().min(255)];
    out.put_u8(id.len() as u8);
    out.put_slice(id);
    out.put_u64(sender.instance);
    out.put_u64(sender.seq);
    out.put_u32(records.len() as u32);
    for r in records {
        let (kind, hops, frame) = match &r.f {
            Forward::One(d) => (1u8, d.hops, &d.frame),
            Forward::Group(b) => (2u8, b.hops, &b.frame),
        };
        out.put_u8(kind);
        out.put_u8(hops);
        out.put_u64(r.sent_ms);
        out.put_u32(frame.len() as u32);
        out.put_slice(frame);
        match &r.f {
            Forward::One(d) => {
                out.put_u32(d.to);
                match d.seq {
                    Some(s) => {
                        out.put_u8(1);
                        out.put_u64(s);
                    }
                    None => out.put_u8(0),
                }
            }
            Forward::Group(b) => {
                out.put_u32(b.exclude);
                out.put_u32(b.uids.len() as u32);
                for u in b.uids.iter() {
                    out.put_u32(*u);
                }
                match &b.seqs {
                    Some(s) if s.len() == b.uids.len() => {
                        out.put_u8(1);
                        for q in s {
                            out.put_u64(*q);
                        }
                    }
                    _ => out.put_u8(0),
                }
            }
        }
    }
    out
}

/// A decoded entry: the sending node and process, and its records.
#[derive(Debug)]
pub struct Entry {
    pub from: String,
    /// `None` in a version 1 entry.
    pub sender: Option<Sender>,
    pub records: Vec<Record>,
}

fn need(b: &impl Buf, n: usize, what: &'static str) -> Result<(), WireError> {
    if b.remaining() < n {
        Err(WireError::Truncated(what))
    } else {
        Ok(())
    }
}

/// Decodes one entry body. Frames are slices of `body`, not copies. Every message is
/// stamped as accepted at `now` (the receiving process's clock).
pub fn decode(body: &Bytes, now: Time) -> Result<Entry, WireError> {
    let mut b = body.clone();
    need(&b, 2, "header")?;
    let v = b.get_u8();
    if v != 1 && v != VERSION {
        return Err(WireError::Version(v));
    }
    let n = b.get_u8() as usize;
    need(&b, n, "node id")?;
    let from = std::str::from_utf8(&b[..n])
        .map_err(|_| WireError::NodeId)?
        .to_owned();
    b.advance(n);
    let sender = if v == VERSION {
        need(&b, 16, "sender")?;
        Some(Sender {
            instance: b.get_u64(),
            seq: b.get_u64(),
        })
    } else {
        None
    };
    need(&b, 4, "count")?;
    let count = b.get_u32() as usize;
    // Each record takes at least 19 bytes: a count larger than the entry is a lie.
    if count > b.remaining() / 19 + 1 {
        return Err(WireError::TooLarge("record count"));
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        records.push(record(&mut b, now)?);
    }
    if !b.is_empty() {
        return Err(WireError::Trailing(b.len()));
    }
    Ok(Entry {
        from,
        sender,
        records,
    })
}

fn record(b: &mut Bytes, now: Time) -> Result<Record, WireError> {
    need(b, 14, "record header")?;
    let kind = b.get_u8();
    let hops = b.get_u8();
    let sent_ms = b.get_u64();
    let len = b.get_u32() as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge("frame"));
    }
    need(b, len, "frame")?;
    let frame = b.split_to(len);
    let f = match kind {
        1 => {
            need(b, 5, "recipient")?;
            let to = b.get_u32();
            let seq = match b.get_u8() {
                0 => None,
                _ => {
                    need(b, 8, "seq")?;
                    Some(b.get_u64())
                }
            };
            Forward::One(Delivery {
                to,
                accepted: now,
                frame,
                seq,
                hops,
            })
        }
        2 => {
            need(b, 8, "members")?;
            let exclude = b.get_u32();
            let n = b.get_u32() as usize;
            if n > MAX_MEMBERS {
                return Err(WireError::TooLarge("members"));
            }
            if n == 0 {
                return Err(WireError::Empty);
            }
            need(b, n * 4 + 1, "members")?;
            let uids: Vec<u32> = (0..n).map(|_| b.get_u32()).collect();
            let seqs = match b.get_u8() {
                0 => None,
                _ => {
                    need(b, n * 8, "seqs")?;
                    Some((0..n).map(|_| b.get_u64()).collect())
                }
            };
            Forward::Group(Batch {
                accepted: now,
                frame,
                uids: Uids::Owned(uids),
                seqs,
                exclude,
                hops,
            })
        }
        k => return Err(WireError::Kind(k)),
    };
    Ok(Record { sent_ms, f })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record {
                sent_ms: 7,
                f: Forward::One(Delivery {
                    to: 42,
                    accepted: Time(0),
                    frame: Bytes::from_static(b"\x03push"),
                    seq: Some(9),
                    hops: 1,
                }),
            },
            Record {
                sent_ms: 8,
                f: Forward::Group(Batch {
                    accepted: Time(0),
                    frame: Bytes::from_static(b"\x05group"),
                    uids: Uids::Owned(vec![1, 2, 3]),
                    seqs: None,
                    exclude: 2,
                    hops: 1,
                }),
            },
        ]
    }

    #[test]
    fn round_trips() {
        let sender = Sender {
            instance: 0xfeed,
            seq: 7,
        };
        let bytes = encode("node-a", sender, &sample());
        let e = decode(&Bytes::from(bytes), Time(5)).expect("decodes");
        assert_eq!(e.from, "node-a");
        assert_eq!(e.sender, Some(sender));
        assert_eq!(e.records.len(), 2);
        match &e.records[0].f {
            Forward::One(d) => {
                assert_eq!(
                    (d.to, d.seq, d.hops, &d.frame[..]),
                    (42, Some(9), 1, &b"\x03push"[..])
                );
                assert_eq!(d.accepted, Time(5));
            }
            other => panic!("{other:?}"),
        }
        match &e.records[1].f {
            Forward::Group(b) => {
                assert_eq!(
                    (&b.uids[..], b.exclude, b.seqs.is_none()),
                    (&[1, 2, 3][..], 2, true)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_truncation_and_bad_header_is_an_error() {
        let bytes = encode("n", Sender::default(), &sample());
        for cut in 0..bytes.len() {
            assert!(
                decode(&Bytes::copy_from_slice(&bytes[..cut]), Time(0)).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert_eq!(
            decode(&Bytes::from(bad), Time(0)).unwrap_err(),
            WireError::Version(9)
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            decode(&Bytes::from(long), Time(0)).unwrap_err(),
            WireError::Trailing(1)
        );
        // A count no entry could hold.
        let mut lie = encode("n", Sender::default(), &[]);
        let at = lie.len() - 4;
        lie[at..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&Bytes::from(lie), Time(0)).is_err());
    }

    #[test]
    fn a_version_1_entry_still_decodes_without_a_sender() {
        let v2 = encode("n", Sender::default(), &sample());
        // Version 1: the same without instance and seq.
        let mut v1 = vec![1, 1, b'n'];
        v1.extend_from_slice(&v2[3 + 16..]);
        let e = decode(&Bytes::from(v1), Time(0)).expect("decodes");
        assert_eq!((e.sender, e.records.len()), (None, 2));
    }
}
