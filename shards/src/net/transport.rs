//! Transport framing state of one connection: turns received bytes into packets and packets
//! into bytes to send, for length-prefixed TCP and for WebSocket. Plain data (`Send`), so it
//! moves with the connection when it is handed to its owner shard.

use im_protocol::ws::{self, Opcode};
use im_protocol::{framing, FrameError};

/// Which transport a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Tcp,
    Ws,
    /// Length-prefixed TCP inside TLS.
    TcpTls,
    /// WebSocket inside TLS.
    Wss,
}

impl TransportKind {
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Ws => "ws",
            TransportKind::TcpTls => "tcp_tls",
            TransportKind::Wss => "wss",
        }
    }

    /// WebSocket framing (ws or wss).
    pub fn is_ws(self) -> bool {
        matches!(self, TransportKind::Ws | TransportKind::Wss)
    }

    pub fn is_tls(self) -> bool {
        matches!(self, TransportKind::TcpTls | TransportKind::Wss)
    }
}

/// One thing found in the input.
#[derive(Debug)]
pub(crate) enum Event {
    /// A packet at `buf[start..end]` (already unmasked).
    Packet { start: usize, end: usize },
    /// A packet reassembled from WebSocket fragments.
    Assembled(Vec<u8>),
    /// A WebSocket control frame to answer with these bytes (a pong).
    Reply(Vec<u8>),
    /// Nothing to act on (a fragment was buffered, a pong arrived).
    Skip,
    /// The peer started the WebSocket close handshake; answer with these bytes and close.
    Close(Vec<u8>),
}

/// Why input is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InputError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("websocket text frames are not part of the protocol")]
    TextFrame,
    #[error("unexpected websocket continuation frame")]
    BadContinuation,
}

/// Decoder/encoder state.
#[derive(Debug)]
pub(crate) struct Framing {
    pub kind: TransportKind,
    /// WebSocket: fragments of a binary message being reassembled.
    partial: Option<Vec<u8>>,
}

impl Framing {
    pub fn new(kind: TransportKind) -> Self {
        Self {
            kind,
            partial: None,
        }
    }

    /// No WebSocket message is half reassembled.
    pub fn is_idle(&self) -> bool {
        self.partial.is_none()
    }

    /// Finds the next event in `buf`; returns it with the number of bytes it used.
    /// `Ok(None)`: more input is needed. WebSocket payloads are unmasked in place.
    pub fn next(
        &mut self,
        buf: &mut [u8],
        max: usize,
    ) -> Result<Option<(usize, Event)>, InputError> {
        match self.kind {
            TransportKind::Tcp | TransportKind::TcpTls => {
                Ok(framing::check(buf, max)?.map(|len| {
                    (
                        framing::PREFIX + len,
                        Event::Packet {
                            start: framing::PREFIX,
                            end: framing::PREFIX + len,
                        },
                    )
                }))
            }
            TransportKind::Ws | TransportKind::Wss => self.next_ws(buf, max),
        }
    }

    fn next_ws(
        &mut self,
        buf: &mut [u8],
        max: usize,
    ) -> Result<Option<(usize, Event)>, InputError> {
        let Some(h) = ws::parse_header(buf, max)? else {
            return Ok(None);
        };
        if buf.len() < h.frame_len() {
            return Ok(None);
        }
        let Some(mask) = h.mask else {
            return Err(FrameError::WebSocket("client frame not masked").into());
        };
        let (start, end) = (h.header_len, h.frame_len());
        ws::apply_mask(&mut buf[start..end], mask);
        let payload = &buf[start..end];
        let ev = match h.opcode {
            Opcode::Text => return Err(InputError::TextFrame),
            Opcode::Binary if self.partial.is_some() => return Err(InputError::BadContinuation),
            Opcode::Binary if h.fin => Event::Packet { start, end },
            Opcode::Binary => {
                self.partial = Some(payload.to_vec());
                return Ok(Some((end, Event::Skip)));
            }
            Opcode::Continuation => {
                let Some(acc) = self.partial.as_mut() else {
                    return Err(InputError::BadContinuation);
                };
                if acc.len() + payload.len() > max {
                    return Err(FrameError::TooLarge {
                        len: (acc.len() + payload.len()) as u64,
                        max,
                    }
                    .into());
                }
                acc.extend_from_slice(payload);
                if !h.fin {
                    return Ok(Some((end, Event::Skip)));
                }
                Event::Assembled(self.partial.take().unwrap_or_default())
            }
            Opcode::Ping => {
                let mut pong = Vec::with_capacity(2 + payload.len());
                ws::put_frame(&mut pong, Opcode::Pong, payload, None);
                Event::Reply(pong)
            }
            Opcode::Pong => Event::Skip,
            Opcode::Close => {
                let mut reply = Vec::with_capacity(4);
                // Echo the status code (first two bytes) as RFC 6455 asks.
                let code = payload.get(..2).unwrap_or(&[]);
                ws::put_frame(&mut reply, Opcode::Close, code, None);
                Event::Close(reply)
            }
        };
        Ok(Some((end, ev)))
    }

    /// Bytes of framing put before a packet of `len` bytes.
    pub fn overhead(&self, len: usize) -> usize {
        match self.kind {
            TransportKind::Tcp | TransportKind::TcpTls => framing::PREFIX,
            TransportKind::Ws | TransportKind::Wss => ws::header_len(len, false),
        }
    }

    /// Appends one framed packet to `out`.
    pub fn put_packet(&self, out: &mut Vec<u8>, packet: &[u8]) {
        out.reserve(self.overhead(packet.len()) + packet.len());
        match self.kind {
            TransportKind::Tcp | TransportKind::TcpTls => framing::put_prefix(out, packet.len()),
            TransportKind::Ws | TransportKind::Wss => {
                ws::put_header(out, Opcode::Binary, packet.len(), None)
            }
        }
        out.extend_from_slice(packet);
    }

    /// The bytes that start a server-side close: a WebSocket close frame, nothing for TCP.
    pub fn close_frame(&self, code: u16) -> Vec<u8> {
        match self.kind {
            TransportKind::Tcp | TransportKind::TcpTls => Vec::new(),
            TransportKind::Ws | TransportKind::Wss => {
                let mut v = Vec::with_capacity(4);
                ws::put_frame(&mut v, Opcode::Close, &code.to_be_bytes(), None);
                v
            }
        }
    }
}
