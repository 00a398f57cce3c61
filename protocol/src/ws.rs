//! WebSocket transport (RFC 6455): the HTTP upgrade handshake and frame headers.
//!
//! Hand-written rather than taken from `tungstenite` because it sits on the hot path of every
//! WebSocket packet and must work on buffers the connection owns (io_uring reads into owned
//! buffers; a frame is unmasked in place and its payload decoded without a copy), and because
//! a connection's WebSocket state must be plain data that can move to another shard. The
//! tests interoperate with `tungstenite` as the client.

use base64::Engine as _;
use bytes::BufMut;

use crate::error::FrameError;

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(b: u8) -> Option<Self> {
        Some(match b {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return None,
        })
    }
    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0,
            Opcode::Text => 1,
            Opcode::Binary => 2,
            Opcode::Close => 8,
            Opcode::Ping => 9,
            Opcode::Pong => 10,
        }
    }
    /// Control frames (close, ping, pong) may not be fragmented and carry at most 125 bytes.
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A parsed frame header. The payload is `buf[header_len..header_len + payload_len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: Opcode,
    pub mask: Option<[u8; 4]>,
    pub header_len: usize,
    pub payload_len: usize,
}

impl FrameHeader {
    /// Header plus payload.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Parses the frame header at the start of `buf`. `Ok(None)`: more bytes are needed.
/// `max` bounds the payload length; a longer frame is refused from its header alone.
pub fn parse_header(buf: &[u8], max: usize) -> Result<Option<FrameHeader>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::WebSocket("reserved bits set"));
    }
    let opcode = Opcode::from_bits(b0 & 0x0f).ok_or(FrameError::WebSocket("unknown opcode"))?;
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    let (len, mut pos) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u16::from_be_bytes([b[0], b[1]]) as u64, 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (u64::from_be_bytes(a), 10)
            }
            None => return Ok(None),
        },
        n => (n as u64, 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(FrameError::WebSocket("bad control frame"));
    }
    if len > max as u64 {
        return Err(FrameError::TooLarge { len, max });
    }
    let mask = if masked {
        let Some(m) = buf.get(pos..pos + 4) else {
            return Ok(None);
        };
        pos += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask,
        header_len: pos,
        payload_len: len as usize,
    }))
}

/// Applies (or removes: it is its own inverse) a masking key in place.
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Length of the header [`put_header`] writes.
pub fn header_len(payload_len: usize, masked: bool) -> usize {
    let base = match payload_len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    };
    base + if masked { 4 } else { 0 }
}

/// Writes a final-fragment frame header. Server frames are unmasked (`mask = None`).
pub fn put_header(
    out: &mut impl BufMut,
    opcode: Opcode,
    payload_len: usize,
    mask: Option<[u8; 4]>,
) {
    out.put_u8(0x80 | opcode.bits());
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload_len {
        0..=125 => out.put_u8(m | payload_len as u8),
        126..=0xffff => {
            out.put_u8(m | 126);
            out.put_u16(payload_len as u16);
        }
        _ => {
            out.put_u8(m | 127);
            out.put_u64(payload_len as u64);
        }
    }
    if let Some(k) = mask {
        out.put_slice(&k);
    }
}

/// Writes a complete frame; with a mask (client side) the payload is masked while copied.
pub fn put_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>) {
    put_header(out, opcode, payload.len(), mask);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(k) = mask {
        apply_mask(&mut out[start..], k);
    }
}

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(key);
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.digest().bytes())
}

/// What the server answers to an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// Switch protocols: write `response`, then `buf[consumed..]` is the first frame data.
    Upgrade { response: Vec<u8>, consumed: usize },
    /// Refuse with this HTTP status (404 for another path, 400 for a bad request), then close.
    Reject { status: u16, response: Vec<u8> },
}

/// Bytes of the request head the server buffers at most before refusing.
pub const MAX_HANDSHAKE: usize = 8 * 1024;

/// Parses an HTTP upgrade request at the start of `buf`. `Ok(None)`: more bytes are needed.
pub fn server_handshake(buf: &[u8], path: &str) -> Result<Option<Handshake>, FrameError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HANDSHAKE => return Ok(None),
        Ok(httparse::Status::Partial) => {
            return Err(FrameError::Handshake("request head too long"))
        }
        Err(_) => return Err(FrameError::Handshake("malformed HTTP request")),
    };
    let target = req.path.unwrap_or("");
    let req_path = target.split('?').next().unwrap_or("");
    if req_path != path {
        return Ok(Some(reject(404, "Not Found")));
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &str, token: &str| {
        header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let ok = req.method == Some("GET")
        && has_token("upgrade", "websocket")
        && has_token("connection", "upgrade")
        && header("sec-websocket-version") == Some(b"13");
    let Some(key) = header("sec-websocket-key").filter(|_| ok) else {
        return Ok(Some(reject(400, "Bad Request")));
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    )
    .into_bytes();
    Ok(Some(Handshake::Upgrade { response, consumed }))
}

fn reject(status: u16, reason: &str) -> Handshake {
    Handshake::Reject {
        status,
        response: format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
    }
}

/// A client upgrade request (for the load generator and tests).
pub fn client_request(host: &str, path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_accept_key_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn handshake_upgrade_reject_and_partial() {
        let req = client_request("h", "/ws", "dGhlIHNhbXBsZSBub25jZQ==");
        let mut buf = req.clone().into_bytes();
        buf.extend_from_slice(&[0x82, 0x80]);
        match server_handshake(&buf, "/ws").unwrap().unwrap() {
            Handshake::Upgrade { response, consumed } => {
                assert_eq!(consumed, req.len());
                let text = String::from_utf8(response).unwrap();
                assert!(text.starts_with("HTTP/1.1 101"));
                assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(server_handshake(&buf[..10], "/ws"), Ok(None));
        let other = client_request("h", "/other", "k");
        assert!(matches!(
            server_handshake(other.as_bytes(), "/ws"),
            Ok(Some(Handshake::Reject { status: 404, .. }))
        ));
        let plain = b"GET /ws HTTP/1.1\r\nHost: h\r\n\r\n";
        assert!(matches!(
            server_handshake(plain, "/ws"),
            Ok(Some(Handshake::Reject { status: 400, .. }))
        ));
        assert!(server_handshake(b"\x01\x02garbage\r\n\r\n", "/ws").is_err());
    }

    #[test]
    fn masked_frame_round_trip() {
        let mut v = Vec::new();
        let payload: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
        put_frame(&mut v, Opcode::Binary, &payload, Some([1, 2, 3, 4]));
        let h = parse_header(&v, 1 << 16).unwrap().unwrap();
        assert_eq!(h.header_len, 8);
        assert_eq!(h.payload_len, 300);
        assert!(h.fin);
        assert_eq!(h.opcode, Opcode::Binary);
        let mut body = v[h.header_len..h.frame_len()].to_vec();
        apply_mask(&mut body, h.mask.unwrap());
        assert_eq!(body, payload);
        for cut in 0..h.header_len {
            assert_eq!(parse_header(&v[..cut], 1 << 16), Ok(None));
        }
    }

    #[test]
    fn header_lengths() {
        for (len, want) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut v = Vec::new();
            put_header(&mut v, Opcode::Binary, len, None);
            assert_eq!(v.len(), want);
            assert_eq!(header_len(len, false), want);
            let h = parse_header(&v, usize::MAX).unwrap().unwrap();
            assert_eq!(h.payload_len, len);
        }
    }

    #[test]
    fn protocol_errors() {
        assert!(parse_header(&[0xc2, 0x80], 10).is_err()); // RSV1
        assert!(parse_header(&[0x83, 0x80], 10).is_err()); // opcode 3
        assert!(parse_header(&[0x09, 0x80], 10).is_err()); // fragmented ping
        assert!(parse_header(&[0x89, 0xfe, 0, 200], 1000).is_err()); // long ping
        assert_eq!(
            parse_header(&[0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0], 100),
            Err(FrameError::TooLarge {
                len: 1 << 32,
                max: 100
            })
        );
    }
}
