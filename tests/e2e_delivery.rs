//! End-to-end delivery over real sockets, under both I/O drivers: 1:1 with acks across
//! transports, offline storage and drain, redelivery, dedupe, slow consumers, many users
//! over all shards, and nothing lost across a SIGTERM restart.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{content, msg_id, Client, Driver, Kind, Recv, Server};
use im_protocol::{ClientPacket, ServerPacket};

const S: Duration = Duration::from_secs(1);

fn one_to_one(d: Driver, from: Kind, to: Kind) {
    let srv = Server::start(d, &[("IMSERVER_DELIVERY__REDELIVERY_INTERVAL_MS", "300")]);
    let mut a = srv.connect(100, from);
    let mut b = srv.connect(101, to);
    for i in 0..20u64 {
        a.publish_acked(101, &msg_id(i), format!("m{i}").as_bytes());
    }
    for i in 0..20u64 {
        let (id, payload) = b.recv_push_ack();
        assert_eq!(id, msg_id(i), "in order");
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["from"], "100", "the server asserts the sender");
        assert_eq!(v["to"], "101");
        assert_eq!(v["content"], format!("m{i}"));
    }
    // Acked: nothing is redelivered.
    b.expect_silence(Duration::from_millis(800));
}

fn tcp_sender_ws_recipient(d: Driver) {
    one_to_one(d, Kind::Tcp, Kind::Ws)
}

fn ws_sender_tcp_recipient(d: Driver) {
    one_to_one(d, Kind::Ws, Kind::Tcp)
}

fn offline_delivery_in_order_after_reconnect(d: Driver) {
    let srv = Server::start(d, &[]);
    let mut a = srv.connect(200, Kind::Tcp);
    for i in 0..300u64 {
        // More than one drain page (256).
        a.publish_acked(201, &msg_id(i), format!("off{i}").as_bytes());
    }
    let mut b = srv.connect(201, Kind::Ws);
    for i in 0..300u64 {
        let (id, p) = b.recv_push_ack();
        assert_eq!((id, content(&p)), (msg_id(i), format!("off{i}")));
    }
    b.expect_silence(Duration::from_millis(300));
    drop(b);
    // Acked offline messages are gone: a new login gets nothing.
    std::thread::sleep(Duration::from_millis(200));
    let mut b = srv.connect(201, Kind::Tcp);
    b.expect_silence(Duration::from_millis(500));
}

fn redelivery_then_close_keeps_the_message(d: Driver) {
    let srv = Server::start(d, &[("IMSERVER_DELIVERY__REDELIVERY_INTERVAL_MS", "200")]);
    let mut a = srv.connect(300, Kind::Tcp);
    let mut b = srv.connect(301, Kind::Tcp);
    a.publish_acked(301, &msg_id(9), b"ack me");
    // First push plus 3 resends, never acked; then DISCONNECT and close.
    let seen = b.expect_closed(5 * S);
    let pushes = seen.iter().filter(|p| p[0] == 3).count();
    assert_eq!(pushes, 4, "1 push + 3 resends: {seen:?}");
    assert_eq!(seen.last(), Some(&vec![9]), "DISCONNECT last");
    // Kept offline and delivered on reconnect.
    let mut b = srv.connect(301, Kind::Ws);
    let (id, p) = b.recv_push_ack();
    assert_eq!((id, content(&p).as_str()), (msg_id(9), "ack me"));
    b.expect_silence(Duration::from_millis(500));
}

fn retransmitted_publish_is_not_delivered_twice(d: Driver) {
    let srv = Server::start(d, &[]);
    let mut a = srv.connect(400, Kind::Tcp);
    let mut b = srv.connect(401, Kind::Tcp);
    a.publish_acked(401, &msg_id(1), b"once");
    a.publish_acked(401, &msg_id(1), b"once"); // client retry: acked again
                                               // The retry after a reconnect is caught too.
    drop(a);
    let mut a = srv.connect(400, Kind::Ws);
    a.publish_acked(401, &msg_id(1), b"once");
    a.publish_acked(401, &msg_id(2), b"next");
    assert_eq!(b.recv_push_ack().0, msg_id(1));
    assert_eq!(b.recv_push_ack().0, msg_id(2));
    b.expect_silence(Duration::from_millis(500));
}

fn slow_consumer_is_closed_and_messages_kept(d: Driver) {
    let srv = Server::start(d, &[("IMSERVER_SESSION__MAX_INFLIGHT", "8")]);
    let mut a = srv.connect(500, Kind::Tcp);
    let mut b = srv.connect(501, Kind::Tcp);
    for i in 0..20u64 {
        a.publish_acked(501, &msg_id(i), format!("s{i}").as_bytes());
    }
    // b never acks: closed once more than 8 pushes are unacknowledged.
    let seen = b.expect_closed(5 * S);
    assert!(seen.iter().filter(|p| p[0] == 3).count() >= 8);
    let mut b = srv.connect(501, Kind::Tcp);
    for i in 0..20u64 {
        let (id, p) = b.recv_push_ack();
        assert_eq!((id, content(&p)), (msg_id(i), format!("s{i}")));
    }
}

/// 1,000 users (a quarter on WebSocket) over 2 shards; each sends 5 messages to the next
/// user. Every message arrives exactly once, in order per sender. Needs ~2,100 descriptors
/// (client and server side), well under this machine's `ulimit -n` of 20,000.
fn thousand_users_over_all_shards(d: Driver) {
    const USERS: u32 = 1000;
    const PER: u64 = 5;
    let srv = Server::start(d, &[("IMSERVER_DELIVERY__REDELIVERY_INTERVAL_MS", "30000")]);
    let mut clients: Vec<Client> = (0..USERS)
        .map(|u| {
            let kind = if u % 4 == 0 { Kind::Ws } else { Kind::Tcp };
            srv.connect(1000 + u, kind)
        })
        .collect();
    for (u, c) in clients.iter_mut().enumerate() {
        let to = 1000 + (u as u32 + 1) % USERS;
        for i in 0..PER {
            c.publish(to, &msg_id(u as u64 * 100 + i), b"x");
        }
    }
    let mut pub_acks = 0;
    let mut got: HashMap<u32, Vec<u64>> = HashMap::new();
    for (u, c) in clients.iter_mut().enumerate() {
        let mut pushes = 0;
        while pushes < PER || pub_acks < (u as u64 + 1) * PER {
            let p = c.recv_packet();
            match ServerPacket::decode(&p).unwrap() {
                ServerPacket::PubAck { .. } => pub_acks += 1,
                ServerPacket::Push { msg_id, .. } => {
                    let n = u64::from_str_radix(std::str::from_utf8(msg_id).unwrap(), 16).unwrap();
                    got.entry(u as u32).or_default().push(n);
                    c.send(&ClientPacket::PubAck { msg_id }.to_vec());
                    pushes += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(pub_acks, USERS as u64 * PER);
    for u in 0..USERS {
        let from = (u + USERS - 1) % USERS;
        let want: Vec<u64> = (0..PER).map(|i| from as u64 * 100 + i).collect();
        assert_eq!(
            got[&u], want,
            "user {u}: none lost, none duplicated, in order"
        );
    }
    // No duplicates arrive later either.
    for c in clients.iter_mut().step_by(50) {
        assert_eq!(c.recv(Duration::from_millis(50)), Recv::Timeout);
    }
}

/// Messages accepted (PUB_ACK received) survive a SIGTERM restart: for an offline user and
/// for an online user who never acked.
fn sigterm_restart_loses_nothing(d: Driver, persist: &str) {
    let mut srv = Server::start(d, &[("IMSERVER_DELIVERY__PERSIST", persist)]);
    let mut a = srv.connect(600, Kind::Tcp);
    let mut online = srv.connect(602, Kind::Ws);
    for i in 0..50u64 {
        a.publish_acked(601, &msg_id(i), format!("o{i}").as_bytes());
        a.publish_acked(602, &msg_id(1000 + i), format!("n{i}").as_bytes());
    }
    // The online user reads but never acks.
    for _ in 0..50 {
        online.recv_push();
    }
    srv.restart();
    for (uid, base, prefix) in [(601u32, 0u64, "o"), (602, 1000, "n")] {
        let mut c = srv.connect(uid, Kind::Tcp);
        for i in 0..50u64 {
            let (id, p) = c.recv_push_ack();
            assert_eq!(
                (id, content(&p)),
                (msg_id(base + i), format!("{prefix}{i}")),
                "uid {uid}"
            );
        }
        c.expect_silence(Duration::from_millis(300));
    }
}

fn before_ack_survives_sigterm_restart(d: Driver) {
    sigterm_restart_loses_nothing(d, "before_ack")
}

fn on_failure_survives_sigterm_restart(d: Driver) {
    sigterm_restart_loses_nothing(d, "on_failure")
}

fn raw_envelope_passes_payload_unchanged(d: Driver) {
    let srv = Server::start(d, &[("IMSERVER_DELIVERY__ENVELOPE", "raw")]);
    let mut a = srv.connect(700, Kind::Tcp);
    let mut b = srv.connect(701, Kind::Ws);
    let binary: Vec<u8> = (0..=255u8).collect();
    a.publish_acked(701, &msg_id(1), &binary);
    assert_eq!(b.recv_push_ack().1, binary);
}

both_drivers!(
    tcp_sender_ws_recipient,
    ws_sender_tcp_recipient,
    offline_delivery_in_order_after_reconnect,
    redelivery_then_close_keeps_the_message,
    retransmitted_publish_is_not_delivered_twice,
    slow_consumer_is_closed_and_messages_kept,
    thousand_users_over_all_shards,
    before_ack_survives_sigterm_restart,
    on_failure_survives_sigterm_restart,
    raw_envelope_passes_payload_unchanged,
);
