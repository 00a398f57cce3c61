//! The group-store contract against a real `redis-server` (started per test on a free
//! port), plus what only Redis has: direct edits by the business side and outages.

use std::time::{Duration, Instant};

use im_storage::{GroupStore, RedisConfig, RedisGroups};
use im_testkit::groups::wait;
use im_testkit::RedisServer;

struct Fixture {
    redis: RedisServer,
    _rt: tokio::runtime::Runtime,
}

fn config(port: u16) -> RedisConfig {
    RedisConfig {
        port,
        timeout_ms: 500,
        ..RedisConfig::default()
    }
}

fn connect(port: u16) -> (tokio::runtime::Runtime, RedisGroups) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let store = RedisGroups::connect(&config(port), rt.handle().clone()).expect("connect");
    (rt, store)
}

fn open() -> (Fixture, RedisGroups) {
    let redis = RedisServer::start();
    let (rt, store) = connect(redis.port);
    (Fixture { redis, _rt: rt }, store)
}

im_testkit::group_store_contract!(open);

/// Waits until `gid`'s version moves away from `from`; returns how long it took.
fn version_change(s: &RedisGroups, gid: u32, from: u64) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if s.versions().get(gid) != from {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    None
}

/// Waits until nothing bumps `gid` for a while (reconnect handling is done), then checks
/// that a direct edit in Redis is noticed.
fn assert_edits_noticed(redis: &RedisServer, s: &RedisGroups, gid: u32) {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = s.versions().get(gid);
    let mut quiet = Instant::now();
    while quiet.elapsed() < Duration::from_millis(1500) {
        assert!(Instant::now() < deadline, "versions never settled");
        std::thread::sleep(Duration::from_millis(50));
        let now = s.versions().get(gid);
        if now != last {
            last = now;
            quiet = Instant::now();
        }
    }
    redis.cli(1, &["SADD", &format!("im_group:{gid}"), "777"]);
    assert!(
        version_change(s, gid, last).is_some(),
        "a direct edit was not noticed"
    );
}

#[test]
fn uses_the_seed_keys_in_database_1() {
    let (fx, s) = open();
    wait(s.add(1234, vec![7, 8])).unwrap();
    let out = fx.redis.cli(1, &["SMEMBERS", "im_group:1234"]);
    let mut got: Vec<&str> = out.split_whitespace().collect();
    got.sort();
    assert_eq!(got, ["7", "8"]);
    fx.redis.cli(1, &["SADD", "im_group:99", "5", "not-a-uid"]);
    assert_eq!(wait(s.members(99)).unwrap(), [5]);
}

#[test]
fn direct_edits_in_redis_invalidate_through_keyspace_events() {
    let (fx, s) = open();
    assert!(
        s.notifications(),
        "keyspace notifications should be enabled"
    );
    let flags = fx
        .redis
        .cli(0, &["CONFIG", "GET", "notify-keyspace-events"]);
    assert!(flags.contains('K'), "{flags}");
    for (i, cmd) in [
        vec!["SADD", "im_group:5", "1"],
        vec!["SREM", "im_group:5", "1"],
        vec!["SADD", "im_group:5", "2"],
        vec!["DEL", "im_group:5"],
    ]
    .iter()
    .enumerate()
    {
        let before = s.versions().get(5);
        fx.redis.cli(1, cmd);
        let took = version_change(&s, 5, before)
            .unwrap_or_else(|| panic!("edit {i} ({cmd:?}) was not noticed"));
        eprintln!("{cmd:?} noticed after {took:?}");
    }
    // Other databases are not ours.
    let before = s.versions().get(6);
    fx.redis.cli(0, &["SADD", "im_group:6", "1"]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(s.versions().get(6), before);
}

#[test]
fn outage_fails_lookups_then_recovers() {
    let (mut fx, s) = open();
    wait(s.add(1, vec![1, 2])).unwrap();
    let before = s.versions().get(1);
    fx.redis.kill();
    let t = Instant::now();
    let r = wait(s.members(1));
    assert!(
        r.is_err(),
        "lookup while Redis is down must fail, got {r:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "failure took {:?}",
        t.elapsed()
    );
    // Losing the notification stream invalidates every cached membership.
    assert!(version_change(&s, 1, before).is_some());
    fx.redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match wait(s.add(1, vec![3])) {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => panic!("no recovery: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    assert_eq!(wait(s.members(1)).unwrap(), [3]);
    // Notifications come back after the restart too.
    assert_edits_noticed(&fx.redis, &s, 1);
}

#[test]
fn starts_while_redis_is_down() {
    let mut redis = RedisServer::start();
    redis.kill();
    let (_rt, s) = connect(redis.port);
    assert!(wait(s.members(1)).is_err());
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while wait(s.add(1, vec![1])).is_err() {
        assert!(Instant::now() < deadline, "no recovery after a late start");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_edits_noticed(&redis, &s, 1);
}
