//! The storage thread: ordering of queued operations, group commit, flush and shutdown.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_executor::block_on;
use im_storage::{EmbeddedStore, OfflineMessage, StoreHandle};

fn m(uid: u32, b: &'static str) -> OfflineMessage {
    OfflineMessage {
        uid,
        frame: Bytes::from_static(b.as_bytes()),
        expires_at_ms: u64::MAX / 2,
    }
}

#[test]
fn operations_apply_in_queue_order_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
    let (h, worker) = StoreHandle::spawn(store, Duration::from_secs(60)).unwrap();
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let h = h.clone();
            std::thread::spawn(move || {
                for i in 0..200u32 {
                    let body: &'static str = Box::leak(format!("{t}:{i}").into_boxed_str());
                    h.append_detached(vec![m(100 + t, body)]);
                }
                block_on(h.flush()).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for t in 0..4u32 {
        let got = block_on(h.fetch(100 + t, 0, 1000)).unwrap();
        let want: Vec<String> = (0..200).map(|i| format!("{t}:{i}")).collect();
        let got: Vec<String> = got
            .iter()
            .map(|g| String::from_utf8_lossy(&g.frame).into_owned())
            .collect();
        assert_eq!(got, want);
    }
    // Remove is applied before a later fetch.
    let seqs = block_on(h.append(vec![m(1, "x"), m(1, "y")])).unwrap();
    h.remove(1, vec![seqs[0]]);
    assert_eq!(block_on(h.count(1)).unwrap(), 1);
    drop(h);
    worker.join();
}
