//! The protocol client of the test harness: TCP or WebSocket, plain or TLS (rustls), our
//! codec for TCP framing and `tungstenite` (an independent implementation) for WebSocket.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use im_protocol::{framing, ClientPacket, MsgId, ServerPacket};

use super::Server;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Ws,
    /// TCP framing inside TLS (the server must run with TLS: [`Server::start_tls`]).
    TcpTls,
    /// WebSocket inside TLS.
    Wss,
}

/// A client socket: plain TCP or TLS over TCP (rustls, a real TLS implementation).
pub trait Io: Read + Write + Send {
    fn sock(&self) -> &TcpStream;
}

impl Io for TcpStream {
    fn sock(&self) -> &TcpStream {
        self
    }
}

impl Io for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn sock(&self) -> &TcpStream {
        &self.sock
    }
}

enum Conn {
    Tcp(Box<dyn Io>, Vec<u8>),
    Ws(Box<tungstenite::WebSocket<Box<dyn Io>>>),
}

/// What a receive saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    Packet(Vec<u8>),
    Timeout,
    Closed,
}

/// A protocol client over a real socket.
pub struct Client {
    conn: Conn,
}

pub fn connect_packet(uid: &str, password: &str, flags: Option<u8>) -> Vec<u8> {
    ClientPacket::Connect {
        username: uid.as_bytes(),
        password: password.as_bytes(),
        role: Some(1),
        flags,
    }
    .to_vec()
}

fn port_of(server: &Server, kind: Kind) -> u16 {
    match kind {
        Kind::Tcp => server.tcp_port,
        Kind::Ws => server.ws_port,
        Kind::TcpTls => server.tls_tcp_port,
        Kind::Wss => server.wss_port,
    }
}

impl Client {
    /// Opens the transport only (no CONNECT sent).
    pub fn raw(server: &Server, kind: Kind) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port_of(server, kind))).expect("connect");
        Self::wrap(server, kind, stream)
    }

    /// Like [`Client::raw`], from the loopback source address `src` (e.g. 127.0.0.2), so
    /// per-address limits can be told apart.
    pub fn raw_from(server: &Server, kind: Kind, src: std::net::Ipv4Addr) -> Client {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        sock.bind(&std::net::SocketAddr::from((src, 0)).into())
            .expect("bind source address");
        let to = std::net::SocketAddr::from(([127, 0, 0, 1], port_of(server, kind)));
        sock.connect(&to.into()).expect("connect");
        Self::wrap(server, kind, sock.into())
    }

    fn wrap(server: &Server, kind: Kind, stream: TcpStream) -> Client {
        let port = port_of(server, kind);
        stream.set_nodelay(true).ok();
        let io: Box<dyn Io> = match kind {
            Kind::Tcp | Kind::Ws => Box::new(stream),
            Kind::TcpTls | Kind::Wss => {
                let cfg = server.tls_client.clone().expect("server started with TLS");
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
                let conn = rustls::ClientConnection::new(cfg, name).expect("tls client");
                Box::new(rustls::StreamOwned::new(conn, stream))
            }
        };
        let conn = match kind {
            Kind::Tcp | Kind::TcpTls => Conn::Tcp(io, Vec::new()),
            Kind::Ws | Kind::Wss => {
                let (scheme, path) = if kind == Kind::Ws {
                    ("ws", "/ws")
                } else {
                    ("wss", "/wss")
                };
                let url = format!("{scheme}://localhost:{port}{path}");
                let (ws, _) = tungstenite::client::client(url, io).expect("ws handshake");
                Conn::Ws(Box::new(ws))
            }
        };
        Client { conn }
    }

    /// Connects and sends CONNECT with extension flags; asserts CONNECT_ACK 0.
    pub fn login(server: &Server, uid: u32, kind: Kind, token: &str) -> Client {
        let mut c = Client::raw(server, kind);
        c.send(&connect_packet(&uid.to_string(), token, Some(1)));
        assert_eq!(c.recv_packet(), vec![2, 0], "CONNECT_ACK 0 for {uid}");
        c
    }

    /// The socket itself (plain TCP clients), for writes that bypass the client.
    pub fn raw_stream(&self) -> &TcpStream {
        self.stream()
    }

    fn stream(&self) -> &TcpStream {
        match &self.conn {
            Conn::Tcp(s, _) => s.sock(),
            Conn::Ws(ws) => ws.get_ref().sock(),
        }
    }

    /// Sends one packet (framed for the transport).
    pub fn send(&mut self, packet: &[u8]) {
        self.try_send(packet).expect("write");
    }

    /// Sends one packet; the error when the connection is gone (a test that expects it).
    pub fn try_send(&mut self, packet: &[u8]) -> Result<(), String> {
        match &mut self.conn {
            Conn::Tcp(s, _) => {
                let mut v = Vec::with_capacity(packet.len() + 4);
                framing::put_prefix(&mut v, packet.len());
                v.extend_from_slice(packet);
                s.write_all(&v)
                    .and_then(|()| s.flush())
                    .map_err(|e| format!("tcp write: {e}"))
            }
            Conn::Ws(ws) => ws
                .send(tungstenite::Message::Binary(packet.to_vec().into()))
                .map_err(|e| format!("ws write: {e}")),
        }
    }

    /// Writes raw bytes on the socket, bypassing framing.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        match &mut self.conn {
            Conn::Tcp(s, _) => {
                s.write_all(bytes).expect("write");
                s.flush().expect("flush");
            }
            Conn::Ws(ws) => {
                let s = ws.get_mut();
                s.write_all(bytes).expect("write");
                s.flush().expect("flush");
            }
        }
    }

    /// Sends a WebSocket message of any kind (WS clients only).
    pub fn send_ws(&mut self, m: tungstenite::Message) {
        match &mut self.conn {
            Conn::Ws(ws) => ws.send(m).expect("ws send"),
            Conn::Tcp(..) => panic!("not a websocket client"),
        }
    }

    pub fn recv(&mut self, timeout: Duration) -> Recv {
        self.stream()
            .set_read_timeout(Some(timeout))
            .expect("timeout");
        let deadline = Instant::now() + timeout;
        match &mut self.conn {
            Conn::Tcp(s, buf) => loop {
                if let Ok(Some(len)) = framing::check(buf, 1 << 24) {
                    let p = buf[4..4 + len].to_vec();
                    buf.drain(..4 + len);
                    return Recv::Packet(p);
                }
                let mut chunk = [0u8; 16384];
                match s.read(&mut chunk) {
                    Ok(0) => return Recv::Closed,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        return Recv::Timeout
                    }
                    Err(_) => return Recv::Closed,
                }
                if Instant::now() >= deadline {
                    return Recv::Timeout;
                }
            },
            Conn::Ws(ws) => loop {
                match ws.read() {
                    Ok(tungstenite::Message::Binary(b)) => return Recv::Packet(b.to_vec()),
                    Ok(tungstenite::Message::Close(_)) => {
                        // Finish the close handshake, then report the end.
                        let _ = ws.flush();
                        return Recv::Closed;
                    }
                    Ok(_) => continue,
                    Err(tungstenite::Error::Io(e))
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                    {
                        return Recv::Timeout
                    }
                    Err(_) => return Recv::Closed,
                }
            },
        }
    }

    /// The next packet, failing the test after 5 s.
    pub fn recv_packet(&mut self) -> Vec<u8> {
        match self.recv(Duration::from_secs(5)) {
            Recv::Packet(p) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// Asserts nothing arrives for `d`.
    pub fn expect_silence(&mut self, d: Duration) {
        match self.recv(d) {
            Recv::Timeout => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Asserts the server closes the connection within `d` (skipping packets, which are
    /// returned).
    pub fn expect_closed(&mut self, d: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + d;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "connection not closed; saw {seen:?}");
            match self.recv(left) {
                Recv::Closed => return seen,
                Recv::Packet(p) => seen.push(p),
                Recv::Timeout => panic!("connection not closed in {d:?}; saw {seen:?}"),
            }
        }
    }

    pub fn publish(&mut self, to: u32, id: &MsgId, payload: &[u8]) {
        self.send(
            &ClientPacket::Publish {
                to,
                msg_id: id,
                payload,
            }
            .to_vec(),
        );
    }

    /// Sends PING and expects PINGRESP (also: everything sent before it was processed).
    pub fn ping(&mut self) {
        self.send(&ClientPacket::Ping.to_vec());
        assert_eq!(
            ServerPacket::decode(&self.recv_packet()),
            Ok(ServerPacket::PingResp)
        );
    }

    /// Publishes and waits for the PUB_ACK.
    pub fn publish_acked(&mut self, to: u32, id: &MsgId, payload: &[u8]) {
        self.publish(to, id, payload);
        let ack = self.recv_packet();
        assert_eq!(
            ServerPacket::decode(&ack),
            Ok(ServerPacket::PubAck { msg_id: id })
        );
    }

    /// Receives a 1:1 push; returns (msg id, payload) without acking.
    pub fn recv_push(&mut self) -> (MsgId, Vec<u8>) {
        let p = self.recv_packet();
        match ServerPacket::decode(&p) {
            Ok(ServerPacket::Push { msg_id, payload }) => (*msg_id, payload.to_vec()),
            other => panic!("expected a push, got {other:?}"),
        }
    }

    /// Receives a push and acks it.
    pub fn recv_push_ack(&mut self) -> (MsgId, Vec<u8>) {
        let (id, payload) = self.recv_push();
        self.send(&ClientPacket::PubAck { msg_id: &id }.to_vec());
        (id, payload)
    }
}

/// A group push as received (command 5 or 11).
#[derive(Debug)]
pub struct GroupPush {
    pub part: bool,
    pub group: u32,
    pub msg_id: MsgId,
    pub targets: Vec<u32>,
    pub payload: Vec<u8>,
}

impl Client {
    pub fn group_publish(&mut self, group: u32, id: &MsgId, payload: &[u8]) {
        self.send(
            &ClientPacket::GroupPublish {
                group,
                msg_id: id,
                payload,
            }
            .to_vec(),
        );
    }

    pub fn group_part_publish(&mut self, group: u32, id: &MsgId, targets: &[u32], payload: &[u8]) {
        let raw: Vec<u8> = targets.iter().flat_map(|t| t.to_be_bytes()).collect();
        self.send(
            &ClientPacket::GroupPartPublish {
                group,
                msg_id: id,
                targets: im_protocol::Targets::from_raw(&raw).expect("targets"),
                payload,
            }
            .to_vec(),
        );
    }

    /// Expects the server's answer to a group publish: GROUP_PUB_ACK (or
    /// GROUP_PART_PUB_ACK when `part`) for `id`.
    pub fn expect_group_ack(&mut self, part: bool, id: &MsgId) {
        let p = self.recv_packet();
        let want = if part {
            ServerPacket::GroupPartPubAck { msg_id: id }
        } else {
            ServerPacket::GroupPubAck { msg_id: id }
        };
        assert_eq!(ServerPacket::decode(&p), Ok(want));
    }

    /// Expects PUB_ERR `code` for `id`.
    pub fn expect_pub_err(&mut self, id: &MsgId, code: u32) {
        let p = self.recv_packet();
        assert_eq!(
            ServerPacket::decode(&p),
            Ok(ServerPacket::PubErr { msg_id: id, code })
        );
    }

    /// Receives a group push; acks it with the matching command when `ack`.
    pub fn recv_group_push(&mut self, ack: bool) -> GroupPush {
        let p = self.recv_packet();
        let g = match ServerPacket::decode(&p) {
            Ok(ServerPacket::GroupPush {
                group,
                msg_id,
                payload,
            }) => GroupPush {
                part: false,
                group,
                msg_id: *msg_id,
                targets: Vec::new(),
                payload: payload.to_vec(),
            },
            Ok(ServerPacket::GroupPartPush {
                group,
                msg_id,
                targets,
                payload,
            }) => GroupPush {
                part: true,
                group,
                msg_id: *msg_id,
                targets: targets.iter().collect(),
                payload: payload.to_vec(),
            },
            other => panic!("expected a group push, got {other:?}"),
        };
        if ack {
            let id = &g.msg_id;
            let a = if g.part {
                ClientPacket::GroupPartPubAck { msg_id: id }
            } else {
                ClientPacket::GroupPubAck { msg_id: id }
            };
            self.send(&a.to_vec());
        }
        g
    }
}
