//! Builds the push packet a recipient gets for an accepted PUBLISH (or group publish): the payload wrapped in
//! the seed SDK's JSON envelope (`{"from","to","role","content"}`, the server asserting the
//! sender) or passed through raw. Built once per message; the resulting `Bytes` is shared by
//! every session it is pushed to.

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
///
/// Valid UTF-8 with nothing to escape (the usual chat text) is copied as it is; anything else
/// goes through `serde_json`, whose escaping the copy matches byte for byte (it escapes only
/// `"`, `\` and control characters). Built once per message, but flat out the lossy decode
/// and the escaping writer were 4 % of a shard's time (`benches/RESULTS.md`, perf section).
pub fn json_payload(from: u32, to: u32, role: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + json_wrap(from, to, role));
    json_into(&mut out, from, to, role, content);
    out
}

/// What the envelope adds around content with nothing to escape: 42 bytes of keys, quotes
/// and braces, and the three numbers. Exact, so a push frame is allocated at its final size
/// (a frame with room to spare was shrunk by a `realloc`, 1 % of a shard's time flat out).
fn json_wrap(from: u32, to: u32, role: u8) -> usize {
    fn digits(n: u32) -> usize {
        n.checked_ilog10().map_or(1, |d| d as usize + 1)
    }
    42 + digits(from) + digits(to) + digits(u32::from(role))
}

/// [`json_payload`], appended to `out`.
fn json_into(out: &mut Vec<u8>, from: u32, to: u32, role: u8, content: &[u8]) {
    // Numbers through itoa: `write!` and its formatter were as much again.
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(br#"{"from":""#);
    out.extend_from_slice(num.format(from).as_bytes());
    out.extend_from_slice(br#"","to":""#);
    out.extend_from_slice(num.format(to).as_bytes());
    out.extend_from_slice(br#"","role":""#);
    out.extend_from_slice(num.format(role).as_bytes());
    out.extend_from_slice(br#"","content":"#);
    if is_plain_text(content) {
        out.push(b'"');
        out.extend_from_slice(content);
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, String::from_utf8_lossy(content).as_ref());
    }
    out.push(b'}');
}

/// Whether `bytes` go into a JSON string as they are: valid UTF-8 with no quote, backslash
/// or control character. ASCII text (the scan saw no byte above 0x7f) is valid UTF-8
/// without a second pass; anything else is also checked with `from_utf8`.
fn is_plain_text(bytes: &[u8]) -> bool {
    let scan = scan(bytes);
    !scan.escape && (scan.ascii || std::str::from_utf8(bytes).is_ok())
}

/// What one pass over a string's bytes found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scan {
    /// A quote, backslash or control character: a JSON string needs an escape.
    escape: bool,
    /// Every byte is below 0x80.
    ascii: bool,
}

/// Eight bytes at a time (a byte-by-byte scan with three comparisons per byte was half of
/// building a push frame flat out): `v - 0x01…01` borrows into a byte's top bit only below
/// a zero byte, so `(v - 0x01…01) & !v & 0x80…80` is nonzero exactly when some byte of `v`
/// is 0; with `v = x ^ c·0x01…01` that finds a byte equal to `c`, and with
/// `(x - 0x20·0x01…01) & !x` a byte below 0x20. The top bits of `x` itself are the bytes
/// above 0x7f (whose UTF-8 `from_utf8` then checks: 1.3 % of a shard's time flat out
/// on ASCII text, now skipped).
fn scan(bytes: &[u8]) -> Scan {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    let mut high = 0u64;
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let x = u64::from_le_bytes(b);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let found = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        if found & HIGH != 0 {
            return Scan {
                escape: true,
                ascii: false,
            };
        }
        high |= x;
    }
    let rest = words.remainder();
    Scan {
        escape: rest.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\'),
        ascii: high & HIGH == 0 && rest.is_ascii(),
    }
}

/// Encodes `packet`, whose payload is left empty, with the pushed payload (wrapped per `mode`)
/// written straight into the frame: one allocation and one copy of the payload per message.
/// (With the envelope built apart and then copied in, that copy into a fresh buffer was 6 %
/// of a shard's time flat out.) Every push packet ends with its 16-bit payload length and the
/// payload, so the length is patched in last.
fn frame(
    packet: ServerPacket<'_>,
    mode: Envelope,
    from: u32,
    to: u32,
    role: u8,
    payload: &[u8],
) -> Result<Bytes, TooLarge> {
    let wrap = match mode {
        Envelope::Raw => 0,
        Envelope::Json => json_wrap(from, to, role),
    };
    // Exact for raw payloads and for plain text (only escapes need more room).
    let mut out = Vec::with_capacity(packet.encoded_len() + payload.len() + wrap);
    packet.encode(&mut out);
    let head = out.len();
    match mode {
        Envelope::Raw => out.extend_from_slice(payload),
        Envelope::Json => json_into(&mut out, from, to, role, payload),
    }
    let len = out.len() - head;
    let len16 = u16::try_from(len).map_err(|_| TooLarge(len))?;
    out[head - 2..head].copy_from_slice(&len16.to_be_bytes());
    // A vector with spare room becomes a `Bytes` with a separately allocated, atomically
    // counted header; an exact one does not. Only escaped content leaves room here.
    out.shrink_to_fit();
    Ok(Bytes::from(out))
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
    let packet = ServerPacket::Push {
        msg_id,
        payload: &[],
    };
    frame(packet, mode, from, to, role, payload)
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
    let packet = match targets {
        None => ServerPacket::GroupPush {
            group,
            msg_id,
            payload: &[],
        },
        Some(targets) => ServerPacket::GroupPartPush {
            group,
            msg_id,
            targets,
            payload: &[],
        },
    };
    frame(packet, mode, from, group, role, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time check answers like the byte-by-byte one for every byte value at
    /// every place in and around a word, among plain text and among bytes above 0x7f.
    /// The word-at-a-time scan answers like a byte-by-byte one for every byte value at every
    /// place in and around a word, among plain text and among bytes above 0x7f. (Where it
    /// finds an escape it stops, and `ascii` no longer matters.)
    #[test]
    fn scan_finds_every_byte_that_needs_an_escape_and_every_non_ascii_one() {
        let naive = |v: &[u8]| v.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        for filler in [b'a', 0xE4, 0x7F, 0x80, b'!', b']'] {
            for len in [1, 7, 8, 9, 16, 17, 24] {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut v = vec![filler; len];
                        v[at] = b;
                        let got = scan(&v);
                        assert_eq!(got.escape, naive(&v), "{v:?}");
                        if !got.escape {
                            assert_eq!(got.ascii, v.is_ascii(), "{v:?}");
                        }
                    }
                }
                let plain = vec![filler; len];
                assert_eq!(
                    scan(&plain),
                    Scan {
                        escape: false,
                        ascii: filler.is_ascii()
                    }
                );
            }
        }
    }

    /// Plain text is exactly valid UTF-8 without escapes: ASCII, multi-byte text and broken
    /// UTF-8 after ASCII words.
    #[test]
    fn plain_text_is_valid_utf8_without_escapes() {
        for v in [
            &b"hello world, a longer line of text"[..],
            "中文消息 and ascii".as_bytes(),
            b"ascii ascii ascii \xff",
            &[b'a', b'b', b'c', b'd', b'e', b'f', b'g', b'h', 0xC3],
            &[0xC3, 0xA9],
            &[0xFF],
            b"quote \"",
            b"",
        ] {
            let naive = std::str::from_utf8(v)
                .is_ok_and(|t| !t.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'));
            assert_eq!(is_plain_text(v), naive, "{v:?}");
        }
    }

    #[test]
    fn json_envelope_matches_the_sdk_shape_and_escapes() {
        let p = json_payload(1, 2, 3, b"he said \"hi\"\n");
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["from"], "1");
        assert_eq!(v["to"], "2");
        assert_eq!(v["role"], "3");
        assert_eq!(v["content"], "he said \"hi\"\n");
    }

    /// The copy path and the serde_json path give the same bytes for every input: each single
    /// byte, multi-byte and invalid UTF-8, and pseudo-random byte strings biased towards
    /// ASCII, quotes and controls.
    #[test]
    fn json_envelope_is_byte_for_byte_what_serde_json_writes() {
        fn by_serde(content: &[u8]) -> Vec<u8> {
            let mut out = br#"{"from":"7","to":"8","role":"0","content":"#.to_vec();
            serde_json::to_writer(&mut out, String::from_utf8_lossy(content).as_ref()).unwrap();
            out.push(b'}');
            out
        }
        let mut inputs: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b'a', b, b'z']).collect();
        inputs.extend(
            [
                "",
                "plain text",
                "中文消息",
                "emoji 😀",
                "tab\there",
                "a/b",
                "\u{7f}",
            ]
            .iter()
            .map(|s| s.as_bytes().to_vec()),
        );
        inputs.push(vec![0xE4, 0xB8]); // truncated UTF-8
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2_000 {
            let len = (x % 40) as usize;
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let pick = [b'q', b' ', b'"', b'\\', 0x01, 0xC3, 0xA9, 0xFF, b'7', 0x7F];
                v.push(if x.is_multiple_of(3) {
                    pick[(x >> 8) as usize % pick.len()]
                } else {
                    b'a' + (x % 26) as u8
                });
            }
            inputs.push(v);
        }
        for c in inputs {
            assert_eq!(json_payload(7, 8, 0, &c), by_serde(&c), "content {c:?}");
        }
        for (from, to, role) in [
            (0, u32::MAX, 255),
            (10, 99, 9),
            (1_000_000, 4_294_967_295, 100),
        ] {
            let v: serde_json::Value =
                serde_json::from_slice(&json_payload(from, to, role, b"x")).unwrap();
            assert_eq!(
                (v["from"].as_str(), v["to"].as_str(), v["role"].as_str()),
                (
                    Some(&*from.to_string()),
                    Some(&*to.to_string()),
                    Some(&*role.to_string())
                )
            );
        }
    }

    /// The reserved room is the envelope's exact size for plain text, for numbers of every
    /// length, so a push frame is never shrunk (nor grown) after it is written.
    #[test]
    fn the_wrap_reserved_is_exact() {
        let mut nums = vec![0u32, u32::MAX];
        for d in 1..10 {
            let p = 10u32.pow(d);
            nums.extend([p - 1, p, p + 1]);
        }
        for &n in &nums {
            for role in [0u8, 9, 10, 99, 100, u8::MAX] {
                let p = json_payload(n, u32::MAX - n, role, b"text");
                assert_eq!(p.len(), 4 + json_wrap(n, u32::MAX - n, role), "{n} {role}");
                assert_eq!(p.len(), p.capacity());
                let f = push_frame(Envelope::Json, n, 7, role, &[b'i'; 32], b"text").unwrap();
                assert_eq!(f.len(), 1 + 32 + 2 + 4 + json_wrap(n, 7, role));
            }
        }
    }

    #[test]
    fn oversized_envelope_is_refused() {
        let id = [b'a'; 32];
        let big = vec![b'"'; 40_000]; // each quote escapes to two bytes
        assert!(push_frame(Envelope::Json, 1, 2, 0, &id, &big).is_err());
        assert!(push_frame(Envelope::Raw, 1, 2, 0, &id, &big).is_ok());
        let at_limit = vec![b'x'; u16::MAX as usize];
        assert!(push_frame(Envelope::Raw, 1, 2, 0, &id, &at_limit).is_ok());
        let over = vec![b'x'; u16::MAX as usize + 1];
        assert!(push_frame(Envelope::Raw, 1, 2, 0, &id, &over).is_err());
    }

    /// The frames written in one go are the packets encoded with the envelope built apart,
    /// byte for byte, for every push packet and both modes.
    #[test]
    fn frames_are_the_packets_with_their_payload() {
        let id = [b'k'; 32];
        let raw_targets = [0, 0, 0, 7, 0, 0, 1, 0];
        let targets = Targets::from_raw(&raw_targets).unwrap();
        for content in [&b""[..], b"hello", "中文 \"q\"\n".as_bytes(), &[b'z'; 300]] {
            for mode in [Envelope::Json, Envelope::Raw] {
                let body = match mode {
                    Envelope::Json => json_payload(3, 9, 1, content),
                    Envelope::Raw => content.to_vec(),
                };
                let push = ServerPacket::Push {
                    msg_id: &id,
                    payload: &body,
                };
                let got = push_frame(mode, 3, 9, 1, &id, content).unwrap();
                assert_eq!(&got[..], &push.to_vec()[..]);
                let group = ServerPacket::GroupPush {
                    group: 9,
                    msg_id: &id,
                    payload: &body,
                };
                let got = group_frame(mode, 3, 9, 1, &id, content, None).unwrap();
                assert_eq!(&got[..], &group.to_vec()[..]);
                let part = ServerPacket::GroupPartPush {
                    group: 9,
                    msg_id: &id,
                    targets,
                    payload: &body,
                };
                let got = group_frame(mode, 3, 9, 1, &id, content, Some(targets)).unwrap();
                assert_eq!(&got[..], &part.to_vec()[..]);
                assert_eq!(ServerPacket::decode(&got).unwrap(), part);
            }
        }
    }
}
