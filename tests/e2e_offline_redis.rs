//! Offline messages in Redis (`storage.backend = "redis"`) end to end, against a real
//! `redis-server` started by the test: stored as the seed's list per user, delivered in
//! order at login, removed when acked, kept across a server restart. The clients are the
//! Rust client library (`imclient`), as an application would use it.

mod common;

use std::time::{Duration, Instant};

use common::sdk::{config, next_message, no_message_for, rt};
use common::Server;
use im_testkit::RedisServer;
use imclient::{AckMode, Client};

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
    let ids = rt().block_on(async {
        let (a, _events) = Client::connect(config(&srv, 1, "tcp")).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..300u64 {
            ids.push(a.send(2, format!("m{i}").as_bytes()).await.unwrap());
        }
        a.close().await;
        ids
    });
    // before_ack: every acked publish is in Redis already.
    assert_eq!(llen(&redis, 2), 300);
    srv.restart();
    rt().block_on(async {
        let mut cfg = config(&srv, 2, "ws");
        cfg.ack_mode = AckMode::Manual;
        let (_b, mut events) = Client::connect(cfg).await.unwrap();
        for (i, id) in ids.iter().enumerate() {
            let m = next_message(&mut events).await;
            assert_eq!((&m.id, m.text()), (id, format!("m{i}")), "in order");
            m.ack();
        }
        no_message_for(&mut events, Duration::from_millis(300)).await;
    });
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
