//! TLS end to end: `wss://…/wss` and TCP+TLS with a real TLS client (rustls) and a real
//! WebSocket client (tungstenite) against a server using a fresh self-signed certificate,
//! under io_uring and epoll.

mod common;

use std::time::Duration;

use common::{connect_packet, content, msg_id, token, Client, Driver, Kind, Recv, Server};
use im_protocol::{framing, ClientPacket, ServerPacket};

both_drivers!(
    tls_transports_exchange_messages,
    pipelined_input_survives_the_hand_off,
    bad_tls_input_is_refused_and_others_keep_working,
    corrupt_record_while_the_server_writes_ends_only_that_session,
);

/// TCP+TLS ↔ wss ↔ plain TCP, both ways, including a payload spanning several TLS records.
fn tls_transports_exchange_messages(d: Driver) {
    let srv = Server::start_tls(d, &[]);
    let mut a = srv.connect(1, Kind::TcpTls);
    let mut b = srv.connect(2, Kind::Wss);
    let mut c = srv.connect(3, Kind::Tcp);
    a.publish_acked(2, &msg_id(1), b"over tls");
    assert_eq!(content(&b.recv_push_ack().1), "over tls");
    let big = "x".repeat(40_000);
    b.publish_acked(1, &msg_id(2), big.as_bytes());
    assert_eq!(content(&a.recv_push_ack().1), big);
    c.publish_acked(2, &msg_id(3), b"plain to wss");
    assert_eq!(content(&b.recv_push_ack().1), "plain to wss");
    b.publish_acked(3, &msg_id(4), b"wss to plain");
    assert_eq!(content(&c.recv_push_ack().1), "wss to plain");
    // Heartbeat-level traffic and a clean end.
    a.ping();
}

/// CONNECT and 50 PUBLISHes (~50 KB, several TLS records) in one TLS write, before the
/// CONNECT_ACK: whatever the
/// accepting shard read past CONNECT (plaintext or still-encrypted) moves with the session
/// to the owner shard; all 50 are accepted and delivered in order.
fn pipelined_input_survives_the_hand_off(d: Driver) {
    let srv = Server::start_tls(d, &[]);
    let mut rx = srv.connect(20, Kind::Wss);
    let mut tx = Client::raw(&srv, Kind::TcpTls);
    let mut burst = Vec::new();
    let mut put = |p: &[u8]| {
        framing::put_prefix(&mut burst, p.len());
        burst.extend_from_slice(p);
    };
    put(&connect_packet("21", &token(21), Some(1)));
    for i in 0..50u64 {
        put(&ClientPacket::Publish {
            to: 20,
            msg_id: &msg_id(i),
            payload: format!("m{i}:{}", "p".repeat(1000)).as_bytes(),
        }
        .to_vec());
    }
    tx.send_raw(&burst);
    assert_eq!(tx.recv_packet(), vec![2, 0]);
    for i in 0..50u64 {
        assert_eq!(
            ServerPacket::decode(&tx.recv_packet()),
            Ok(ServerPacket::PubAck { msg_id: &msg_id(i) })
        );
        let (id, payload) = rx.recv_push_ack();
        let want = format!("m{i}:{}", "p".repeat(1000));
        assert_eq!((id, content(&payload)), (msg_id(i), want));
    }
}

/// Plaintext on the TLS port and a TLS client that never finishes: closed, while a TLS
/// session carries on.
fn bad_tls_input_is_refused_and_others_keep_working(d: Driver) {
    let srv = Server::start_tls(d, &[("IMSERVER_SESSION__CONNECT_TIMEOUT_MS", "500")]);
    let mut good = srv.connect(30, Kind::TcpTls);
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", srv.tls_tcp_port)).unwrap();
    use std::io::{Read, Write};
    plain
        .write_all(&connect_packet("31", &token(31), Some(1)))
        .unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 64];
    // A TLS alert at most, then the close: never a CONNECT_ACK.
    loop {
        match plain.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => assert_ne!(&buf[..n.min(2)], &[2, 0][..n.min(2)], "plaintext accepted"),
        }
    }
    // Connected but silent (no ClientHello): closed at the CONNECT timeout.
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", srv.wss_port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    assert!(matches!(silent.read(&mut buf), Ok(0) | Err(_)));
    let mut other = srv.connect(32, Kind::Wss);
    good.publish_acked(32, &msg_id(1), b"still fine");
    assert_eq!(content(&other.recv_push_ack().1), "still fine");
    assert_eq!(good.recv(Duration::from_millis(100)), Recv::Timeout);
}

#[test]
fn tls_without_certificate_fails_the_start_with_a_recipe() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imserver"))
        .args(["--config", "/dev/null", "--tcp-port", "0", "--ws-port", "0"])
        .env("IMSERVER_TLS__ENABLED", "true")
        .env("IMSERVER_CONTROL__ENABLED", "false")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls.cert_path"), "{err}");
    assert!(err.contains("openssl req -x509"), "{err}");
}

/// A client that completes TLS, logs in, and — while the server is pushing to it — writes a
/// garbage TLS record straight onto the socket. Only that session ends (its pushes are kept
/// for the next login); the shard keeps serving everyone else. (`monoio-rustls` 0.4 panicked
/// the shard thread here; see `shards/src/tls.rs`.)
fn corrupt_record_while_the_server_writes_ends_only_that_session(d: Driver) {
    use std::io::{Read, Write};
    let srv = Server::start_tls(d, &[]);
    let mut probe = srv.connect(41, Kind::Wss);
    let mut sender = srv.connect(42, Kind::Tcp);
    for round in 0..5u64 {
        // The victim: a raw rustls session, logged in as 40.
        let cfg = srv.tls_client.clone().unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(cfg, name).unwrap();
        let sock = std::net::TcpStream::connect(("127.0.0.1", srv.tls_tcp_port)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut frame = Vec::new();
        let p = connect_packet("40", &token(40), Some(1));
        framing::put_prefix(&mut frame, p.len());
        frame.extend_from_slice(&p);
        tls.write_all(&frame).unwrap();
        tls.flush().unwrap();
        let mut ack = [0u8; 6];
        tls.read_exact(&mut ack).unwrap();
        assert_eq!(ack, [0, 0, 0, 2, 2, 0]);
        // Keep the server writing to 40 (it never reads or acks), then corrupt the stream.
        for i in 0..200u64 {
            sender.publish(40, &msg_id(round * 1000 + i), &[b'z'; 2000]);
        }
        let mut garbage = vec![23u8, 3, 3, 0x40, 0x00];
        garbage.extend(std::iter::repeat_n(0xAB, 0x4000));
        let _ = tls.sock.write_all(&garbage);
        drop(tls);
        for i in 0..200u64 {
            let p = sender.recv_packet();
            assert_eq!(
                ServerPacket::decode(&p),
                Ok(ServerPacket::PubAck {
                    msg_id: &msg_id(round * 1000 + i)
                })
            );
        }
        // Everyone else is still served.
        sender.publish_acked(41, &msg_id(round * 1000 + 999), b"alive");
        assert_eq!(content(&probe.recv_push_ack().1), "alive");
    }
    // And 40 gets its messages at the next login (kept, not lost).
    let mut victim = srv.connect(40, Kind::TcpTls);
    let (first, _) = victim.recv_push();
    assert_eq!(first, msg_id(0), "the oldest kept message comes first");
}
