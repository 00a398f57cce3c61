//! The message layer for each target: logging in, encoding a publish, and turning what
//! arrives into [`Event`]s (acking deliveries and answering heartbeats on the way). The
//! scenarios above it do not know which protocol they speak.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use im_protocol::{ClientPacket, ServerPacket};
use im_token::TokenAuth;
use mqttbytes::v4 as mq;
use mqttbytes::QoS;

use crate::conn::{Framer, Reader, Writer, MAX_FRAME};
use crate::stamp::{self, Stamp};

/// The protocol spoken to the target.
#[derive(Clone)]
pub enum Proto {
    Im { auth: Arc<TokenAuth> },
    Mqtt,
    Echo,
}

/// Where a message goes.
#[derive(Debug, Clone, Copy)]
pub enum Dest {
    User(u32),
    Group(u32),
}

/// Something the target told a connection.
#[derive(Debug)]
pub enum Event {
    /// A message for this connection's user (already acked).
    Delivered(Option<Stamp>),
    /// The target accepted one of this connection's publishes.
    Acked(Option<Stamp>),
    /// The target refused one of this connection's publishes.
    Refused(u32),
    /// The target ended the session.
    Closed,
}

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("connect: {0}")]
    Io(#[from] io::Error),
    #[error("refused with code {0}")]
    Refused(u8),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl LoginError {
    /// A short label for the error table.
    pub fn kind(&self) -> &'static str {
        match self {
            LoginError::Io(_) => "connect_io",
            LoginError::Refused(_) => "login_refused",
            LoginError::Protocol(_) => "login_protocol",
            LoginError::Timeout(_) => "login_timeout",
        }
    }
}

/// Per-connection protocol state: MQTT packet ids of publishes not yet acked.
#[derive(Default)]
pub struct ConnState {
    next_pkid: u16,
    inflight: HashMap<u16, Stamp>,
}

pub fn user_topic(uid: u32) -> String {
    format!("im/u/{uid}")
}

pub fn group_topic(gid: u32) -> String {
    format!("im/g/{gid}")
}

const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

impl Proto {
    /// Logs `uid` in (MQTT: connects and subscribes to `topics`), waiting for the answer.
    pub async fn login(
        &self,
        rd: &mut Reader,
        wr: &mut Writer,
        fr: &mut Framer,
        uid: u32,
        topics: &[String],
    ) -> Result<(), LoginError> {
        let fut = self.login_inner(rd, wr, fr, uid, topics);
        match monoio::time::timeout(LOGIN_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(LoginError::Timeout(LOGIN_TIMEOUT)),
        }
    }

    async fn login_inner(
        &self,
        rd: &mut Reader,
        wr: &mut Writer,
        fr: &mut Framer,
        uid: u32,
        topics: &[String],
    ) -> Result<(), LoginError> {
        match self {
            Proto::Echo => Ok(()),
            Proto::Im { auth } => {
                let token = auth
                    .mint(uid, Duration::from_secs(24 * 3600))
                    .map_err(|e| LoginError::Protocol(e.to_string()))?;
                let uid_s = uid.to_string();
                let connect = ClientPacket::Connect {
                    username: uid_s.as_bytes(),
                    password: token.as_bytes(),
                    role: Some(1),
                    flags: Some(1),
                };
                let mut out = Vec::new();
                fr.packet(&mut out, &connect);
                wr.write(out).await?;
                // Only the CONNECT_ACK is the login's: the offline drain may follow it in
                // the same read, and stays in the buffer for the connection's reader.
                loop {
                    let first = rd
                        .next_packet()
                        .map_err(|e| LoginError::Protocol(e.to_string()))?;
                    if let Some(p) = first {
                        return match ServerPacket::decode(&p) {
                            Ok(ServerPacket::ConnectAck { code: 0 }) => Ok(()),
                            Ok(ServerPacket::ConnectAck { code }) => Err(LoginError::Refused(code)),
                            other => Err(LoginError::Protocol(format!(
                                "expected CONNECT_ACK, got {other:?}"
                            ))),
                        };
                    }
                    if rd.fill().await? == 0 {
                        return Err(LoginError::Protocol("closed before CONNECT_ACK".into()));
                    }
                }
            }
            Proto::Mqtt => {
                let mut c = mq::Connect::new(format!("lg-{uid}"));
                c.keep_alive = 120;
                c.clean_session = true;
                let mut b = BytesMut::new();
                c.write(&mut b).map_err(mqtt_err)?;
                if !topics.is_empty() {
                    let filters = topics
                        .iter()
                        .map(|t| mq::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
                    let mut s = mq::Subscribe::new_many(filters);
                    s.pkid = 1;
                    s.write(&mut b).map_err(mqtt_err)?;
                }
                wr.write(b.to_vec()).await?;
                let mut connacked = false;
                loop {
                    loop {
                        match mq::read(&mut rd.buf, MAX_FRAME) {
                            Ok(mq::Packet::ConnAck(a)) => {
                                if a.code != mq::ConnectReturnCode::Success {
                                    return Err(LoginError::Refused(a.code as u8));
                                }
                                connacked = true;
                                if topics.is_empty() {
                                    return Ok(());
                                }
                            }
                            Ok(mq::Packet::SubAck(_)) if connacked => return Ok(()),
                            Ok(p) => return Err(LoginError::Protocol(format!("unexpected {p:?}"))),
                            Err(mqttbytes::Error::InsufficientBytes(_)) => break,
                            Err(e) => return Err(mqtt_err(e)),
                        }
                    }
                    if rd.fill().await? == 0 {
                        return Err(LoginError::Protocol("closed during login".into()));
                    }
                }
            }
        }
    }

    /// Appends one publish to `out`.
    pub fn publish(
        &self,
        st: &mut ConnState,
        fr: &mut Framer,
        out: &mut Vec<u8>,
        dest: Dest,
        s: Stamp,
        payload: &[u8],
    ) {
        let id = s.encode();
        match self {
            Proto::Im { .. } | Proto::Echo => {
                let p = match dest {
                    Dest::User(to) => ClientPacket::Publish {
                        to,
                        msg_id: &id,
                        payload,
                    },
                    Dest::Group(group) => ClientPacket::GroupPublish {
                        group,
                        msg_id: &id,
                        payload,
                    },
                };
                fr.packet(out, &p);
            }
            Proto::Mqtt => {
                st.next_pkid = st.next_pkid.checked_add(1).unwrap_or(1);
                let topic = match dest {
                    Dest::User(u) => user_topic(u),
                    Dest::Group(g) => group_topic(g),
                };
                let mut body = Vec::with_capacity(stamp::LEN + payload.len());
                body.extend_from_slice(&id);
                body.extend_from_slice(payload);
                let mut p = mq::Publish::new(topic, QoS::AtLeastOnce, body);
                p.pkid = st.next_pkid;
                st.inflight.insert(p.pkid, s);
                let mut b = BytesMut::new();
                // Encoding a publish we built cannot fail (topic and size are in range).
                let _ = p.write(&mut b);
                out.extend_from_slice(&b);
            }
        }
    }

    /// Takes every complete message out of `rd`, reporting each as an [`Event`] and appending
    /// the acks and heartbeat answers it calls for to `out`.
    pub fn on_read(
        &self,
        st: &mut ConnState,
        rd: &mut Reader,
        fr: &mut Framer,
        out: &mut Vec<u8>,
        mut ev: impl FnMut(Event),
    ) -> Result<(), String> {
        match self {
            Proto::Im { .. } => {
                let open = rd
                    .drain(|p| match ServerPacket::decode(p) {
                        Ok(ServerPacket::Push { msg_id, .. }) => {
                            ev(Event::Delivered(Stamp::decode(msg_id)));
                            fr.packet(out, &ClientPacket::PubAck { msg_id });
                        }
                        Ok(ServerPacket::GroupPush { msg_id, .. }) => {
                            ev(Event::Delivered(Stamp::decode(msg_id)));
                            fr.packet(out, &ClientPacket::GroupPubAck { msg_id });
                        }
                        Ok(ServerPacket::GroupPartPush { msg_id, .. }) => {
                            ev(Event::Delivered(Stamp::decode(msg_id)));
                            fr.packet(out, &ClientPacket::GroupPartPubAck { msg_id });
                        }
                        Ok(ServerPacket::PubAck { msg_id })
                        | Ok(ServerPacket::GroupPubAck { msg_id })
                        | Ok(ServerPacket::GroupPartPubAck { msg_id }) => {
                            ev(Event::Acked(Stamp::decode(msg_id)))
                        }
                        Ok(ServerPacket::PubErr { code, .. }) => ev(Event::Refused(code)),
                        Ok(ServerPacket::Ping) => fr.packet(out, &ClientPacket::PingResp),
                        Ok(ServerPacket::Disconnect) | Ok(ServerPacket::Logout) => {
                            ev(Event::Closed)
                        }
                        _ => {}
                    })
                    .map_err(|e| e.to_string())?;
                if !open {
                    ev(Event::Closed);
                }
                Ok(())
            }
            Proto::Echo => {
                rd.drain(|p| {
                    if let Ok(ClientPacket::Publish { msg_id, .. }) = ClientPacket::decode(p) {
                        let s = Stamp::decode(msg_id);
                        ev(Event::Acked(s));
                        ev(Event::Delivered(s));
                    }
                })
                .map_err(|e| e.to_string())?;
                Ok(())
            }
            Proto::Mqtt => loop {
                match mq::read(&mut rd.buf, MAX_FRAME) {
                    Ok(mq::Packet::Publish(p)) => {
                        ev(Event::Delivered(Stamp::decode(&p.payload)));
                        if p.qos != QoS::AtMostOnce {
                            let mut b = BytesMut::new();
                            let _ = mq::PubAck::new(p.pkid).write(&mut b);
                            out.extend_from_slice(&b);
                        }
                    }
                    Ok(mq::Packet::PubAck(a)) => ev(Event::Acked(st.inflight.remove(&a.pkid))),
                    Ok(mq::Packet::PingReq) => {
                        let mut b = BytesMut::new();
                        let _ = mq::PingResp.write(&mut b);
                        out.extend_from_slice(&b);
                    }
                    Ok(mq::Packet::Disconnect) => ev(Event::Closed),
                    Ok(_) => {}
                    Err(mqttbytes::Error::InsufficientBytes(_)) => return Ok(()),
                    Err(e) => return Err(format!("{e:?}")),
                }
            },
        }
    }
}

fn mqtt_err(e: mqttbytes::Error) -> LoginError {
    LoginError::Protocol(format!("MQTT: {e:?}"))
}

/// Bytes a stamp takes in the payload, so `--size` is the payload size for every target.
pub fn padding(size: usize, proto: &Proto) -> Vec<u8> {
    let n = match proto {
        Proto::Mqtt => size.saturating_sub(stamp::LEN),
        _ => size,
    };
    vec![b'x'; n]
}
