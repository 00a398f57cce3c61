//! Sleeping connections end to end: a plain connection quiet for a second or more gives up
//! its task (`im_connections_sleeping` counts it), and input, output, heartbeats, kicks and
//! half-received frames all behave as if it were awake. Under both drivers.

mod common;

use std::time::{Duration, Instant};

use common::{msg_id, Driver, Kind, Recv, Server};
use im_protocol::{framing, ClientPacket, ServerPacket};

const S: Duration = Duration::from_secs(1);

/// `im_connections_sleeping` from `/metrics`.
fn sleeping(srv: &Server) -> u64 {
    let (status, text) = srv.http_get("/metrics");
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix("im_connections_sleeping "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no im_connections_sleeping in /metrics"))
}

/// Waits until `n` connections sleep (the sweep runs once a second and a connection must
/// have been quiet for one).
fn until_sleeping(srv: &Server, n: u64) {
    let deadline = Instant::now() + 6 * S;
    loop {
        let now = sleeping(srv);
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} connections sleep, expected {n}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn quiet_connections_sleep_and_wake_for_input_and_output(d: Driver) {
    let srv = Server::start(d, &[]);
    let mut a = srv.connect(41, Kind::Tcp);
    let mut b = srv.connect(42, Kind::Ws);
    until_sleeping(&srv, 2);
    // Input wakes the sender, output wakes the recipient.
    b.publish_acked(41, &msg_id(1), b"to a sleeper");
    assert_eq!(common::content(&a.recv_push_ack().1), "to a sleeper");
    until_sleeping(&srv, 2);
    a.publish_acked(42, &msg_id(2), b"and back");
    assert_eq!(common::content(&b.recv_push_ack().1), "and back");
    until_sleeping(&srv, 2);
    a.ping();
    b.ping();
    // A kick reaches a sleeping session: LOGOUT, then the close.
    until_sleeping(&srv, 2);
    let mut a2 = srv.connect(41, Kind::Ws);
    let seen = a.expect_closed(3 * S);
    assert_eq!(seen, vec![vec![20]], "LOGOUT then close");
    a2.ping();
    // A client that goes away while its connection sleeps is noticed.
    until_sleeping(&srv, 2);
    drop(b);
    until_sleeping(&srv, 1);
    let (_, text) = srv.http_get("/metrics");
    assert!(
        text.lines()
            .any(|l| l == "im_connections{transport=\"ws\"} 1"),
        "one ws session left (the new device): {text}"
    );
}

fn a_half_received_frame_keeps_the_connection_awake(d: Driver) {
    let srv = Server::start(d, &[]);
    let mut to = srv.connect(51, Kind::Tcp);
    let mut from = srv.connect(52, Kind::Tcp);
    until_sleeping(&srv, 2);
    let packet = ClientPacket::Publish {
        to: 51,
        msg_id: &msg_id(3),
        payload: b"split",
    }
    .to_vec();
    let mut framed = Vec::new();
    framing::put_prefix(&mut framed, packet.len());
    framed.extend_from_slice(&packet);
    let (head, tail) = framed.split_at(framed.len() / 2);
    from.send_raw(head);
    // Long past the time a quiet connection sleeps: the half frame must survive.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(sleeping(&srv), 1, "only the recipient sleeps");
    from.send_raw(tail);
    assert_eq!(
        ServerPacket::decode(&from.recv_packet()),
        Ok(ServerPacket::PubAck { msg_id: &msg_id(3) })
    );
    assert_eq!(common::content(&to.recv_push_ack().1), "split");
}

fn heartbeats_reach_sleeping_connections(d: Driver) {
    let srv = Server::start(
        d,
        &[
            ("IMSERVER_SESSION__HEARTBEAT_INTERVAL_MS", "3000"),
            ("IMSERVER_SESSION__HEARTBEAT_TIMEOUT_MS", "1500"),
        ],
    );
    let mut alive = srv.connect(61, Kind::Tcp);
    let mut dead = srv.connect(62, Kind::Ws);
    until_sleeping(&srv, 2);
    // The PING wakes both; the one that answers stays, the other is closed.
    let deadline = Instant::now() + 10 * S;
    let mut pings = 0;
    while pings < 2 {
        assert!(Instant::now() < deadline, "{pings} pings in 10 s");
        if let Recv::Packet(p) = alive.recv(Duration::from_millis(200)) {
            assert_eq!(p, vec![7], "PING");
            alive.send(&[8]);
            pings += 1;
        }
    }
    let seen = dead.expect_closed(3 * S);
    assert!(seen.iter().all(|p| p == &vec![7]), "{seen:?}");
    alive.ping();
}

both_drivers!(
    quiet_connections_sleep_and_wake_for_input_and_output,
    a_half_received_frame_keeps_the_connection_awake,
    heartbeats_reach_sleeping_connections,
);
