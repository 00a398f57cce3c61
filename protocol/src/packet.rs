//! Packets of the protocol in both directions (`docs/protocol.md`, "Packets").
//!
//! Command 3 (and 5, 11) has a different layout in each direction, so there are two enums:
//! [`ClientPacket`] (client → server, what the server decodes) and [`ServerPacket`]
//! (server → client, what clients and the load generator decode). Both borrow from the
//! input buffer: decoding copies nothing.

use bytes::BufMut;

use crate::error::DecodeError;

/// A message id: 32 opaque bytes (clients send a UUID as 32 lowercase hex characters).
pub type MsgId = [u8; 32];

/// Command bytes.
pub mod cmd {
    pub const CONNECT: u8 = 1;
    pub const CONNECT_ACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUB_ACK: u8 = 4;
    pub const GROUP_PUBLISH: u8 = 5;
    pub const GROUP_PUB_ACK: u8 = 6;
    pub const PING: u8 = 7;
    pub const PING_RESP: u8 = 8;
    pub const DISCONNECT: u8 = 9;
    pub const INVALID_PACKET: u8 = 10;
    pub const GROUP_PART_PUBLISH: u8 = 11;
    pub const GROUP_PART_PUB_ACK: u8 = 12;
    pub const PUB_ERR: u8 = 13;
    pub const LOGOUT: u8 = 20;

    /// Whether the protocol defines this command byte (in either direction).
    pub fn is_command(c: u8) -> bool {
        matches!(c, CONNECT..=PUB_ERR | LOGOUT)
    }

    /// The client ack that answers a server push with this command byte.
    pub fn ack_for_push(push: u8) -> Option<u8> {
        match push {
            PUBLISH => Some(PUB_ACK),
            GROUP_PUBLISH => Some(GROUP_PUB_ACK),
            GROUP_PART_PUBLISH => Some(GROUP_PART_PUB_ACK),
            _ => None,
        }
    }
}

/// CONNECT_ACK codes.
pub mod connack {
    pub const ACCEPTED: u8 = 0;
    pub const DUPLICATE: u8 = 1;
    pub const BAD_CREDENTIALS: u8 = 3;
    pub const UNAVAILABLE: u8 = 4;
    pub const TOO_MANY_ATTEMPTS: u8 = 5;
}

/// PUB_ERR codes (the OpenIM error-code family, so one table serves the socket and the HTTP
/// API; `docs/protocol.md`, "PUB_ERR codes").
pub mod pub_err {
    /// The offline store failed in `before_ack` mode, or the group store is unavailable.
    pub const SERVER_INTERNAL: u32 = 500;
    /// Payload too large once enveloped; a part publish with no or too many targets.
    pub const ARGS: u32 = 1001;
    /// Publish to uid 0.
    pub const USER_NOT_FOUND: u32 = 1101;
    /// The group has no members.
    pub const GROUP_NOT_FOUND: u32 = 1201;
    /// The sender or a listed target is not a member.
    pub const NOT_IN_GROUP: u32 = 1203;
}

/// CONNECT flag bit 0: the client understands the extension frames (PUB_ERR, client PING).
pub const FLAG_EXTENSIONS: u8 = 0x01;

/// CONNECT flag bit 7: sent by a cluster node that relays a client to the client's home
/// node. The receiving node serves the session itself, even if it sees another home (nodes
/// briefly disagree while the live set changes), so a login is relayed at most once.
pub const FLAG_RELAYED: u8 = 0x80;

/// The target list of a GROUP_PART_PUBLISH: `count` big-endian u32 uids, kept as raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets<'a>(&'a [u8]);

impl<'a> Targets<'a> {
    /// Wraps raw bytes; `raw.len()` must be a multiple of 4.
    pub fn from_raw(raw: &'a [u8]) -> Option<Self> {
        (raw.len().is_multiple_of(4) && raw.len() / 4 <= u16::MAX as usize).then_some(Self(raw))
    }
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn raw(&self) -> &'a [u8] {
        self.0
    }
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        self.0
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
}

/// A packet sent by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientPacket<'a> {
    Connect {
        username: &'a [u8],
        password: &'a [u8],
        /// Optional on the wire; absent decodes as `None` (the server treats it as 0).
        role: Option<u8>,
        /// Extension; absent decodes as `None`.
        flags: Option<u8>,
    },
    Publish {
        to: u32,
        msg_id: &'a MsgId,
        payload: &'a [u8],
    },
    /// Ack of a 1:1 push.
    PubAck {
        msg_id: &'a MsgId,
    },
    GroupPublish {
        group: u32,
        msg_id: &'a MsgId,
        payload: &'a [u8],
    },
    GroupPubAck {
        msg_id: &'a MsgId,
    },
    GroupPartPublish {
        group: u32,
        msg_id: &'a MsgId,
        targets: Targets<'a>,
        payload: &'a [u8],
    },
    GroupPartPubAck {
        msg_id: &'a MsgId,
    },
    /// Extension: a client-initiated heartbeat.
    Ping,
    PingResp,
    Disconnect,
}

/// A packet sent by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerPacket<'a> {
    ConnectAck {
        code: u8,
    },
    /// A 1:1 message pushed to its recipient.
    Push {
        msg_id: &'a MsgId,
        payload: &'a [u8],
    },
    /// "Your PUBLISH is accepted."
    PubAck {
        msg_id: &'a MsgId,
    },
    GroupPush {
        group: u32,
        msg_id: &'a MsgId,
        payload: &'a [u8],
    },
    GroupPubAck {
        msg_id: &'a MsgId,
    },
    GroupPartPush {
        group: u32,
        msg_id: &'a MsgId,
        targets: Targets<'a>,
        payload: &'a [u8],
    },
    GroupPartPubAck {
        msg_id: &'a MsgId,
    },
    Ping,
    /// Extension: answer to a client PING.
    PingResp,
    Disconnect,
    InvalidPacket,
    Logout,
    /// Extension: the publish with this id was refused with an error code of seed 004.
    PubErr {
        msg_id: &'a MsgId,
        code: u32,
    },
}

/// A bounds-checked reader over one packet.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.saturating_add(n);
        if end > self.buf.len() {
            return Err(DecodeError::Incomplete {
                needed: end - self.buf.len(),
            });
        }
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn msg_id(&mut self) -> Result<&'a MsgId, DecodeError> {
        let b = self.take(32)?;
        // A 32-byte slice always converts.
        b.try_into()
            .map_err(|_| DecodeError::Incomplete { needed: 32 })
    }
    fn bytes16(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn targets(&mut self) -> Result<Targets<'a>, DecodeError> {
        let n = self.u16()? as usize;
        Ok(Targets(self.take(n * 4)?))
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn finish<T>(self, cmd: u8, value: T) -> Result<T, DecodeError> {
        match self.remaining() {
            0 => Ok(value),
            extra => Err(DecodeError::TrailingBytes { cmd, extra }),
        }
    }
}

fn split_cmd(buf: &[u8]) -> Result<(u8, Reader<'_>), DecodeError> {
    let (&c, _) = buf.split_first().ok_or(DecodeError::Empty)?;
    Ok((c, Reader { buf, pos: 1 }))
}

impl<'a> ClientPacket<'a> {
    /// Decodes one complete packet (the whole buffer is the packet).
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let (c, mut r) = split_cmd(buf)?;
        let p = match c {
            cmd::CONNECT => {
                let username = r.bytes16()?;
                let password = r.bytes16()?;
                let role = (r.remaining() > 0).then(|| r.u8()).transpose()?;
                let flags = (r.remaining() > 0).then(|| r.u8()).transpose()?;
                ClientPacket::Connect {
                    username,
                    password,
                    role,
                    flags,
                }
            }
            cmd::PUBLISH => ClientPacket::Publish {
                to: r.u32()?,
                msg_id: r.msg_id()?,
                payload: r.bytes16()?,
            },
            cmd::PUB_ACK => ClientPacket::PubAck {
                msg_id: r.msg_id()?,
            },
            cmd::GROUP_PUBLISH => ClientPacket::GroupPublish {
                group: r.u32()?,
                msg_id: r.msg_id()?,
                payload: r.bytes16()?,
            },
            cmd::GROUP_PUB_ACK => ClientPacket::GroupPubAck {
                msg_id: r.msg_id()?,
            },
            cmd::GROUP_PART_PUBLISH => ClientPacket::GroupPartPublish {
                group: r.u32()?,
                msg_id: r.msg_id()?,
                targets: r.targets()?,
                payload: r.bytes16()?,
            },
            cmd::GROUP_PART_PUB_ACK => ClientPacket::GroupPartPubAck {
                msg_id: r.msg_id()?,
            },
            cmd::PING => ClientPacket::Ping,
            cmd::PING_RESP => ClientPacket::PingResp,
            cmd::DISCONNECT => ClientPacket::Disconnect,
            other => return Err(DecodeError::UnknownCommand(other)),
        };
        r.finish(c, p)
    }

    /// The exact number of bytes [`encode`](Self::encode) writes.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            ClientPacket::Connect {
                username,
                password,
                role,
                flags,
            } => {
                4 + username.len()
                    + password.len()
                    + usize::from(role.is_some() || flags.is_some())
                    + usize::from(flags.is_some())
            }
            ClientPacket::Publish { payload, .. } | ClientPacket::GroupPublish { payload, .. } => {
                4 + 32 + 2 + payload.len()
            }
            ClientPacket::GroupPartPublish {
                targets, payload, ..
            } => 4 + 32 + 2 + targets.raw().len() + 2 + payload.len(),
            ClientPacket::PubAck { .. }
            | ClientPacket::GroupPubAck { .. }
            | ClientPacket::GroupPartPubAck { .. } => 32,
            ClientPacket::Ping | ClientPacket::PingResp | ClientPacket::Disconnect => 0,
        }
    }

    /// Encodes into `out`. Lengths that do not fit their 16-bit fields are the caller's bug
    /// and are truncated to the field; use [`encoded_len`](Self::encoded_len) to check.
    pub fn encode(&self, out: &mut impl BufMut) {
        match self {
            ClientPacket::Connect {
                username,
                password,
                role,
                flags,
            } => {
                out.put_u8(cmd::CONNECT);
                put_bytes16(out, username);
                put_bytes16(out, password);
                if role.is_some() || flags.is_some() {
                    out.put_u8(role.unwrap_or(0));
                }
                if let Some(f) = flags {
                    out.put_u8(*f);
                }
            }
            ClientPacket::Publish {
                to,
                msg_id,
                payload,
            } => {
                out.put_u8(cmd::PUBLISH);
                out.put_u32(*to);
                out.put_slice(&msg_id[..]);
                put_bytes16(out, payload);
            }
            ClientPacket::PubAck { msg_id } => put_id(out, cmd::PUB_ACK, msg_id),
            ClientPacket::GroupPublish {
                group,
                msg_id,
                payload,
            } => {
                out.put_u8(cmd::GROUP_PUBLISH);
                out.put_u32(*group);
                out.put_slice(&msg_id[..]);
                put_bytes16(out, payload);
            }
            ClientPacket::GroupPubAck { msg_id } => put_id(out, cmd::GROUP_PUB_ACK, msg_id),
            ClientPacket::GroupPartPublish {
                group,
                msg_id,
                targets,
                payload,
            } => {
                out.put_u8(cmd::GROUP_PART_PUBLISH);
                out.put_u32(*group);
                out.put_slice(&msg_id[..]);
                out.put_u16(targets.len() as u16);
                out.put_slice(targets.raw());
                put_bytes16(out, payload);
            }
            ClientPacket::GroupPartPubAck { msg_id } => {
                put_id(out, cmd::GROUP_PART_PUB_ACK, msg_id)
            }
            ClientPacket::Ping => out.put_u8(cmd::PING),
            ClientPacket::PingResp => out.put_u8(cmd::PING_RESP),
            ClientPacket::Disconnect => out.put_u8(cmd::DISCONNECT),
        }
    }

    /// Encodes into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.encoded_len());
        self.encode(&mut v);
        v
    }
}

impl<'a> ServerPacket<'a> {
    /// Decodes one complete packet (the whole buffer is the packet).
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let (c, mut r) = split_cmd(buf)?;
        let p = match c {
            cmd::CONNECT_ACK => ServerPacket::ConnectAck { code: r.u8()? },
            cmd::PUBLISH => ServerPacket::Push {
                msg_id: r.msg_id()?,
                payload: r.bytes16()?,
            },
            cmd::PUB_ACK => ServerPacket::PubAck {
                msg_id: r.msg_id()?,
            },
            cmd::GROUP_PUBLISH => ServerPacket::GroupPush {
                group: r.u32()?,
                msg_id: r.msg_id()?,
                payload: r.bytes16()?,
            },
            cmd::GROUP_PUB_ACK => ServerPacket::GroupPubAck {
                msg_id: r.msg_id()?,
            },
            cmd::GROUP_PART_PUBLISH => ServerPacket::GroupPartPush {
                group: r.u32()?,
                msg_id: r.msg_id()?,
                targets: r.targets()?,
                payload: r.bytes16()?,
            },
            cmd::GROUP_PART_PUB_ACK => ServerPacket::GroupPartPubAck {
                msg_id: r.msg_id()?,
            },
            cmd::PING => ServerPacket::Ping,
            cmd::PING_RESP => ServerPacket::PingResp,
            cmd::DISCONNECT => ServerPacket::Disconnect,
            cmd::INVALID_PACKET => ServerPacket::InvalidPacket,
            cmd::LOGOUT => ServerPacket::Logout,
            cmd::PUB_ERR => ServerPacket::PubErr {
                msg_id: r.msg_id()?,
                code: r.u32()?,
            },
            other => return Err(DecodeError::UnknownCommand(other)),
        };
        r.finish(c, p)
    }

    /// The exact number of bytes [`encode`](Self::encode) writes.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            ServerPacket::ConnectAck { .. } => 1,
            ServerPacket::Push { payload, .. } => 32 + 2 + payload.len(),
            ServerPacket::GroupPush { payload, .. } => 4 + 32 + 2 + payload.len(),
            ServerPacket::GroupPartPush {
                targets, payload, ..
            } => 4 + 32 + 2 + targets.raw().len() + 2 + payload.len(),
            ServerPacket::PubAck { .. }
            | ServerPacket::GroupPubAck { .. }
            | ServerPacket::GroupPartPubAck { .. } => 32,
            ServerPacket::PubErr { .. } => 36,
            ServerPacket::Ping
            | ServerPacket::PingResp
            | ServerPacket::Disconnect
            | ServerPacket::InvalidPacket
            | ServerPacket::Logout => 0,
        }
    }

    /// Encodes into `out` (see [`ClientPacket::encode`] on over-long fields).
    pub fn encode(&self, out: &mut impl BufMut) {
        match self {
            ServerPacket::ConnectAck { code } => {
                out.put_u8(cmd::CONNECT_ACK);
                out.put_u8(*code);
            }
            ServerPacket::Push { msg_id, payload } => {
                out.put_u8(cmd::PUBLISH);
                out.put_slice(&msg_id[..]);
                put_bytes16(out, payload);
            }
            ServerPacket::PubAck { msg_id } => put_id(out, cmd::PUB_ACK, msg_id),
            ServerPacket::GroupPush {
                group,
                msg_id,
                payload,
            } => {
                out.put_u8(cmd::GROUP_PUBLISH);
                out.put_u32(*group);
                out.put_slice(&msg_id[..]);
                put_bytes16(out, payload);
            }
            ServerPacket::GroupPubAck { msg_id } => put_id(out, cmd::GROUP_PUB_ACK, msg_id),
            ServerPacket::GroupPartPush {
                group,
                msg_id,
                targets,
                payload,
            } => {
                out.put_u8(cmd::GROUP_PART_PUBLISH);
                out.put_u32(*group);
                out.put_slice(&msg_id[..]);
                out.put_u16(targets.len() as u16);
                out.put_slice(targets.raw());
                put_bytes16(out, payload);
            }
            ServerPacket::GroupPartPubAck { msg_id } => {
                put_id(out, cmd::GROUP_PART_PUB_ACK, msg_id)
            }
            ServerPacket::Ping => out.put_u8(cmd::PING),
            ServerPacket::PingResp => out.put_u8(cmd::PING_RESP),
            ServerPacket::Disconnect => out.put_u8(cmd::DISCONNECT),
            ServerPacket::InvalidPacket => out.put_u8(cmd::INVALID_PACKET),
            ServerPacket::Logout => out.put_u8(cmd::LOGOUT),
            ServerPacket::PubErr { msg_id, code } => {
                put_id(out, cmd::PUB_ERR, msg_id);
                out.put_u32(*code);
            }
        }
    }

    /// Encodes into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.encoded_len());
        self.encode(&mut v);
        v
    }
}

/// The message id of an encoded server push (commands 3, 5, 11), without decoding the rest.
pub fn push_msg_id(frame: &[u8]) -> Option<&MsgId> {
    let start = match *frame.first()? {
        cmd::PUBLISH => 1,
        cmd::GROUP_PUBLISH | cmd::GROUP_PART_PUBLISH => 5,
        _ => return None,
    };
    frame.get(start..start + 32)?.try_into().ok()
}

fn put_bytes16(out: &mut impl BufMut, b: &[u8]) {
    out.put_u16(b.len() as u16);
    out.put_slice(b);
}

fn put_id(out: &mut impl BufMut, c: u8, id: &MsgId) {
    out.put_u8(c);
    out.put_slice(&id[..]);
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
