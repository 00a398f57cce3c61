//! Offline messages in Redis (`storage.backend = "redis"`) end to end, against a real
//! `redis-server` started by the test: stored as the seed's list per user, delivered in
//! order at login, removed when acked, kept across a server restart.

mod common;

use std::time::{Duration, Instant};

use common::{content, msg_id, Kind, Server};
use im_testkit::RedisServer;

fn llen(redis: &RedisServer, uid: u32) -> usize {
    redis
        .cli(1, &["LLEN", &format!("im_offline:{uid}")])
        .trim()
        .parse()
        .expect("LLEN answer")
}

fn offline_messages_live_in_redis_lists() {
    let redis = RedisServer::start();
    let port = redis.port.to_string();
    let mut srv = Server::start(
        common::driver(),
        &[
            ("IMSERVER_STORAGE__BACKEND", "redis"),
            ("IMSERVER_REDIS__PORT", &port),
            ("IMSERVER_DELIVERY__PERSIST", "before_ack"),
        ],
    );
    let mut a = srv.connect(1, Kind::Tcp);
    for i in 0..300u64 {
        a.publish_acked(2, &msg_id(i), format!("m{i}").as_bytes());
    }
    // before_ack: every acked publish is in Redis already.
    assert_eq!(llen(&redis, 2), 300);
    drop(a);
    srv.restart();
    let mut b = srv.connect(2, Kind::Ws);
    for i in 0..300u64 {
        let (id, payload) = b.recv_push_ack();
        assert_eq!((id, content(&payload)), (msg_id(i), format!("m{i}")));
    }
    // Acked messages are removed from the list.
    let t = Instant::now();
    while llen(&redis, 2) != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "acked messages not removed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

under_both_drivers!(offline_messages_live_in_redis_lists,);
