//! Hostile clients, end to end over real sockets and under both I/O drivers: input a byte at
//! a time, a 65,535-target part publish, a publisher that never reads, a receiver whose
//! writes stall until the write timeout, a flood of
//! connections that never log in, a CONNECT brute force from one address, WebSocket frames
//! that break the rules, and a client trying to send as somebody else. Every case ends with
//! a clean close (or a clear refusal) and a live probe: two other users still exchange a
//! message through the same server. (Malformed packets, 4 GiB length prefixes, text frames
//! and the CONNECT timeout are in `e2e_session.rs`.)

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{connect_packet, content, msg_id, token, Client, Driver, Kind, Recv, Server};
use im_protocol::{framing, ws, ClientPacket};

const S: Duration = Duration::from_secs(1);

/// Two fresh users exchange one message: the server still serves everyone else.
fn probe(srv: &Server, uid: u32) {
    let mut a = srv.connect(uid, Kind::Tcp);
    let mut b = srv.connect(uid + 1, Kind::Ws);
    a.publish_acked(uid + 1, &msg_id(uid as u64), b"probe");
    let (id, p) = b.recv_push_ack();
    assert_eq!((id, content(&p)), (msg_id(uid as u64), "probe".to_string()));
}

fn framed(packet: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    framing::put_prefix(&mut v, packet.len());
    v.extend_from_slice(packet);
    v
}

fn rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn byte_at_a_time(d: Driver) {
    let srv = Server::start(d, &[]);
    let mut peer = srv.connect(11, Kind::Tcp);
    let mut s = TcpStream::connect(("127.0.0.1", srv.tcp_port)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let publish = ClientPacket::Publish {
        to: 11,
        msg_id: &msg_id(1),
        payload: b"dribbled",
    }
    .to_vec();
    let mut bytes = framed(&connect_packet("10", &token(10), Some(1)));
    bytes.extend(framed(&publish));
    for b in bytes {
        s.write_all(&[b]).expect("write one byte");
        std::thread::sleep(Duration::from_millis(3));
    }
    s.set_read_timeout(Some(5 * S)).expect("timeout");
    let mut got = [0u8; 6 + 4 + 33];
    s.read_exact(&mut got).expect("CONNECT_ACK and PUB_ACK");
    assert_eq!(&got[..6], &[0, 0, 0, 2, 2, 0], "CONNECT_ACK 0");
    assert_eq!(got[10], 4, "PUB_ACK");
    assert_eq!(content(&peer.recv_push_ack().1), "dribbled");
    probe(&srv, 20);
}

fn part_publish_with_65535_targets(d: Driver) {
    let srv = Server::start(d, &[]);
    let mut c = srv.connect(30, Kind::Tcp);
    let targets: Vec<u8> = (1..=65_535u32).flat_map(|u| u.to_be_bytes()).collect();
    let packet = ClientPacket::GroupPartPublish {
        group: 1,
        msg_id: &msg_id(1),
        targets: im_protocol::Targets::from_raw(&targets).expect("targets"),
        payload: b"to everyone",
    }
    .to_vec();
    assert!(packet.len() > 262_000, "a 262 KB packet, under max_frame");
    c.send(&packet);
    // Refused with the argument error (over groups.max_part_targets); the session goes on.
    c.expect_pub_err(&msg_id(1), 1001);
    let mut peer = srv.connect(31, Kind::Tcp);
    c.publish_acked(31, &msg_id(2), b"after");
    assert_eq!(content(&peer.recv_push_ack().1), "after");
    probe(&srv, 40);
}

/// A client that publishes as fast as it can and never reads its PUB_ACKs: the server stops
/// reading it (back-pressure), its writes stall, and the write timeout closes it. Memory stays
/// bounded, what it got through is delivered once, and messages sent to it meanwhile are kept
/// for its next login.
fn publisher_that_never_reads(d: Driver) {
    let srv = Server::start(
        d,
        &[
            ("IMSERVER_SESSION__WRITE_TIMEOUT_MS", "1000"),
            ("IMSERVER_SESSION__SEND_QUEUE", "64"),
        ],
    );
    let rss0 = rss_kib(srv.pid());
    let mut flooder = srv.connect(50, Kind::Tcp);
    let mut sender = srv.connect(52, Kind::Tcp);
    let mut sink = srv.connect(51, Kind::Tcp);
    // A push reaching the sink means its login has finished fetching its (empty) offline
    // backlog: pushes that arrive during that fetch are held, boundedly, and a flood there
    // would close the sink as a slow consumer (storing the flood offline) instead.
    sender.publish_acked(51, &msg_id(999), b"ready");
    assert_eq!(content(&sink.recv_push_ack().1), "ready");
    // Messages for the flooder while it is not reading.
    for i in 0..10u64 {
        sender.publish_acked(50, &msg_id(1000 + i), format!("kept{i}").as_bytes());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sink_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut ids = std::collections::HashSet::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match sink.recv(S) {
                    Recv::Packet(p) if p[0] == 3 => {
                        let id: [u8; 32] = p[1..33].try_into().expect("id");
                        sink.send(&ClientPacket::PubAck { msg_id: &id }.to_vec());
                        ids.insert(id);
                        n += 1;
                    }
                    Recv::Closed => break,
                    _ => {}
                }
            }
            (n, ids.len() as u64)
        })
    };
    // Flood: ~20 MB of PUBLISH; the writes block once the server stops reading, and fail
    // once it closes the connection.
    let t0 = Instant::now();
    let mut chunk = Vec::new();
    for i in 0..100u64 {
        let p = ClientPacket::Publish {
            to: 51,
            msg_id: &msg_id(i),
            payload: b"flood",
        };
        chunk.extend(framed(&p.to_vec()));
    }
    let mut closed = false;
    let mut rounds = 0u64;
    {
        let mut s = flooder.raw_stream();
        s.set_write_timeout(Some(15 * S)).expect("write timeout");
        let flen = chunk.len() / 100;
        for r in 0..4000u64 {
            // Fresh ids each round (the server would drop repeats as duplicates).
            for (k, b) in chunk.chunks_mut(flen).enumerate() {
                let id = msg_id(r * 100 + k as u64 + 1_000_000);
                b[9..41].copy_from_slice(&id);
            }
            if s.write_all(&chunk).is_err() {
                closed = true;
                break;
            }
            rounds = r;
        }
    }
    assert!(t0.elapsed() < 60 * S, "the flood was never stopped");
    // However much of the flood the kernel buffers took, the server has closed the session.
    let _ = flooder.expect_closed(20 * S);
    let rss1 = rss_kib(srv.pid());
    assert!(
        rss1 < rss0 + 256 * 1024,
        "server memory bounded: {rss0} KiB -> {rss1} KiB"
    );
    std::thread::sleep(2 * S);
    stop.store(true, Ordering::Relaxed);
    let (n, unique) = sink_thread.join().expect("sink");
    eprintln!(
        "flooder closed by the server after {} KiB written ({}), {n} delivered, RSS {rss0} -> {rss1} KiB",
        (rounds + 1) * chunk.len() as u64 / 1024,
        if closed { "then its writes failed" } else { "all of it buffered or drained" },
    );
    assert!(n > 0, "what the flooder got through was delivered");
    assert_eq!(n, unique, "each delivered once");
    // The flooder's own messages were kept.
    let mut again = srv.connect(50, Kind::Tcp);
    let mut got: Vec<String> = (0..10).map(|_| content(&again.recv_push_ack().1)).collect();
    got.sort();
    let want: Vec<String> = (0..10).map(|i| format!("kept{i}")).collect();
    assert_eq!(got, want);
    probe(&srv, 60);
}

/// 1,000 TCP and 200 WebSocket connections that never send CONNECT: all are closed at the
/// CONNECT timeout and their descriptors released; logged-in users are served meanwhile.
/// Needs about 2,500 descriptors (both sides), well under this machine's 20,000.
fn unauthenticated_connection_flood(d: Driver) {
    let srv = Server::start(d, &[("IMSERVER_SESSION__CONNECT_TIMEOUT_MS", "1500")]);
    let fds0 = open_fds(srv.pid());
    let mut idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(("127.0.0.1", srv.tcp_port)).expect("connect"))
        .collect();
    for _ in 0..200 {
        let mut s = TcpStream::connect(("127.0.0.1", srv.ws_port)).expect("connect");
        let req = ws::client_request("h", "/ws", "dGhlIHNhbXBsZSBub25jZQ==");
        s.write_all(req.as_bytes()).expect("upgrade");
        idle.push(s);
    }
    probe(&srv, 70);
    std::thread::sleep(3 * S);
    for s in idle.iter_mut() {
        s.set_read_timeout(Some(5 * S)).expect("timeout");
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break, // closed (or reset)
                Ok(_) => continue,       // the 101 response of the WS ones
            }
        }
    }
    drop(idle);
    std::thread::sleep(S / 2);
    let fds1 = open_fds(srv.pid());
    assert!(fds1 <= fds0 + 8, "descriptors released: {fds0} -> {fds1}");
    probe(&srv, 80);
}

fn connect_ack(c: &mut Client) -> Vec<u8> {
    c.recv_packet()
}

/// Failed logins from one address past `auth.max_failures` get CONNECT_ACK 5, even with a
/// good token, until the window ends; other addresses are unaffected.
fn connect_brute_force_is_rate_limited(d: Driver) {
    let srv = Server::start(
        d,
        &[
            ("IMSERVER_AUTH__MAX_FAILURES", "5"),
            ("IMSERVER_AUTH__FAILURE_WINDOW_MS", "3000"),
        ],
    );
    let attacker = Ipv4Addr::new(127, 0, 0, 1);
    let t0 = Instant::now();
    for i in 0..5 {
        let mut c = Client::raw_from(&srv, Kind::Tcp, attacker);
        c.send(&connect_packet("90", &format!("guess-{i}"), Some(1)));
        assert_eq!(
            connect_ack(&mut c),
            vec![2, 3],
            "attempt {i}: bad credentials"
        );
        c.expect_closed(3 * S);
    }
    for kind in [Kind::Tcp, Kind::Ws] {
        let mut c = Client::raw_from(&srv, kind, attacker);
        c.send(&connect_packet("90", &token(90), Some(1)));
        assert_eq!(
            connect_ack(&mut c),
            vec![2, 5],
            "locked out, even with a good token"
        );
        c.expect_closed(3 * S);
    }
    // Another address logs in normally.
    let mut other = Client::raw_from(&srv, Kind::Tcp, Ipv4Addr::new(127, 0, 0, 2));
    other.send(&connect_packet("91", &token(91), Some(1)));
    assert_eq!(connect_ack(&mut other), vec![2, 0]);
    let (status, body) = srv.http_get("/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains(r#"im_auth_failures_total{reason="rate_limited"} 2"#),
        "rate-limited refusals are counted"
    );
    // After the window the attacker's address may try again.
    std::thread::sleep((3 * S + S / 5).saturating_sub(t0.elapsed()));
    let mut c = Client::raw_from(&srv, Kind::Tcp, attacker);
    c.send(&connect_packet("90", &token(90), Some(1)));
    assert_eq!(connect_ack(&mut c), vec![2, 0], "a new window");
    probe(&srv, 100);
}

/// A raw WebSocket client: upgraded, logged in as `uid`.
fn ws_raw(srv: &Server, uid: u32) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", srv.ws_port)).expect("connect");
    s.set_read_timeout(Some(5 * S)).expect("timeout");
    let req = ws::client_request("h", "/ws", "dGhlIHNhbXBsZSBub25jZQ==");
    s.write_all(req.as_bytes()).expect("upgrade");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).expect("upgrade response");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let mut frame = Vec::new();
    let connect = connect_packet(&uid.to_string(), &token(uid), Some(1));
    ws::put_frame(&mut frame, ws::Opcode::Binary, &connect, Some([1, 2, 3, 4]));
    s.write_all(&frame).expect("CONNECT");
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).expect("CONNECT_ACK frame");
    assert_eq!(ack, [0x82, 2, 2, 0], "CONNECT_ACK 0 in a binary frame");
    s
}

/// The opcodes of the WebSocket frames in `bytes`.
fn opcodes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok(Some(h)) = ws::parse_header(&bytes[pos..], 1 << 20) {
        out.push(bytes[pos] & 0x0f);
        pos += h.frame_len();
        if pos >= bytes.len() {
            break;
        }
    }
    out
}

/// Reads until the server closes; returns everything it sent.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let deadline = Instant::now() + 5 * S;
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "not closed; got {all:?}");
        match s.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("not closed within the read timeout; got {all:?}")
            }
            Err(_) => return all, // reset after the close
        }
    }
}

fn websocket_frames_that_break_the_rules(d: Driver) {
    let srv = Server::start(d, &[("IMSERVER_NET__MAX_FRAME", "1024")]);
    // Oversized: the header alone announces 1 MiB; refused without reading it.
    let mut s = ws_raw(&srv, 110);
    let mut f = vec![0x82, 0x80 | 127];
    f.extend_from_slice(&(1u64 << 20).to_be_bytes());
    f.extend_from_slice(&[1, 2, 3, 4]);
    s.write_all(&f).expect("write");
    let got = read_to_close(&mut s);
    assert!(opcodes(&got).contains(&8), "a close frame: {got:?}");
    // Unmasked client frame (RFC 6455 5.1: the server must close).
    let mut s = ws_raw(&srv, 111);
    let mut f = Vec::new();
    ws::put_frame(&mut f, ws::Opcode::Binary, &[7], None);
    s.write_all(&f).expect("write");
    let got = read_to_close(&mut s);
    assert!(opcodes(&got).contains(&8), "a close frame: {got:?}");
    // Continuation without a start.
    let mut s = ws_raw(&srv, 112);
    s.write_all(&[0x80, 0x81, 1, 2, 3, 4, 7 ^ 1])
        .expect("write");
    let got = read_to_close(&mut s);
    assert!(opcodes(&got).contains(&8), "a close frame: {got:?}");
    // Client-initiated close handshake: the server echoes the status code, then closes.
    let mut s = ws_raw(&srv, 113);
    let mut f = Vec::new();
    ws::put_frame(
        &mut f,
        ws::Opcode::Close,
        &1000u16.to_be_bytes(),
        Some([9, 9, 9, 9]),
    );
    s.write_all(&f).expect("write");
    let got = read_to_close(&mut s);
    assert_eq!(got, vec![0x88, 2, 0x03, 0xe8], "close 1000 echoed");
    probe(&srv, 120);
}

/// The server asserts the sender: a payload claiming another `from`, a username that does
/// not match the token, and a token for another user change nothing.
fn a_client_cannot_send_as_another_uid(d: Driver) {
    let srv = Server::start(d, &[]);
    let mut mallory = srv.connect(130, Kind::Tcp);
    let mut bob = srv.connect(131, Kind::Tcp);
    let forged = br#"{"from":"999","to":"131","content":"hi"}"#;
    mallory.publish_acked(131, &msg_id(1), forged);
    let (_, p) = bob.recv_push_ack();
    let v: serde_json::Value = serde_json::from_slice(&p).expect("envelope");
    assert_eq!(v["from"], "130", "the server's from, not the payload's");
    assert_eq!(v["content"], std::str::from_utf8(forged).expect("utf8"));
    // Username 999 with mallory's token: refused, and 999 gets nothing.
    let mut c = Client::raw(&srv, Kind::Tcp);
    c.send(&connect_packet("999", &token(130), Some(1)));
    assert_eq!(c.recv_packet(), vec![2, 3]);
    c.expect_closed(3 * S);
    probe(&srv, 140);
}

/// A receiver that stops reading while large messages are pushed to it: once the socket
/// buffers of both ends are full the server's write to it stalls, and the write timeout —
/// not the queue or in-flight limits, set out of reach here — closes the session. Its
/// messages are kept for its next login.
fn stalled_write_is_ended_by_the_write_timeout(d: Driver) {
    let srv = Server::start(
        d,
        &[
            ("IMSERVER_SESSION__WRITE_TIMEOUT_MS", "500"),
            ("IMSERVER_SESSION__SEND_QUEUE", "100000"),
            ("IMSERVER_SESSION__MAX_INFLIGHT", "100000"),
            ("IMSERVER_DELIVERY__REDELIVERY_INTERVAL_MS", "60000"),
        ],
    );
    let mut sender = srv.connect(150, Kind::Tcp);
    let mut stuck = srv.connect(151, Kind::Tcp);
    // 300 × 60 KB = 18 MB: more than the loopback buffers of both ends take.
    let big = vec![b'x'; 60_000];
    const N: u64 = 300;
    for i in 0..N {
        sender.publish_acked(151, &msg_id(i), &big);
    }
    // Well past the write timeout and a timer tick; then reading drains what the kernel
    // held and finds the connection closed.
    std::thread::sleep(3 * S);
    let seen = stuck.expect_closed(20 * S);
    let pushed = seen.iter().filter(|p| p[0] == 3).count() as u64;
    assert!(
        pushed < N,
        "the stalled write was ended: {pushed} of {N} pushed"
    );
    // Everything it did not acknowledge is delivered at its next login, in order.
    let mut again = srv.connect(151, Kind::Tcp);
    for i in 0..N {
        let (id, _) = again.recv_push_ack();
        assert_eq!(id, msg_id(i));
    }
    probe(&srv, 152);
}

both_drivers!(
    byte_at_a_time,
    part_publish_with_65535_targets,
    publisher_that_never_reads,
    stalled_write_is_ended_by_the_write_timeout,
    unauthenticated_connection_flood,
    connect_brute_force_is_rate_limited,
    websocket_frames_that_break_the_rules,
    a_client_cannot_send_as_another_uid,
);
