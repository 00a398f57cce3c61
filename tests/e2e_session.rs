//! End-to-end session rules over real sockets, under both I/O drivers: authentication,
//! duplicate login, heartbeat, first-packet and bad-input handling, WebSocket specifics.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{connect_packet, token, Client, Driver, Kind, Recv, Server};
use im_shards::TokenAuth;

const S: Duration = Duration::from_secs(1);

fn bad_token_gets_ack_3_and_close(d: Driver) {
    let srv = Server::start(d, &[]);
    let expired = TokenAuth::new(common::SECRET).mint_claims(5, 1, 2).unwrap();
    let wrong_secret = TokenAuth::new("other")
        .mint(5, Duration::from_secs(60))
        .unwrap();
    for (kind, user, pass) in [
        (Kind::Tcp, "5", "garbage".to_string()),
        (Kind::Ws, "5", expired),
        (Kind::Tcp, "5", wrong_secret),
        (Kind::Ws, "6", token(5)), // username is not the token's subject
        (Kind::Tcp, "abc", token(5)),
    ] {
        let mut c = Client::raw(&srv, kind);
        c.send(&connect_packet(user, &pass, None));
        assert_eq!(c.recv_packet(), vec![2, 3], "{kind:?} {user}");
        c.expect_closed(5 * S);
    }
}

/// A token from a plain JWT library call with only `sub` and `exp` (the format the
/// configuration documents, what a client author writes first) logs in.
fn token_with_only_sub_and_exp_logs_in(d: Driver) {
    let srv = Server::start(d, &[]);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let key = jsonwebtoken::EncodingKey::from_secret(common::SECRET.as_bytes());
    // Twelve logins: more than the brute-force limit (10), so refusals would also show as
    // CONNECT_ACK 5 here.
    for i in 0..12u32 {
        let uid = 700 + i;
        let claims = serde_json::json!({"sub": uid.to_string(), "exp": exp});
        let t = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
        let kind = if i % 2 == 0 { Kind::Tcp } else { Kind::Ws };
        let mut c = Client::raw(&srv, kind);
        c.send(&connect_packet(&uid.to_string(), &t, None));
        assert_eq!(c.recv_packet(), vec![2, 0], "login {i} over {kind:?}");
    }
}

fn kick_old_sends_logout(d: Driver) {
    let srv = Server::start(d, &[]);
    let mut old = srv.connect(10, Kind::Tcp);
    let mut new = srv.connect(10, Kind::Ws);
    let seen = old.expect_closed(5 * S);
    assert_eq!(seen, vec![vec![20]], "LOGOUT then close");
    // The new session works.
    let mut other = srv.connect(11, Kind::Tcp);
    other.publish_acked(10, &common::msg_id(1), b"to the new one");
    assert_eq!(common::content(&new.recv_push_ack().1), "to the new one");
}

fn reject_and_multi_policies(d: Driver) {
    let srv = Server::start(d, &[("IMSERVER_SESSION__DUPLICATE_LOGIN", "reject")]);
    let mut first = srv.connect(20, Kind::Tcp);
    let mut second = Client::raw(&srv, Kind::Tcp);
    second.send(&connect_packet("20", &token(20), None));
    assert_eq!(second.recv_packet(), vec![2, 1]);
    second.expect_closed(5 * S);
    first.expect_silence(Duration::from_millis(200));

    let srv = Server::start(d, &[("IMSERVER_SESSION__DUPLICATE_LOGIN", "multi")]);
    let mut a = srv.connect(21, Kind::Tcp);
    let mut b = srv.connect(21, Kind::Ws);
    let mut sender = srv.connect(22, Kind::Tcp);
    sender.publish_acked(21, &common::msg_id(7), b"both devices");
    assert_eq!(common::content(&a.recv_push_ack().1), "both devices");
    assert_eq!(common::content(&b.recv_push_ack().1), "both devices");
}

fn heartbeat_timeout_closes(d: Driver) {
    let srv = Server::start(
        d,
        &[
            ("IMSERVER_SESSION__HEARTBEAT_INTERVAL_MS", "300"),
            ("IMSERVER_SESSION__HEARTBEAT_TIMEOUT_MS", "300"),
        ],
    );
    // A client that answers PING stays connected.
    let mut alive = srv.connect(30, Kind::Ws);
    // A client that ignores it is closed.
    let mut dead = srv.connect(31, Kind::Tcp);
    let started = std::time::Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        if let Recv::Packet(p) = alive.recv(Duration::from_millis(100)) {
            assert_eq!(p, vec![7], "PING");
            alive.send(&[8]);
            pings += 1;
        }
    }
    assert!(pings >= 2, "alive client got {pings} pings");
    let seen = dead.expect_closed(3 * S);
    assert!(
        seen.iter().all(|p| p == &vec![7]),
        "only PINGs before close: {seen:?}"
    );
    assert!(!seen.is_empty());
    alive.send(&[8]);
    assert!(matches!(
        alive.recv(Duration::from_millis(100)),
        Recv::Timeout | Recv::Packet(_)
    ));
}

fn connect_timeout_and_first_packet_rules(d: Driver) {
    let srv = Server::start(d, &[("IMSERVER_SESSION__CONNECT_TIMEOUT_MS", "300")]);
    // Nothing sent: closed at the timeout.
    let mut idle = Client::raw(&srv, Kind::Tcp);
    assert_eq!(idle.expect_closed(3 * S), Vec::<Vec<u8>>::new());
    // First packet is not CONNECT: closed.
    let mut c = Client::raw(&srv, Kind::Tcp);
    c.send(&[7]);
    c.expect_closed(3 * S);
    // Malformed CONNECT: INVALID_PACKET then close.
    let mut c = Client::raw(&srv, Kind::Ws);
    c.send(&[1, 0, 9, b'x']);
    assert_eq!(c.expect_closed(3 * S), vec![vec![10]]);
}

fn malformed_and_overlong_packets_get_invalid_packet(d: Driver) {
    let srv = Server::start(d, &[("IMSERVER_NET__MAX_FRAME", "1024")]);
    let mut probe = srv.connect(40, Kind::Tcp);
    let cases: Vec<Vec<u8>> = vec![
        vec![0, 0, 0, 1, 99],         // unknown command
        vec![0, 0, 0, 3, 3, 0, 0],    // truncated PUBLISH
        vec![0, 0, 0, 2, 7, 7],       // PING with trailing byte
        vec![0xff, 0xff, 0xff, 0xff], // 4 GiB length prefix
        vec![0, 0, 4, 1],             // above max_frame (1024)
        vec![0, 0, 0, 0],             // empty packet
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let mut c = srv.connect(41 + i as u32, Kind::Tcp);
        c.send_raw(bytes);
        assert_eq!(
            c.expect_closed(3 * S),
            vec![vec![10]],
            "case {i}: {bytes:?}"
        );
    }
    // Nobody else was affected.
    let mut peer = srv.connect(60, Kind::Ws);
    probe.publish_acked(60, &common::msg_id(1), b"still fine");
    assert_eq!(common::content(&peer.recv_push_ack().1), "still fine");
}

fn websocket_text_frame_is_refused(d: Driver) {
    let srv = Server::start(d, &[]);
    let mut c = srv.connect(70, Kind::Ws);
    c.send_ws(tungstenite::Message::Text("hello".into()));
    assert_eq!(c.expect_closed(3 * S), vec![vec![10]]);
    // A WebSocket ping is answered by the WS layer; a client PING (extension) by PING_RESP.
    let mut ok = srv.connect(71, Kind::Ws);
    ok.send_ws(tungstenite::Message::Ping(vec![1, 2].into()));
    ok.send(&[7]);
    assert_eq!(
        ok.recv_packet(),
        vec![8],
        "PING_RESP to a client PING (extension)"
    );
    // A PUBLISH split over two masked fragments is reassembled.
    let publish = im_protocol::ClientPacket::Publish {
        to: 72,
        msg_id: &common::msg_id(3),
        payload: b"fragmented",
    }
    .to_vec();
    let (a, b) = publish.split_at(10);
    let mut raw = Vec::new();
    for (first_byte, part) in [(0x02u8, a), (0x80u8, b)] {
        let mask = [9, 8, 7, 6];
        raw.push(first_byte);
        raw.push(0x80 | part.len() as u8);
        raw.extend_from_slice(&mask);
        raw.extend(part.iter().enumerate().map(|(i, x)| x ^ mask[i % 4]));
    }
    ok.send_raw(&raw);
    assert_eq!(
        ok.recv_packet()[0],
        4,
        "PUB_ACK for the reassembled PUBLISH"
    );
}

fn websocket_other_path_gets_404(d: Driver) {
    let srv = Server::start(d, &[]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.ws_port)).unwrap();
    s.write_all(
        im_protocol::ws::client_request("h", "/other", "dGhlIHNhbXBsZSBub25jZQ==").as_bytes(),
    )
    .unwrap();
    let mut resp = String::new();
    s.set_read_timeout(Some(3 * S)).unwrap();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
}

both_drivers!(
    token_with_only_sub_and_exp_logs_in,
    bad_token_gets_ack_3_and_close,
    kick_old_sends_logout,
    reject_and_multi_policies,
    heartbeat_timeout_closes,
    connect_timeout_and_first_packet_rules,
    malformed_and_overlong_packets_get_invalid_packet,
    websocket_text_frame_is_refused,
    websocket_other_path_gets_404,
);
