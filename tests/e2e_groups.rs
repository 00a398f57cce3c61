//! Groups end to end: the real server with each group backend — the embedded store
//! (membership written with `imserver group add` before start) and a real `redis-server`
//! on a free port (membership written with `redis-cli`, as the business side would). The
//! shared scenarios run against both and must give the same results; the Redis-only ones
//! cover direct edits and outages.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{connect_packet, content, msg_id, token, Client, Kind, Recv, Server};
use im_protocol::{ClientPacket, ServerPacket};
use im_testkit::RedisServer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Embedded,
    Redis,
}

/// A server plus, for the Redis backend, its `redis-server`.
struct Env {
    srv: Server,
    redis: Option<RedisServer>,
}

/// Starts Redis (if used), writes `groups`, then starts the server with `env` overrides.
fn start(backend: Backend, groups: &[(u32, &[u32])], env: &[(&str, &str)]) -> Env {
    let mut env: Vec<(String, String)> = env
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let redis = match backend {
        Backend::Embedded => None,
        Backend::Redis => {
            let r = RedisServer::start();
            for (gid, uids) in groups {
                let key = format!("im_group:{gid}");
                let uids: Vec<String> = uids.iter().map(u32::to_string).collect();
                let mut args = vec!["SADD", key.as_str()];
                args.extend(uids.iter().map(String::as_str));
                r.cli(1, &args);
            }
            env.push(("IMSERVER_GROUPS__BACKEND".into(), "redis".into()));
            env.push(("IMSERVER_REDIS__PORT".into(), r.port.to_string()));
            env.push(("IMSERVER_REDIS__TIMEOUT_MS".into(), "500".into()));
            Some(r)
        }
    };
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let srv = Server::start_with(common::driver(), &env_refs, |s| {
        if backend == Backend::Embedded {
            for (gid, uids) in groups {
                let gid = gid.to_string();
                let uids: Vec<String> = uids.iter().map(u32::to_string).collect();
                let mut args = vec!["group", "add", gid.as_str()];
                args.extend(uids.iter().map(String::as_str));
                let (ok, out) = s.cli(&args);
                assert!(ok, "imserver group add failed: {out}");
            }
        }
    });
    Env { srv, redis }
}

/// Generates `$name::{embedded,redis}_{io_uring,epoll}` tests calling `$name(backend)`
/// with the server under that driver.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::common::{run_with, Driver};
            #[test]
            fn embedded_io_uring() {
                run_with(Driver::IoUring, || super::$name(super::Backend::Embedded))
            }
            #[test]
            fn embedded_epoll() {
                run_with(Driver::Epoll, || super::$name(super::Backend::Embedded))
            }
            #[test]
            fn redis_io_uring() {
                run_with(Driver::IoUring, || super::$name(super::Backend::Redis))
            }
            #[test]
            fn redis_epoll() {
                run_with(Driver::Epoll, || super::$name(super::Backend::Redis))
            }
        }
    )*};
}

both_backends!(
    group_of_three_over_mixed_transports,
    part_publish_reaches_only_the_listed_members,
    refusals_name_the_reason,
    refusals_without_extensions_send_no_ack,
    offline_member_gets_it_on_reconnect,
    before_ack_mode_stores_then_delivers,
    sender_other_devices_get_it,
    unacked_group_pushes_are_resent_then_kept,
    thousand_members_over_all_shards_exactly_once,
);

/// Group 10 = {1 (TCP), 2 (WebSocket), 3 (TCP)}: a message from 1 reaches 2 and 3 once,
/// with the SDK envelope naming the sender and the group; the sending session gets only
/// the GROUP_PUB_ACK; acked pushes are not resent.
fn group_of_three_over_mixed_transports(b: Backend) {
    let e = start(
        b,
        &[(10, &[1, 2, 3])],
        &[("IMSERVER_DELIVERY__REDELIVERY_INTERVAL_MS", "300")],
    );
    let mut c1 = e.srv.connect(1, Kind::Tcp);
    let mut c2 = e.srv.connect(2, Kind::Ws);
    let mut c3 = e.srv.connect(3, Kind::Tcp);
    c1.group_publish(10, &msg_id(1), b"hello group");
    c1.expect_group_ack(false, &msg_id(1));
    for c in [&mut c2, &mut c3] {
        let g = c.recv_group_push(true);
        assert!(!g.part);
        assert_eq!((g.group, g.msg_id), (10, msg_id(1)));
        assert_eq!(content(&g.payload), "hello group");
        let v: serde_json::Value = serde_json::from_slice(&g.payload).unwrap();
        assert_eq!(
            (v["from"].as_str(), v["to"].as_str()),
            (Some("1"), Some("10"))
        );
    }
    // A reply from the WebSocket member reaches the others.
    c2.group_publish(10, &msg_id(2), b"reply");
    c2.expect_group_ack(false, &msg_id(2));
    assert_eq!(content(&c1.recv_group_push(true).payload), "reply");
    assert_eq!(content(&c3.recv_group_push(true).payload), "reply");
    // Acked: nothing is resent (redelivery interval 300 ms), and no echo to the sender.
    for c in [&mut c1, &mut c2, &mut c3] {
        c.expect_silence(Duration::from_millis(800));
    }
}

/// GROUP_PART_PUBLISH to [2, 3, 3] in {1,2,3,4}: 2 and 3 get one command-11 push each
/// (with the target list), 4 gets nothing; acks are command 12.
fn part_publish_reaches_only_the_listed_members(b: Backend) {
    let e = start(b, &[(20, &[1, 2, 3, 4])], &[]);
    let mut c1 = e.srv.connect(1, Kind::Tcp);
    let mut others: Vec<Client> = (2..=4).map(|u| e.srv.connect(u, Kind::Tcp)).collect();
    c1.group_part_publish(20, &msg_id(7), &[2, 3, 3], b"psst");
    c1.expect_group_ack(true, &msg_id(7));
    for c in &mut others[..2] {
        let g = c.recv_group_push(true);
        assert!(g.part);
        assert_eq!((g.group, g.msg_id), (20, msg_id(7)));
        assert_eq!(g.targets, [2, 3, 3]);
        assert_eq!(content(&g.payload), "psst");
    }
    for c in &mut others {
        c.expect_silence(Duration::from_millis(400));
    }
    c1.expect_silence(Duration::from_millis(100));
}

/// With the extension flag: not a member → 1203, unknown group → 1201, a listed uid not in
/// the group → 1203, no or too many targets → 1001. Nothing is delivered for any of them.
fn refusals_name_the_reason(b: Backend) {
    let e = start(
        b,
        &[(30, &[1, 2])],
        &[("IMSERVER_GROUPS__MAX_PART_TARGETS", "3")],
    );
    let mut c1 = e.srv.connect(1, Kind::Tcp);
    let mut c2 = e.srv.connect(2, Kind::Tcp);
    let mut outsider = e.srv.connect(9, Kind::Ws);
    outsider.group_publish(30, &msg_id(1), b"x");
    outsider.expect_pub_err(&msg_id(1), 1203);
    c1.group_publish(31, &msg_id(2), b"x");
    c1.expect_pub_err(&msg_id(2), 1201);
    c1.group_part_publish(30, &msg_id(3), &[2, 9], b"x");
    c1.expect_pub_err(&msg_id(3), 1203);
    c1.group_part_publish(30, &msg_id(4), &[2, 2, 2, 2], b"x");
    c1.expect_pub_err(&msg_id(4), 1001);
    c1.group_part_publish(30, &msg_id(5), &[], b"x");
    c1.expect_pub_err(&msg_id(5), 1001);
    c2.expect_silence(Duration::from_millis(300));
    // A refused message id is not remembered as delivered: fixing the mistake works.
    c1.group_part_publish(30, &msg_id(3), &[2], b"fixed");
    c1.expect_group_ack(true, &msg_id(3));
    assert_eq!(content(&c2.recv_group_push(true).payload), "fixed");
}

/// A client without the extension flag gets no ack for a refused group publish (the seed
/// behaviour), and its session keeps working.
fn refusals_without_extensions_send_no_ack(b: Backend) {
    let e = start(b, &[(40, &[1, 2])], &[]);
    let mut old = Client::raw(&e.srv, Kind::Tcp);
    old.send(&connect_packet("9", &token(9), None));
    assert_eq!(old.recv_packet(), vec![2, 0]);
    old.group_publish(40, &msg_id(1), b"x");
    old.expect_silence(Duration::from_millis(500));
    // Still served: a 1:1 message goes through.
    let mut c1 = e.srv.connect(1, Kind::Tcp);
    old.publish_acked(1, &msg_id(2), b"hi");
    assert_eq!(content(&c1.recv_push_ack().1), "hi");
}

/// A member offline at send time gets the group message right after its next login.
fn offline_member_gets_it_on_reconnect(b: Backend) {
    let e = start(b, &[(50, &[1, 2, 3])], &[]);
    let mut c1 = e.srv.connect(1, Kind::Tcp);
    let mut c2 = e.srv.connect(2, Kind::Tcp);
    for i in 0..3 {
        c1.group_publish(50, &msg_id(i), format!("m{i}").as_bytes());
        c1.expect_group_ack(false, &msg_id(i));
    }
    for i in 0..3 {
        assert_eq!(content(&c2.recv_group_push(true).payload), format!("m{i}"));
    }
    let mut c3 = e.srv.connect(3, Kind::Ws);
    for i in 0..3 {
        let g = c3.recv_group_push(true);
        assert_eq!((g.group, content(&g.payload)), (50, format!("m{i}")));
    }
    c3.expect_silence(Duration::from_millis(300));
}

/// `before_ack`: every recipient's copy is stored before the ack; an online member acks
/// and its copy is removed (nothing comes again after a restart), an offline one gets it
/// after a restart.
fn before_ack_mode_stores_then_delivers(b: Backend) {
    let mut e = start(
        b,
        &[(60, &[1, 2, 3])],
        &[("IMSERVER_DELIVERY__PERSIST", "before_ack")],
    );
    let mut c1 = e.srv.connect(1, Kind::Tcp);
    let mut c2 = e.srv.connect(2, Kind::Tcp);
    c1.group_publish(60, &msg_id(1), b"durable");
    c1.expect_group_ack(false, &msg_id(1));
    assert_eq!(content(&c2.recv_group_push(true).payload), "durable");
    // Let the ack's removal reach the store, then restart.
    std::thread::sleep(Duration::from_millis(300));
    drop((c1, c2));
    e.srv.restart();
    let mut c2 = e.srv.connect(2, Kind::Tcp);
    c2.expect_silence(Duration::from_millis(400));
    let mut c3 = e.srv.connect(3, Kind::Tcp);
    assert_eq!(content(&c3.recv_group_push(true).payload), "durable");
    // The sender has it already: nothing stored for it.
    let mut c1 = e.srv.connect(1, Kind::Tcp);
    c1.expect_silence(Duration::from_millis(400));
}

/// With multi-device login, the sender's other session gets the message; the sending
/// session does not.
fn sender_other_devices_get_it(b: Backend) {
    let e = start(
        b,
        &[(70, &[1, 2])],
        &[("IMSERVER_SESSION__DUPLICATE_LOGIN", "multi")],
    );
    let mut phone = e.srv.connect(1, Kind::Tcp);
    let mut desktop = e.srv.connect(1, Kind::Ws);
    let mut c2 = e.srv.connect(2, Kind::Tcp);
    phone.group_publish(70, &msg_id(1), b"from phone");
    phone.expect_group_ack(false, &msg_id(1));
    assert_eq!(
        content(&desktop.recv_group_push(true).payload),
        "from phone"
    );
    assert_eq!(content(&c2.recv_group_push(true).payload), "from phone");
    phone.expect_silence(Duration::from_millis(300));
}

/// Group pushes follow the 1:1 redelivery rules: unacked → resent (the same packet) every
/// interval, at most `redelivery_max` times, then DISCONNECT and close with the message kept
/// for the next login. A 1:1 ack (command 4) does not ack a group push.
fn unacked_group_pushes_are_resent_then_kept(b: Backend) {
    let e = start(
        b,
        &[(75, &[1, 2]), (76, &[1, 2])],
        &[
            ("IMSERVER_DELIVERY__REDELIVERY_INTERVAL_MS", "300"),
            ("IMSERVER_DELIVERY__REDELIVERY_MAX", "1"),
        ],
    );
    let mut c1 = e.srv.connect(1, Kind::Tcp);
    let mut c2 = e.srv.connect(2, Kind::Tcp);
    c1.group_publish(75, &msg_id(1), b"full");
    c1.expect_group_ack(false, &msg_id(1));
    c1.group_part_publish(76, &msg_id(2), &[2], b"part");
    c1.expect_group_ack(true, &msg_id(2));
    let first = [c2.recv_packet(), c2.recv_packet()];
    c2.send(&ClientPacket::PubAck { msg_id: &msg_id(1) }.to_vec());
    let again = [c2.recv_packet(), c2.recv_packet()];
    assert_eq!(first, again, "the same two pushes are resent");
    let rest = c2.expect_closed(Duration::from_secs(3));
    assert_eq!(
        rest.last().map(Vec::as_slice),
        Some(&[9u8][..]),
        "DISCONNECT, then close"
    );
    let mut c2 = e.srv.connect(2, Kind::Ws);
    let (a, b2) = (c2.recv_group_push(true), c2.recv_group_push(true));
    assert_eq!((a.part, content(&a.payload)), (false, "full".to_string()));
    assert_eq!((b2.part, content(&b2.payload)), (true, "part".to_string()));
    c2.expect_silence(Duration::from_millis(700));
}

/// 1,000 members over both shards (a quarter on WebSocket); 5 messages from two senders.
/// Every member gets every message exactly once and in order per sender. Needs ~2,100
/// descriptors (client and server side), well under this machine's `ulimit -n` of 20,000.
fn thousand_members_over_all_shards_exactly_once(b: Backend) {
    const N: u32 = 1000;
    const PER: u64 = 5;
    let members: Vec<u32> = (1..=N).collect();
    let e = start(
        b,
        &[(80, &members)],
        &[("IMSERVER_DELIVERY__REDELIVERY_INTERVAL_MS", "30000")],
    );
    let mut clients: Vec<Client> = members
        .iter()
        .map(|&u| {
            let kind = if u % 4 == 0 { Kind::Ws } else { Kind::Tcp };
            e.srv.connect(u, kind)
        })
        .collect();
    let senders = [1usize, 2];
    for i in 0..PER {
        for &s in &senders {
            clients[s - 1].group_publish(80, &msg_id(s as u64 * 1000 + i), b"x");
        }
    }
    let mut got: HashMap<u32, Vec<u64>> = HashMap::new();
    for (idx, c) in clients.iter_mut().enumerate() {
        let uid = idx as u32 + 1;
        let is_sender = senders.contains(&(uid as usize));
        let expected_pushes = if is_sender { PER } else { 2 * PER };
        let (mut pushes, mut acks) = (0, 0);
        while pushes < expected_pushes || (is_sender && acks < PER) {
            let p = c.recv_packet();
            match ServerPacket::decode(&p).unwrap() {
                ServerPacket::GroupPubAck { .. } => acks += 1,
                ServerPacket::GroupPush { msg_id, group, .. } => {
                    assert_eq!(group, 80);
                    let n = u64::from_str_radix(std::str::from_utf8(msg_id).unwrap(), 16).unwrap();
                    got.entry(uid).or_default().push(n);
                    c.send(&ClientPacket::GroupPubAck { msg_id }.to_vec());
                    pushes += 1;
                }
                other => panic!("member {uid}: unexpected {other:?}"),
            }
        }
    }
    for uid in 1..=N {
        let list = &got[&uid];
        for &s in &senders {
            if s as u32 == uid {
                continue;
            }
            let from_s: Vec<u64> = list
                .iter()
                .copied()
                .filter(|n| n / 1000 == s as u64)
                .collect();
            let want: Vec<u64> = (0..PER).map(|i| s as u64 * 1000 + i).collect();
            assert_eq!(
                from_s, want,
                "member {uid} from {s}: exactly once, in order"
            );
        }
    }
    for c in clients.iter_mut().step_by(50) {
        assert_eq!(c.recv(Duration::from_millis(50)), Recv::Timeout);
    }
}

/// Redis only: the business side edits the set directly; the change applies to the very
/// next message (the cache TTL is 10 minutes here, so only the keyspace notification can
/// explain it). Prints how long the change took to apply.
fn redis_direct_edits_take_effect_at_once() {
    let e = start(
        Backend::Redis,
        &[(90, &[1, 2])],
        &[("IMSERVER_GROUPS__CACHE_TTL_MS", "600000")],
    );
    let redis = e.redis.as_ref().unwrap();
    let mut c1 = e.srv.connect(1, Kind::Tcp);
    let mut c2 = e.srv.connect(2, Kind::Tcp);
    let mut c3 = e.srv.connect(3, Kind::Tcp);
    c1.group_publish(90, &msg_id(1), b"before");
    c1.expect_group_ack(false, &msg_id(1));
    assert_eq!(content(&c2.recv_group_push(true).payload), "before");
    c3.expect_silence(Duration::from_millis(200));

    // Add 3 and remove 2 directly in Redis; publish until the change shows.
    redis.cli(1, &["SADD", "im_group:90", "3"]);
    redis.cli(1, &["SREM", "im_group:90", "2"]);
    let t = Instant::now();
    let mut n = 2;
    loop {
        c1.group_publish(90, &msg_id(n), b"after");
        c1.expect_group_ack(false, &msg_id(n));
        match c3.recv(Duration::from_millis(100)) {
            Recv::Packet(p) => {
                assert!(matches!(
                    ServerPacket::decode(&p),
                    Ok(ServerPacket::GroupPush { .. })
                ));
                break;
            }
            _ => {
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "the edit never applied"
                );
                assert_eq!(content(&c2.recv_group_push(true).payload), "after");
                n += 1;
            }
        }
    }
    eprintln!(
        "direct Redis edit applied after {:?} ({} message(s) sent before it showed)",
        t.elapsed(),
        n - 1
    );
    assert_eq!(n, 2, "the first message after the edit must see it");
    c2.expect_silence(Duration::from_millis(300));
}

/// Redis only: Redis killed mid-test → group publishes refused with 500 (not hanging, not
/// crashing), 1:1 traffic unaffected; Redis back → group traffic recovers.
fn redis_outage_refuses_then_recovers() {
    let mut e = start(Backend::Redis, &[(95, &[1, 2])], &[]);
    let mut c1 = e.srv.connect(1, Kind::Tcp);
    let mut c2 = e.srv.connect(2, Kind::Ws);
    c1.group_publish(95, &msg_id(1), b"up");
    c1.expect_group_ack(false, &msg_id(1));
    assert_eq!(content(&c2.recv_group_push(true).payload), "up");

    e.redis.as_mut().unwrap().kill();
    // Until the server notices the lost connection (milliseconds) the cached membership is
    // still valid and used; from then on every lookup goes to Redis and fails.
    let t = Instant::now();
    let mut n = 100;
    loop {
        c1.group_publish(95, &msg_id(n), b"down");
        match ServerPacket::decode(&c1.recv_packet()).unwrap() {
            ServerPacket::PubErr { code: 500, msg_id } => {
                assert_eq!(msg_id, &common::msg_id(n));
                break;
            }
            ServerPacket::GroupPubAck { .. } => {
                assert_eq!(content(&c2.recv_group_push(true).payload), "down");
                assert!(t.elapsed() < Duration::from_secs(5), "never refused");
                std::thread::sleep(Duration::from_millis(20));
                n += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    eprintln!(
        "refusing {:?} after the kill ({} accepted from the cache before)",
        t.elapsed(),
        n - 100
    );
    c1.publish_acked(2, &msg_id(3), b"1:1 still works");
    assert_eq!(content(&c2.recv_push_ack().1), "1:1 still works");

    let redis = e.redis.as_mut().unwrap();
    redis.restart();
    // The restarted Redis is empty (no persistence): the business side writes the set again.
    redis.cli(1, &["SADD", "im_group:95", "1", "2"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 10;
    loop {
        c1.group_publish(95, &msg_id(n), b"back");
        let p = c1.recv_packet();
        match ServerPacket::decode(&p).unwrap() {
            ServerPacket::GroupPubAck { .. } => break,
            ServerPacket::PubErr { code: 500, .. } | ServerPacket::PubErr { code: 1201, .. } => {
                assert!(Instant::now() < deadline, "group traffic did not recover");
                std::thread::sleep(Duration::from_millis(200));
                n += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(content(&c2.recv_group_push(true).payload), "back");
}

/// Embedded only: the CLI manages groups while the server is stopped, and says clearly why
/// it cannot while the server runs.
fn embedded_cli_manages_groups() {
    let mut e = start(Backend::Embedded, &[(5, &[1, 2, 3])], &[]);
    let (ok, out) = e.srv.cli(&["group", "add", "5", "4"]);
    assert!(!ok, "the store is in use; got: {out}");
    assert!(
        out.contains("is a server using this data directory running"),
        "{out}"
    );
    e.srv.stop();
    let run = |args: &[&str]| {
        let (ok, out) = e.srv.cli(args);
        assert!(ok, "{args:?}: {out}");
        out
    };
    run(&["group", "remove", "5", "2"]);
    run(&["group", "create", "6", "7", "8"]);
    assert!(
        !e.srv.cli(&["group", "create", "6", "9"]).0,
        "create of an existing group"
    );
    assert_eq!(
        run(&["group", "list", "5"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1", "3"]
    );
    assert_eq!(
        run(&["group", "list"]).lines().collect::<Vec<_>>(),
        ["5\t2", "6\t2"]
    );
    run(&["group", "delete", "6"]);
    assert!(!e.srv.cli(&["group", "list", "6"]).0);
    assert!(!e.srv.cli(&["group", "add", "5", "0"]).0, "uid 0");
}

under_both_drivers!(
    redis_direct_edits_take_effect_at_once,
    redis_outage_refuses_then_recovers,
    embedded_cli_manages_groups,
);
