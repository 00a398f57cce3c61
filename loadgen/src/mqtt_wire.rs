//! The MQTT 3.1.1 packets a loaded connection sends and receives, written and parsed in
//! place. Hand-written because this is loadgen's hot path against MQTT targets: the
//! `mqttbytes` types allocate a topic `String`, a payload buffer and an output `BytesMut`
//! for every message, which charged the MQTT runs work the IM runs did not pay. Logins
//! (CONNECT, SUBSCRIBE) still use `mqttbytes`; the tests below check this module against it.

/// Packet types (the high nibble of the first byte).
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PINGREQ: u8 = 12;
const DISCONNECT: u8 = 14;

/// What arrived, borrowing from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Publish {
        qos: u8,
        pkid: u16,
        payload: &'a [u8],
    },
    PubAck(u16),
    PingReq,
    Disconnect,
    /// Any other packet (CONNACK, SUBACK, ...): nothing to do in a run.
    Other,
}

/// Why the input is not MQTT.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("remaining length longer than 4 bytes")]
    Length,
    #[error("packet of {0} bytes over the limit")]
    TooLarge(usize),
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// `prefix` followed by the decimal `n`: a topic such as `im/u/42`, on the stack.
pub struct Topic {
    buf: [u8; 16],
    len: usize,
}

impl Topic {
    pub fn new(prefix: &[u8; 5], n: u32) -> Topic {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        let mut v = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let mut buf = [0u8; 16];
        buf[..5].copy_from_slice(prefix);
        let d = &digits[i..];
        buf[5..5 + d.len()].copy_from_slice(d);
        Topic {
            buf,
            len: 5 + d.len(),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn put_remaining(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

/// Appends a QoS 1 PUBLISH of `head` then `body` (the payload in two parts, so the stamp
/// need not be copied in front of the padding first).
pub fn publish_qos1(out: &mut Vec<u8>, topic: &[u8], pkid: u16, head: &[u8], body: &[u8]) {
    out.push(PUBLISH << 4 | 0b0010);
    put_remaining(out, 2 + topic.len() + 2 + head.len() + body.len());
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic);
    out.extend_from_slice(&pkid.to_be_bytes());
    out.extend_from_slice(head);
    out.extend_from_slice(body);
}

pub fn puback(out: &mut Vec<u8>, pkid: u16) {
    out.extend_from_slice(&[PUBACK << 4, 2]);
    out.extend_from_slice(&pkid.to_be_bytes());
}

pub fn pingresp(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xd0, 0]);
}

/// The first whole packet in `buf` and its length; `Ok(None)` when more bytes are needed.
pub fn next(buf: &[u8], max: usize) -> Result<Option<(Packet<'_>, usize)>, WireError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut rem = 0usize;
    let mut at = 1;
    loop {
        let Some(&b) = buf.get(at) else {
            return Ok(None);
        };
        rem |= ((b & 0x7f) as usize) << (7 * (at - 1));
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return Err(WireError::Length);
        }
    }
    let total = at + rem;
    if total > max {
        return Err(WireError::TooLarge(total));
    }
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[at..total];
    let packet = match first >> 4 {
        PUBLISH => {
            let qos = (first >> 1) & 3;
            if qos == 3 || body.len() < 2 {
                return Err(WireError::Malformed("PUBLISH"));
            }
            let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
            let mut p = 2 + tlen;
            let mut pkid = 0;
            if qos > 0 {
                let id = body.get(p..p + 2).ok_or(WireError::Malformed("PUBLISH"))?;
                pkid = u16::from_be_bytes([id[0], id[1]]);
                p += 2;
            }
            let payload = body.get(p..).ok_or(WireError::Malformed("PUBLISH"))?;
            Packet::Publish { qos, pkid, payload }
        }
        PUBACK => match body {
            [a, b] => Packet::PubAck(u16::from_be_bytes([*a, *b])),
            _ => return Err(WireError::Malformed("PUBACK")),
        },
        PINGREQ => Packet::PingReq,
        DISCONNECT => Packet::Disconnect,
        _ => Packet::Other,
    };
    Ok(Some((packet, total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use mqttbytes::v4 as mq;
    use mqttbytes::QoS;

    #[test]
    fn a_publish_is_what_mqttbytes_writes_and_reads() {
        for (n, size) in [(0u32, 0usize), (7, 100), (4_000_000_000, 200), (42, 20_000)] {
            let topic = Topic::new(b"im/u/", n);
            assert_eq!(topic.as_bytes(), format!("im/u/{n}").as_bytes());
            let (head, body) = (vec![b's'; 32], vec![b'x'; size]);
            let mut ours = Vec::new();
            publish_qos1(&mut ours, topic.as_bytes(), 513, &head, &body);
            let mut p = mq::Publish::new(
                format!("im/u/{n}"),
                QoS::AtLeastOnce,
                [head.clone(), body.clone()].concat(),
            );
            p.pkid = 513;
            let mut theirs = BytesMut::new();
            p.write(&mut theirs).expect("encodes");
            assert_eq!(ours, theirs.to_vec(), "payload {size}");
            let (got, len) = next(&ours, 1 << 20).expect("parses").expect("whole");
            assert_eq!(len, ours.len());
            assert_eq!(
                got,
                Packet::Publish {
                    qos: 1,
                    pkid: 513,
                    payload: &[head, body].concat()
                }
            );
            // Every prefix asks for more.
            for cut in 0..ours.len() {
                assert_eq!(next(&ours[..cut], 1 << 20), Ok(None), "cut {cut}");
            }
        }
    }

    #[test]
    fn acks_pings_and_refusals() {
        let mut out = Vec::new();
        puback(&mut out, 7);
        let mut theirs = BytesMut::new();
        mq::PubAck::new(7).write(&mut theirs).expect("encodes");
        assert_eq!(out, theirs.to_vec());
        assert_eq!(next(&out, 100), Ok(Some((Packet::PubAck(7), 4))));
        let mut out = Vec::new();
        pingresp(&mut out);
        assert_eq!(out, [0xd0, 0]);
        assert_eq!(next(&[0xc0, 0], 100), Ok(Some((Packet::PingReq, 2))));
        assert_eq!(next(&[0xe0, 0], 100), Ok(Some((Packet::Disconnect, 2))));
        assert_eq!(next(&[0x20, 2, 0, 0], 100), Ok(Some((Packet::Other, 4))));
        assert_eq!(
            next(&[0x30, 0xff, 0xff, 0xff, 0xff], 1 << 30),
            Err(WireError::Length)
        );
        assert_eq!(
            next(&[0x30, 0xff, 0x7f], 100),
            Err(WireError::TooLarge(16386))
        );
        assert_eq!(
            next(&[0x36, 2, 0, 0], 100),
            Err(WireError::Malformed("PUBLISH"))
        );
        assert_eq!(
            next(&[0x32, 2, 0, 0], 100),
            Err(WireError::Malformed("PUBLISH"))
        );
        assert_eq!(
            next(&[0x40, 1, 0], 100),
            Err(WireError::Malformed("PUBACK"))
        );
    }
}
