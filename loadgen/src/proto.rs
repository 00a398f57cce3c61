//! The message layer for each target: logging in, encoding a publish, and turning what
//! arrives into [`Event`]s (acking deliveries and answering heartbeats on the way). The
//! scenarios above it do not know which protocol they speak.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use im_protocol::{ClientPacket, ServerPacket};
use im_token::TokenAuth;
use mqttbytes::v4 as mq;
use mqttbytes::QoS;

use crate::conn::{Framer, Reader, Writer, MAX_FRAME};
use crate::mqtt_wire;
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
/// The length of the tokens `Proto::Im` logs in with (an HS256 JWT with `sub`, `iat` and
/// `exp`), so that the echo baseline's CONNECT is the same size.
const ECHO_TOKEN_LEN: usize = 148;

/// Writes the IM protocol's CONNECT for `uid` with `password`.
async fn connect(wr: &mut Writer, fr: &mut Framer, uid: u32, password: &[u8]) -> io::Result<()> {
    let uid_s = uid.to_string();
    let connect = ClientPacket::Connect {
        username: uid_s.as_bytes(),
        password,
        role: Some(1),
        flags: Some(1),
    };
    let mut out = Vec::new();
    fr.packet(&mut out, &connect);
    wr.write(out).await.map(drop)
}

/// The first whole packet the target sends (`what` names it in the error).
async fn first_packet(rd: &mut Reader, what: &str) -> Result<Vec<u8>, LoginError> {
    loop {
        if let Some(p) = rd
            .next_packet()
            .map_err(|e| LoginError::Protocol(e.to_string()))?
        {
            return Ok(p);
        }
        if rd.fill().await? == 0 {
            return Err(LoginError::Protocol(format!("closed before {what}")));
        }
    }
}

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
            // The baseline a login is held to (accept + one frame + close): a CONNECT of the
            // same size as ours, written and read back whole, with no server work at all.
            Proto::Echo => {
                connect(wr, fr, uid, &[b'x'; ECHO_TOKEN_LEN]).await?;
                first_packet(rd, "the echo").await.map(drop)
            }
            Proto::Im { auth } => {
                let token = auth
                    .mint(uid, Duration::from_secs(24 * 3600))
                    .map_err(|e| LoginError::Protocol(e.to_string()))?;
                connect(wr, fr, uid, token.as_bytes()).await?;
                // Only the CONNECT_ACK is the login's: the offline drain may follow it in
                // the same read, and stays in the buffer for the connection's reader.
                let p = first_packet(rd, "CONNECT_ACK").await?;
                match ServerPacket::decode(&p) {
                    Ok(ServerPacket::ConnectAck { code: 0 }) => Ok(()),
                    Ok(ServerPacket::ConnectAck { code }) => Err(LoginError::Refused(code)),
                    other => Err(LoginError::Protocol(format!(
                        "expected CONNECT_ACK, got {other:?}"
                    ))),
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
                // Written in place: no topic string, payload copy or buffer per message.
                let topic = match dest {
                    Dest::User(u) => mqtt_wire::Topic::new(b"im/u/", u),
                    Dest::Group(g) => mqtt_wire::Topic::new(b"im/g/", g),
                };
                mqtt_wire::publish_qos1(out, topic.as_bytes(), st.next_pkid, &id, payload);
                st.inflight.insert(st.next_pkid, s);
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
            Proto::Mqtt => {
                // Parsed in place (`mqtt_wire`): nothing allocated per message.
                let mut at = 0;
                let result = loop {
                    let (packet, len) = match mqtt_wire::next(&rd.buf[at..], MAX_FRAME) {
                        Ok(Some(x)) => x,
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e.to_string()),
                    };
                    at += len;
                    match packet {
                        mqtt_wire::Packet::Publish { qos, pkid, payload } => {
                            ev(Event::Delivered(Stamp::decode(payload)));
                            if qos > 0 {
                                mqtt_wire::puback(out, pkid);
                            }
                        }
                        mqtt_wire::Packet::PubAck(pkid) => {
                            ev(Event::Acked(st.inflight.remove(&pkid)))
                        }
                        mqtt_wire::Packet::PingReq => mqtt_wire::pingresp(out),
                        mqtt_wire::Packet::Disconnect => ev(Event::Closed),
                        mqtt_wire::Packet::Other => {}
                    }
                };
                rd.buf.advance(at);
                result
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The echo baseline's CONNECT stays the size of a real one (a uid of loadgen's range).
    #[test]
    fn echo_connect_is_as_long_as_a_real_token() {
        let auth = TokenAuth::new("a-secret-of-some-length");
        let token = auth
            .mint(1_000_123, Duration::from_secs(24 * 3600))
            .expect("mint");
        assert!(
            token.len().abs_diff(ECHO_TOKEN_LEN) <= 4,
            "token is {} bytes, the echo baseline sends {ECHO_TOKEN_LEN}",
            token.len()
        );
    }
}
