//! The ScyllaDB backend's driver code against an in-process CQL server (kassandra, see
//! `im_storage::scylla::test_server`): connect, schema creation, prepared statements,
//! paging, cursor moves, single-row deletes, reconnects. kassandra is not ScyllaDB: the
//! store never relies on it for range predicates, TTL or ORDER BY (it filters and sorts on
//! the client), so what these tests check is the store's own logic plus the wiring. The
//! real-ScyllaDB run of the contract is `contract_scylla.rs` (needs `SCYLLA_URI`).

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use im_storage::scylla::test_server::CqlTestServer;
use im_storage::{OfflineMessage, OfflineStore, ScyllaConfig, ScyllaOffline};
use im_testkit::offline::Opener;

struct Fixture {
    server: CqlTestServer,
    rt: tokio::runtime::Runtime,
}

fn fixture() -> Fixture {
    Fixture {
        server: CqlTestServer::start().expect("start the CQL test server"),
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime"),
    }
}

fn config(contact: String, keyspace: &str) -> ScyllaConfig {
    ScyllaConfig {
        contact_points: vec![contact],
        keyspace: keyspace.into(),
        replication_strategy: "SimpleStrategy".into(),
        consistency: "one".into(),
        connect_timeout_ms: 5_000,
        request_timeout_ms: 2_000,
        reconnect_interval_ms: 200,
        ..ScyllaConfig::default()
    }
}

impl Fixture {
    fn open(&self, keyspace: &str) -> ScyllaOffline {
        let s = ScyllaOffline::new(
            config(self.server.addr().to_string(), keyspace),
            86_400,
            self.rt.handle().clone(),
        )
        .expect("valid config");
        s.connect_now().expect("connect to the CQL test server");
        s
    }
}

fn msg(uid: u32, body: impl Into<Vec<u8>>) -> OfflineMessage {
    OfflineMessage {
        uid,
        frame: Bytes::from(body.into()),
        expires_at_ms: u64::MAX / 2,
    }
}

fn bodies(s: &dyn OfflineStore, uid: u32) -> Vec<String> {
    s.fetch(uid, 0, usize::MAX, 1)
        .expect("fetch")
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.frame).into_owned())
        .collect()
}

#[test]
fn prepared_writes_and_partition_reads_page_through_a_long_queue() {
    let f = fixture();
    let s = f.open("im_pages");
    // More than two pages (the store pages by 1,000 rows).
    let all: Vec<OfflineMessage> = (0..2_500).map(|i| msg(7, format!("m{i}"))).collect();
    let seqs = s.append(&all).expect("append");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    s.append(&[msg(8, "other user")]).expect("append");
    let got = s.fetch(7, 0, 10_000, 1).expect("fetch");
    assert_eq!(got.len(), 2_500);
    assert!(got.iter().zip(&all).all(|(g, m)| g.frame == m.frame));
    assert_eq!(bodies(&s, 8), ["other user"]);
    let page = s.fetch(7, seqs[1_999], 10, 1).expect("fetch after");
    assert_eq!(&page[0].frame[..], b"m2000");
    assert_eq!(page.len(), 10);
}

#[test]
fn acks_move_the_cursor_and_out_of_order_acks_delete_single_rows() {
    let f = fixture();
    let s = f.open("im_acks");
    let seqs = s
        .append(&[msg(5, "1"), msg(5, "2"), msg(5, "3"), msg(5, "4")])
        .expect("append");
    // Front ack (cursor) and one past a gap (single-row DELETE).
    s.remove(5, &[seqs[0], seqs[2]]).expect("remove");
    assert_eq!(bodies(&s, 5), ["2", "4"]);
    assert_eq!(s.count(5).expect("count"), 2);
    // Acking the gap jumps the cursor over the deleted row too.
    s.remove(5, &[seqs[1]]).expect("remove");
    s.remove(5, &[seqs[0]]).expect("a repeated ack is harmless");
    assert_eq!(bodies(&s, 5), ["4"]);
    s.remove(5, &[seqs[3]]).expect("remove");
    assert_eq!(s.count(5).expect("count"), 0);
    let next = s.append(&[msg(5, "5")]).expect("append");
    assert_eq!(bodies(&s, 5), ["5"]);
    assert!(next[0] > seqs[3]);
}

#[test]
fn a_reopened_store_numbers_above_everything_stored() {
    let f = fixture();
    let before = f.open("im_reopen").append(&[msg(4, "p")]).expect("append");
    let s = f.open("im_reopen");
    let after = s.append(&[msg(4, "q")]).expect("append");
    assert!(after[0] > before[0]);
    assert_eq!(bodies(&s, 4), ["p", "q"]);
}

#[test]
fn unreachable_scylla_gives_clear_errors_then_recovers() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr")
    };
    let s = ScyllaOffline::new(
        config(port.to_string(), "im_outage"),
        86_400,
        rt.handle().clone(),
    )
    .expect("valid config");
    let t = Instant::now();
    let e = s.append(&[msg(1, "x")]).expect_err("nothing listens there");
    assert!(e.to_string().contains("ScyllaDB unreachable"), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "bounded by connect_timeout_ms"
    );
    // Within the reconnect interval the error is immediate.
    let t = Instant::now();
    assert!(s.fetch(1, 0, 10, 1).is_err());
    assert!(t.elapsed() < Duration::from_millis(100));
    // Once a server is there, the next call after the interval connects and works.
    let _server = CqlTestServer::start_at(port).expect("start on the same port");
    std::thread::sleep(Duration::from_millis(250));
    s.append(&[msg(1, "y")]).expect("append after recovery");
    assert_eq!(bodies(&s, 1), ["y"]);
}

#[test]
fn bad_configuration_is_refused_with_the_setting_named() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut c = config("127.0.0.1:1".into(), "ok");
    c.consistency = "sometimes".into();
    let e = ScyllaOffline::new(c, 1, rt.handle().clone())
        .err()
        .expect("refused");
    assert!(e.to_string().contains("scylla.consistency"), "{e}");
}

/// The whole offline-store contract, against the in-process server. Meaningful here
/// because the store filters `seq` and expiry and sorts on the client: nothing in it rests
/// on kassandra's range predicates, TTL or ordering.
fn with_server(case: fn(&Path, Opener)) {
    let f = fixture();
    let open = |dir: &Path| -> Arc<dyn OfflineStore> {
        // The same directory means "reopen": the same keyspace.
        let ks = format!("im_{:x}", fxhash(dir.to_string_lossy().as_bytes()));
        Arc::new(f.open(&ks))
    };
    let dir = tempfile::tempdir().expect("tempdir");
    case(dir.path(), &open);
}

fn fxhash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100000001b3)
    })
}

mod contract {
    im_testkit::offline_store_contract!(with = super::with_server);
}
