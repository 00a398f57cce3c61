//! Builds the push packet a recipient gets for an accepted PUBLISH (or group publish): the payload wrapped in
//! the seed SDK's JSON envelope (`{"from","to","role","content"}`, the server asserting the
//! sender) or passed through raw. Built once per message; the resulting `Bytes` is shared by
//! every session it is pushed to.

use std::borrow::Cow;

use bytes::Bytes;
use im_protocol::packet::Targets;
use im_protocol::{MsgId, ServerPacket};

use crate::config::Envelope;

/// The wrapped payload does not fit the 16-bit payload length of a push.
#[derive(Debug, thiserror::Error)]
#[error("pushed payload would be {0} bytes, over the 65535 the protocol allows")]
pub struct TooLarge(pub usize);

/// Writes the JSON envelope. `content` is the payload as a string (invalid UTF-8 is replaced:
/// binary payloads need `raw` mode).
pub fn json_payload(from: u32, to: u32, role: u8, content: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let content = String::from_utf8_lossy(content);
    let mut out = Vec::with_capacity(content.len() + 64);
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        r#"{{"from":"{from}","to":"{to}","role":"{role}","content":"#
    );
    let _ = serde_json::to_writer(&mut out, content.as_ref());
    out.push(b'}');
    out
}

/// The pushed payload: wrapped per `mode`, checked against the 16-bit length.
fn body(
    mode: Envelope,
    from: u32,
    to: u32,
    role: u8,
    payload: &[u8],
) -> Result<Cow<'_, [u8]>, TooLarge> {
    let body = match mode {
        Envelope::Raw => Cow::Borrowed(payload),
        Envelope::Json => Cow::Owned(json_payload(from, to, role, payload)),
    };
    if body.len() > u16::MAX as usize {
        return Err(TooLarge(body.len()));
    }
    Ok(body)
}

/// The 1:1 push packet (command 3) for a message.
pub fn push_frame(
    mode: Envelope,
    from: u32,
    to: u32,
    role: u8,
    msg_id: &MsgId,
    payload: &[u8],
) -> Result<Bytes, TooLarge> {
    let body = body(mode, from, to, role, payload)?;
    Ok(Bytes::from(
        ServerPacket::Push {
            msg_id,
            payload: &body,
        }
        .to_vec(),
    ))
}

/// The push packet of a group message: command 5, or 11 (with the target list, as the
/// client sent it) for a part publish. The envelope's `to` is the group id.
pub fn group_frame(
    mode: Envelope,
    from: u32,
    group: u32,
    role: u8,
    msg_id: &MsgId,
    payload: &[u8],
    targets: Option<Targets<'_>>,
) -> Result<Bytes, TooLarge> {
    let body = body(mode, from, group, role, payload)?;
    let packet = match targets {
        None => ServerPacket::GroupPush {
            group,
            msg_id,
            payload: &body,
        },
        Some(targets) => ServerPacket::GroupPartPush {
            group,
            msg_id,
            targets,
            payload: &body,
        },
    };
    Ok(Bytes::from(packet.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_envelope_matches_the_sdk_shape_and_escapes() {
        let p = json_payload(1, 2, 3, b"he said \"hi\"\n");
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["from"], "1");
        assert_eq!(v["to"], "2");
        assert_eq!(v["role"], "3");
        assert_eq!(v["content"], "he said \"hi\"\n");
    }

    #[test]
    fn oversized_envelope_is_refused() {
        let id = [b'a'; 32];
        let big = vec![b'"'; 40_000]; // each quote escapes to two bytes
        assert!(push_frame(Envelope::Json, 1, 2, 0, &id, &big).is_err());
        assert!(push_frame(Envelope::Raw, 1, 2, 0, &id, &big).is_ok());
    }
}
