//! The contract every [`OfflineStore`] backend must pass.
//!
//! A backend's test file instantiates it with [`offline_store_contract!`], giving a function
//! that opens the backend at a directory (the same directory again means "reopen": data
//! must survive). Each case is a plain function so it can also be called by hand.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use im_storage::{OfflineMessage, OfflineStore, Write};

/// Opens a backend whose state lives under the given directory.
pub type Opener<'a> = &'a dyn Fn(&Path) -> Arc<dyn OfflineStore>;

const FAR: u64 = u64::MAX / 2;

fn msg(uid: u32, body: &str) -> OfflineMessage {
    OfflineMessage {
        uid,
        frame: Bytes::from(body.as_bytes().to_vec()),
        expires_at_ms: FAR,
    }
}

fn bodies(s: &dyn OfflineStore, uid: u32) -> Vec<String> {
    s.fetch(uid, 0, usize::MAX, 1)
        .expect("fetch")
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.frame).into_owned())
        .collect()
}

/// Messages come back in append order, per user, with increasing sequence numbers.
pub fn append_then_fetch_in_order(dir: &Path, open: Opener) {
    let s = open(dir);
    let seqs = s
        .append(&[msg(1, "a"), msg(2, "x"), msg(1, "b"), msg(1, "c")])
        .unwrap();
    assert_eq!(seqs.len(), 4);
    assert!(seqs[0] < seqs[2] && seqs[2] < seqs[3]);
    assert_eq!(bodies(&*s, 1), ["a", "b", "c"]);
    assert_eq!(bodies(&*s, 2), ["x"]);
    assert_eq!(bodies(&*s, 3), Vec::<String>::new());
    assert_eq!(s.count(1).unwrap(), 3);
}

/// `fetch(after, limit)` pages through a queue.
pub fn fetch_pages(dir: &Path, open: Opener) {
    let s = open(dir);
    let all: Vec<OfflineMessage> = (0..25).map(|i| msg(7, &i.to_string())).collect();
    s.append(&all).unwrap();
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = s.fetch(7, after, 10, 1).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        after = page.last().map(|m| m.seq).unwrap_or(after);
        seen.extend(page.into_iter().map(|m| m.frame));
    }
    let want: Vec<Bytes> = all.into_iter().map(|m| m.frame).collect();
    assert_eq!(seen, want);
}

/// Removed (acked) messages are gone; others stay, in order; removing twice is harmless.
pub fn remove_after_ack(dir: &Path, open: Opener) {
    let s = open(dir);
    let seqs = s.append(&[msg(5, "1"), msg(5, "2"), msg(5, "3")]).unwrap();
    s.remove(5, &[seqs[0], seqs[2]]).unwrap();
    s.remove(5, &[seqs[0]]).unwrap();
    assert_eq!(bodies(&*s, 5), ["2"]);
    s.remove(5, &[seqs[1]]).unwrap();
    assert_eq!(s.count(5).unwrap(), 0);
}

/// A batch mixing appends and removals applies in order and answers per write.
pub fn mixed_batch(dir: &Path, open: Opener) {
    let s = open(dir);
    let first = s.append(&[msg(9, "old")]).unwrap();
    let a = [msg(9, "n1")];
    let b = [msg(10, "m1"), msg(9, "n2")];
    let out = s
        .write_batch(&[
            Write::Append(&a),
            Write::Remove {
                uid: 9,
                seqs: &first,
            },
            Write::Append(&b),
        ])
        .unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!((out[0].len(), out[1].len(), out[2].len()), (1, 0, 2));
    assert_eq!(bodies(&*s, 9), ["n1", "n2"]);
    assert_eq!(bodies(&*s, 10), ["m1"]);
}

/// Expired messages are never fetched, and purging deletes them.
pub fn retention(dir: &Path, open: Opener) {
    let s = open(dir);
    let mut short = msg(3, "short");
    short.expires_at_ms = 1_000;
    s.append(&[short, msg(3, "long")]).unwrap();
    assert_eq!(s.fetch(3, 0, 10, 500).unwrap().len(), 2);
    let later = s.fetch(3, 0, 10, 2_000).unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(&later[0].frame[..], b"long");
    if s.expires_natively() {
        assert_eq!(s.purge_expired(2_000).unwrap(), 0);
    } else {
        assert_eq!(s.purge_expired(2_000).unwrap(), 1);
        assert_eq!(s.count(3).unwrap(), 1);
    }
    assert_eq!(s.fetch(3, 0, 10, 2_000).unwrap().len(), 1);
}

/// Data survives a reopen, and new sequence numbers stay above the stored ones.
pub fn survives_reopen(dir: &Path, open: Opener) {
    let before = {
        let s = open(dir);
        s.append(&[msg(4, "p"), msg(4, "q")]).unwrap()
    };
    let s = open(dir);
    assert_eq!(bodies(&*s, 4), ["p", "q"]);
    let after = s.append(&[msg(4, "r")]).unwrap();
    assert!(after[0] > before[1]);
    assert_eq!(bodies(&*s, 4), ["p", "q", "r"]);
}

/// Binary frames of any size up to a protocol maximum come back byte for byte.
pub fn binary_frames(dir: &Path, open: Opener) {
    let s = open(dir);
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let m = OfflineMessage {
        uid: 11,
        frame: Bytes::from(big.clone()),
        expires_at_ms: FAR,
    };
    let empty = OfflineMessage {
        uid: 11,
        frame: Bytes::new(),
        expires_at_ms: FAR,
    };
    s.append(&[m, empty]).unwrap();
    let got = s.fetch(11, 0, 10, 1).unwrap();
    assert_eq!(&got[0].frame[..], &big[..]);
    assert!(got[1].frame.is_empty());
}

/// Generates one `#[test]` per contract case for a backend.
/// `$open` is an expression of type `fn(&Path) -> Arc<dyn OfflineStore>`.
#[macro_export]
macro_rules! offline_store_contract {
    // `with = f`: each case runs as `f(case)`, for backends that need a fixture (a server
    // process) around the whole case.
    (with = $with:expr) => {
        $crate::offline_store_contract!(@with $with; [cfg(all())];
            append_then_fetch_in_order, fetch_pages, remove_after_ack, mixed_batch,
            retention, survives_reopen, binary_frames);
    };
    // `with = f, ignore = "why"`: the cases need something the machine may not have (a
    // real ScyllaDB); they show as ignored with the reason and run with `--include-ignored`.
    (with = $with:expr, ignore = $why:literal) => {
        $crate::offline_store_contract!(@with $with; [ignore = $why];
            append_then_fetch_in_order, fetch_pages, remove_after_ack, mixed_batch,
            retention, survives_reopen, binary_frames);
    };
    // `$attr` is one attribute for every case (`cfg(all())` is the no-op one).
    (@with $with:expr; $attr:tt; $($case:ident),*) => {
        $(
            #[test]
            #$attr
            fn $case() {
                $with($crate::offline::$case);
            }
        )*
    };
    ($open:expr) => {
        $crate::offline_store_contract!(@cases $open;
            append_then_fetch_in_order, fetch_pages, remove_after_ack, mixed_batch,
            retention, survives_reopen, binary_frames);
    };
    (@cases $open:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                let dir = $crate::tempfile::tempdir().expect("tempdir");
                $crate::offline::$case(dir.path(), &$open);
            }
        )*
    };
}
