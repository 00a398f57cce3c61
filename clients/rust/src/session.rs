//! The background task that owns the connection: logs in, reconnects, resends, answers
//! heartbeats, matches acknowledgements to publishes and hands messages over once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use im_protocol::{packet::FLAG_EXTENSIONS, ClientPacket, MsgId, ServerPacket};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::{sleep_until, timeout, Instant};

use crate::command::Command;
use crate::config::ClientConfig;
use crate::error::{Error, SendError};
use crate::message::{Event, Kind, Message};
use crate::recent::{Handed, Recent};
use crate::transport::Transport;

/// Commands written per flush at most.
const BATCH: usize = 64;

/// A publish waiting for the server's answer.
struct Pending {
    frame: Bytes,
    reply: oneshot::Sender<Result<MsgId, SendError>>,
    _permit: OwnedSemaphorePermit,
}

/// Why a connection ended.
enum End {
    Lost(String),
    LoggedOut,
    Closed(Option<oneshot::Sender<()>>),
}

pub(crate) struct Session {
    cfg: ClientConfig,
    cmds: mpsc::UnboundedReceiver<Command>,
    /// Given to messages so the application can acknowledge them.
    acker: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedSender<Event>,
    /// Unanswered publishes in the order they were sent (resent in this order).
    pending: BTreeMap<u64, Pending>,
    by_id: HashMap<MsgId, u64>,
    next_seq: u64,
    recent: Recent,
}

/// Connects and logs in: TCP/TLS/WebSocket, CONNECT, CONNECT_ACK 0.
pub(crate) async fn login(cfg: &ClientConfig) -> Result<Transport, Error> {
    let attempt = async {
        let mut t = Transport::connect(&cfg.endpoint, cfg.tls.as_ref(), cfg.max_frame).await?;
        let uid = cfg.uid.to_string();
        let connect = ClientPacket::Connect {
            username: uid.as_bytes(),
            password: cfg.token.as_bytes(),
            role: Some(cfg.role),
            flags: cfg.extensions.then_some(FLAG_EXTENSIONS),
        };
        t.send(Bytes::from(connect.to_vec())).await?;
        let first = t.recv().await.ok_or_else(|| {
            Error::Protocol("the server closed the connection before CONNECT_ACK".into())
        })??;
        match ServerPacket::decode(&first) {
            Ok(ServerPacket::ConnectAck { code: 0 }) => Ok(t),
            Ok(ServerPacket::ConnectAck { code }) => Err(Error::Refused(code)),
            Ok(other) => Err(Error::Protocol(format!(
                "expected CONNECT_ACK, got {other:?}"
            ))),
            Err(e) => Err(Error::Protocol(e.to_string())),
        }
    };
    timeout(cfg.connect_timeout, attempt)
        .await
        .unwrap_or(Err(Error::Timeout))
}

impl Session {
    pub(crate) fn new(
        cfg: ClientConfig,
        cmds: mpsc::UnboundedReceiver<Command>,
        acker: mpsc::UnboundedSender<Command>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        let recent = Recent::new(cfg.dedupe_window);
        Self {
            cfg,
            cmds,
            acker,
            events,
            pending: BTreeMap::new(),
            by_id: HashMap::new(),
            next_seq: 0,
            recent,
        }
    }

    fn emit(&self, e: Event) {
        // The application dropped its `Events`: it does not want them.
        let _ = self.events.send(e);
    }

    /// Runs until the client stops: serves `first`, then reconnects after every loss.
    pub(crate) async fn run(mut self, first: Transport) {
        let mut conn = Some(first);
        self.emit(Event::Connected { reconnect: false });
        loop {
            if let Some(t) = conn.take() {
                match self.serve(t).await {
                    End::Closed(done) => return self.stop(None, done),
                    End::LoggedOut => {
                        self.emit(Event::LoggedOut);
                        return self.fail_pending();
                    }
                    End::Lost(reason) => {
                        tracing::debug!(uid = self.cfg.uid, %reason, "connection lost");
                        self.emit(Event::Disconnected { reason });
                    }
                }
            }
            let mut attempt = 0u32;
            loop {
                let delay = self.cfg.backoff.delay(attempt);
                attempt = attempt.saturating_add(1);
                if let Some(done) = self.wait_offline(delay).await {
                    return self.stop(None, done);
                }
                match login(&self.cfg).await {
                    Ok(t) => {
                        conn = Some(t);
                        self.emit(Event::Connected { reconnect: true });
                        break;
                    }
                    // The token no longer works: retrying cannot help.
                    Err(Error::Refused(code @ 3)) => {
                        return self.stop(Some(Error::Refused(code)), None);
                    }
                    Err(e) => tracing::debug!(uid = self.cfg.uid, error = %e, "reconnect failed"),
                }
            }
        }
    }

    fn stop(mut self, why: Option<Error>, done: Option<oneshot::Sender<()>>) {
        self.fail_pending();
        self.emit(Event::Stopped(why));
        if let Some(d) = done {
            let _ = d.send(());
        }
    }

    fn fail_pending(&mut self) {
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.reply.send(Err(SendError::Stopped));
        }
        self.by_id.clear();
    }

    /// Waits `delay` while disconnected, queueing publishes and noting acks. `Some` when
    /// the application closed the client.
    async fn wait_offline(&mut self, delay: Duration) -> Option<Option<oneshot::Sender<()>>> {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return None,
                c = self.cmds.recv() => match c {
                    Some(Command::Publish { id, frame, reply, permit }) => {
                        self.add_pending(id, frame, reply, permit)
                    }
                    Some(Command::Ack { id, ack_cmd }) => self.recent.acked(&id, ack_cmd),
                    Some(Command::Close { done }) => return Some(done),
                    None => return Some(None),
                },
            }
        }
    }

    fn add_pending(
        &mut self,
        id: MsgId,
        frame: Bytes,
        reply: oneshot::Sender<Result<MsgId, SendError>>,
        permit: OwnedSemaphorePermit,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        // A second send with an id still pending replaces the first (the server treats it
        // as the same message anyway).
        if let Some(old) = self.by_id.insert(id, seq) {
            self.pending.remove(&old);
        }
        self.pending.insert(
            seq,
            Pending {
                frame,
                reply,
                _permit: permit,
            },
        );
    }

    fn answer(&mut self, id: &MsgId, result: Result<MsgId, SendError>) {
        if let Some(seq) = self.by_id.remove(id) {
            if let Some(p) = self.pending.remove(&seq) {
                let _ = p.reply.send(result);
            }
        }
    }

    /// Serves one connection until it ends.
    async fn serve(&mut self, mut t: Transport) -> End {
        // Everything not yet answered goes again, same ids, same order.
        let resend: Vec<Bytes> = self.pending.values().map(|p| p.frame.clone()).collect();
        for frame in resend {
            if let Err(e) = t.send(frame).await {
                return End::Lost(e.to_string());
            }
        }
        let ping_every = self.cfg.ping_interval;
        let mut deadline = Instant::now() + ping_every;
        let mut ping_sent = false;
        loop {
            tokio::select! {
                r = t.recv() => {
                    let pkt = match r {
                        None => return End::Lost("closed by the server".into()),
                        Some(Err(e)) => return End::Lost(e.to_string()),
                        Some(Ok(p)) => p,
                    };
                    deadline = Instant::now() + ping_every;
                    ping_sent = false;
                    if let Some(end) = self.on_packet(&mut t, &pkt).await {
                        return end;
                    }
                }
                c = self.cmds.recv() => {
                    if let Some(end) = self.on_commands(&mut t, c).await {
                        return end;
                    }
                }
                _ = sleep_until(deadline), if self.cfg.extensions => {
                    if ping_sent {
                        return End::Lost("no answer to PING".into());
                    }
                    ping_sent = true;
                    deadline = Instant::now() + ping_every;
                    if let Err(e) = t.send(Bytes::from_static(&[im_protocol::cmd::PING])).await {
                        return End::Lost(e.to_string());
                    }
                }
            }
        }
    }

    /// Writes what `first` and the commands already queued behind it ask for (up to
    /// [`BATCH`]) as one flush: many sends and acks per system call under load, one when
    /// idle. `Some` ends the connection.
    async fn on_commands(&mut self, t: &mut Transport, first: Option<Command>) -> Option<End> {
        let mut next = first;
        for n in 1.. {
            let fed = match next {
                Some(Command::Publish {
                    id,
                    frame,
                    reply,
                    permit,
                }) => {
                    self.add_pending(id, frame.clone(), reply, permit);
                    t.feed(frame).await
                }
                Some(Command::Ack { id, ack_cmd }) => {
                    self.recent.acked(&id, ack_cmd);
                    t.feed(ack_frame(ack_cmd, &id)).await
                }
                Some(Command::Close { done }) => {
                    let _ = t
                        .feed(Bytes::from_static(&[im_protocol::cmd::DISCONNECT]))
                        .await;
                    t.close().await;
                    return Some(End::Closed(done));
                }
                None => {
                    t.close().await;
                    return Some(End::Closed(None));
                }
            };
            if let Err(e) = fed {
                return Some(End::Lost(e.to_string()));
            }
            if n == BATCH {
                break;
            }
            match self.cmds.try_recv() {
                Ok(c) => next = Some(c),
                Err(_) => break,
            }
        }
        t.flush().await.err().map(|e| End::Lost(e.to_string()))
    }

    /// Handles one packet; `Some` ends the connection.
    async fn on_packet(&mut self, t: &mut Transport, pkt: &Bytes) -> Option<End> {
        let decoded = match ServerPacket::decode(pkt) {
            Ok(p) => p,
            Err(e) => return Some(End::Lost(format!("invalid packet from the server: {e}"))),
        };
        let (id, kind, payload) = match decoded {
            ServerPacket::Push { msg_id, payload } => (*msg_id, Kind::Direct, payload),
            ServerPacket::GroupPush {
                group,
                msg_id,
                payload,
            } => (*msg_id, Kind::Group { gid: group }, payload),
            ServerPacket::GroupPartPush {
                group,
                msg_id,
                targets,
                payload,
            } => (
                *msg_id,
                Kind::Part {
                    gid: group,
                    targets: targets.iter().collect(),
                },
                payload,
            ),
            ServerPacket::PubAck { msg_id }
            | ServerPacket::GroupPubAck { msg_id }
            | ServerPacket::GroupPartPubAck { msg_id } => {
                let id = *msg_id;
                self.answer(&id, Ok(id));
                return None;
            }
            ServerPacket::PubErr { msg_id, code } => {
                self.answer(&msg_id.clone(), Err(SendError::Refused(code)));
                return None;
            }
            ServerPacket::Ping => {
                let resp = Bytes::from_static(&[im_protocol::cmd::PING_RESP]);
                return t.send(resp).await.err().map(|e| End::Lost(e.to_string()));
            }
            ServerPacket::PingResp => return None,
            ServerPacket::Disconnect => {
                return Some(End::Lost("the server sent DISCONNECT".into()))
            }
            ServerPacket::InvalidPacket => {
                return Some(End::Lost("the server answered INVALID_PACKET".into()))
            }
            ServerPacket::Logout => return Some(End::LoggedOut),
            ServerPacket::ConnectAck { .. } => {
                return Some(End::Lost("unexpected CONNECT_ACK".into()))
            }
        };
        match self.recent.get(&id) {
            // Redelivered after the application acknowledged it: acknowledge again.
            Some(Handed::Acked(ack_cmd)) => {
                let ack = ack_frame(ack_cmd, &id);
                return t.send(ack).await.err().map(|e| End::Lost(e.to_string()));
            }
            // The application has it and will acknowledge it.
            Some(Handed::Unacked) => return None,
            None => {}
        }
        self.recent.insert(id, Handed::Unacked);
        let payload = pkt.slice_ref(payload);
        self.emit(Event::Message(Message {
            id,
            kind,
            payload,
            acker: Some(self.acker.clone()),
        }));
        None
    }
}

fn ack_frame(ack_cmd: u8, id: &MsgId) -> Bytes {
    let mut v = Vec::with_capacity(33);
    v.push(ack_cmd);
    v.extend_from_slice(id);
    Bytes::from(v)
}
