//! One connection: TCP or TLS underneath, length-prefixed frames or WebSocket binary
//! messages on top, seen by the session as "send a packet" and "receive a packet".
//!
//! Framing comes from `tokio-util`'s length-delimited codec (4 bytes, big-endian, the
//! protocol's prefix) and WebSocket from `tokio-tungstenite`; TLS is `tokio-rustls`.

use std::io;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::config::{Endpoint, Scheme};

/// A byte stream: TCP or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) enum Transport {
    Framed(Framed<Box<dyn Io>, LengthDelimitedCodec>),
    Ws(Box<WebSocketStream<Box<dyn Io>>>),
}

fn default_tls() -> Arc<rustls::ClientConfig> {
    static CFG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CFG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        // The ring provider supports the default versions; fall back to an empty trust
        // store (every handshake fails with a clear error) rather than panic.
        Arc::new(cfg.unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }))
    })
    .clone()
}

impl Transport {
    /// Opens TCP, TLS when the scheme asks for it, and the WebSocket upgrade.
    pub(crate) async fn connect(
        ep: &Endpoint,
        tls: Option<&Arc<rustls::ClientConfig>>,
        max_frame: usize,
    ) -> io::Result<Transport> {
        let tcp = TcpStream::connect((ep.host.as_str(), ep.port)).await?;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Io> = if ep.scheme.is_tls() {
            let cfg = tls.cloned().unwrap_or_else(default_tls);
            let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            Box::new(
                tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await?,
            )
        } else {
            Box::new(tcp)
        };
        match ep.scheme {
            Scheme::Tcp | Scheme::Tls => {
                let codec = LengthDelimitedCodec::builder()
                    .length_field_length(4)
                    .big_endian()
                    .max_frame_length(max_frame)
                    .new_codec();
                Ok(Transport::Framed(Framed::new(io, codec)))
            }
            Scheme::Ws | Scheme::Wss => {
                let scheme = if ep.scheme == Scheme::Wss {
                    "wss"
                } else {
                    "ws"
                };
                let url = format!(
                    "{scheme}://{}:{}{}",
                    host_for_url(&ep.host),
                    ep.port,
                    ep.path
                );
                let cfg = WebSocketConfig::default()
                    .max_message_size(Some(max_frame))
                    .max_frame_size(Some(max_frame));
                let (ws, _resp) = tokio_tungstenite::client_async_with_config(url, io, Some(cfg))
                    .await
                    .map_err(ws_err)?;
                Ok(Transport::Ws(Box::new(ws)))
            }
        }
    }

    /// Sends one packet.
    pub(crate) async fn send(&mut self, packet: Bytes) -> io::Result<()> {
        match self {
            Transport::Framed(f) => f.send(packet).await,
            Transport::Ws(ws) => ws.send(WsMessage::Binary(packet)).await.map_err(ws_err),
        }
    }

    /// Queues one packet without flushing (a batch ends with [`flush`](Self::flush)).
    pub(crate) async fn feed(&mut self, packet: Bytes) -> io::Result<()> {
        match self {
            Transport::Framed(f) => f.feed(packet).await,
            Transport::Ws(ws) => ws.feed(WsMessage::Binary(packet)).await.map_err(ws_err),
        }
    }

    /// Writes everything queued.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Framed(f) => SinkExt::<Bytes>::flush(f).await,
            Transport::Ws(ws) => SinkExt::flush(&mut **ws).await.map_err(ws_err),
        }
    }

    /// The next packet; `None` when the server closed the connection. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Option<io::Result<Bytes>> {
        match self {
            Transport::Framed(f) => f.next().await.map(|r| r.map(|b| b.freeze())),
            Transport::Ws(ws) => loop {
                match ws.next().await? {
                    Ok(WsMessage::Binary(b)) => return Some(Ok(b)),
                    // tungstenite answers pings by itself.
                    Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_)) => {}
                    Ok(WsMessage::Close(_)) => return None,
                    Ok(WsMessage::Text(_)) => {
                        return Some(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the server sent a WebSocket text message",
                        )))
                    }
                    Err(e) => return Some(Err(ws_err(e))),
                }
            },
        }
    }

    /// Closes politely (WebSocket close frame; TCP shutdown).
    pub(crate) async fn close(&mut self) {
        match self {
            Transport::Framed(f) => {
                let _ = SinkExt::<Bytes>::close(f).await;
            }
            Transport::Ws(ws) => {
                let _ = SinkExt::close(&mut **ws).await;
            }
        }
    }
}

fn host_for_url(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn ws_err(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Io(e) => e,
        other => io::Error::other(other),
    }
}
