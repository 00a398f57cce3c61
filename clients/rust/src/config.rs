//! Where to connect and how the session behaves.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::error::Error;

/// The transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Length-prefixed TCP (`tcp://HOST:19095`).
    Tcp,
    /// Length-prefixed TCP inside TLS (`tls://HOST:19443`).
    Tls,
    /// WebSocket (`ws://HOST:9095/ws`).
    Ws,
    /// WebSocket inside TLS (`wss://HOST:8443/wss`).
    Wss,
}

impl Scheme {
    /// Whether the connection runs inside TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Tls | Scheme::Wss)
    }
}

/// A server address with its transport, written like a URL:
/// `tcp://127.0.0.1:19095`, `tls://im.example.com:19443`, `ws://127.0.0.1:9095/ws`,
/// `wss://im.example.com:8443/wss`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The transport.
    pub scheme: Scheme,
    /// Host name or IP address; also the TLS server name.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The WebSocket path (`/ws` by default); unused by TCP.
    pub path: String,
}

impl Endpoint {
    /// The URL this endpoint was written as.
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tls",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.scheme {
            Scheme::Tcp | Scheme::Tls => format!("{scheme}://{host}:{}", self.port),
            Scheme::Ws | Scheme::Wss => format!("{scheme}://{host}:{}{}", self.port, self.path),
        }
    }
}

impl FromStr for Endpoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Endpoint(s.to_string());
        let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "tcp" => Scheme::Tcp,
            "tls" => Scheme::Tls,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            _ => return Err(bad()),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, port) = v6.split_once("]:").ok_or_else(bad)?;
            (host, port)
        } else {
            authority.rsplit_once(':').ok_or_else(bad)?
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        // A name, an IPv4 address or an IPv6 address (with a zone): nothing that could
        // make the URL mean something else.
        let host_ok = host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'));
        if host.is_empty() || !host_ok || port == 0 {
            return Err(bad());
        }
        let path = match (scheme, path) {
            (Scheme::Ws | Scheme::Wss, "") => "/ws".to_string(),
            (Scheme::Ws | Scheme::Wss, p) => p.to_string(),
            (_, "" | "/") => String::new(),
            _ => return Err(bad()),
        };
        Ok(Endpoint {
            scheme,
            host: host.to_string(),
            port,
            path,
        })
    }
}

/// When incoming messages are acknowledged to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// When the application takes the message from [`Events::recv`](crate::Events::recv).
    #[default]
    Auto,
    /// When the application calls [`Message::ack`](crate::Message::ack) (e.g. after storing
    /// it). Unacknowledged messages are redelivered by the server and kept offline.
    Manual,
}

/// Everything a [`Client`](crate::Client) needs. [`ClientConfig::new`] fills in the
/// defaults; the fields are public to change.
#[derive(Clone)]
pub struct ClientConfig {
    /// The server and transport.
    pub endpoint: Endpoint,
    /// The user id (sent as the decimal username).
    pub uid: u32,
    /// The token (the CONNECT password), e.g. from the server's `POST /auth/user_token`.
    pub token: String,
    /// The CONNECT role byte, repeated in the envelope of this user's messages.
    pub role: u8,
    /// Ask for the protocol extensions (PUB_ERR for refused publishes, client PING). On by
    /// default; without them a refused publish is never answered, so `send` waits until the
    /// client stops — wrap it in a timeout.
    pub extensions: bool,
    /// When incoming messages are acknowledged.
    pub ack_mode: AckMode,
    /// TLS settings for `tls://` and `wss://`; `None` trusts the Mozilla root certificates
    /// (webpki-roots).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// TCP connect, TLS and WebSocket handshakes and the CONNECT_ACK must all finish within
    /// this.
    pub connect_timeout: Duration,
    /// Delays between reconnect attempts.
    pub backoff: Backoff,
    /// With extensions: send PING after this long without hearing from the server, and
    /// reconnect when nothing arrives for twice as long.
    pub ping_interval: Duration,
    /// How many message ids handed to the application are remembered to drop redelivered
    /// copies.
    pub dedupe_window: usize,
    /// Publishes waiting for their acknowledgement at most; `send` waits for room beyond.
    pub max_pending: usize,
    /// The largest packet accepted from the server (the server's own default is 512 KiB).
    pub max_frame: usize,
}

impl ClientConfig {
    /// A configuration with the defaults: extensions on, automatic acks, back-off from
    /// 250 ms to 30 s, 10 s connect timeout, 25 s ping interval.
    pub fn new(endpoint: Endpoint, uid: u32, token: impl Into<String>) -> Self {
        Self {
            endpoint,
            uid,
            token: token.into(),
            role: 0,
            extensions: true,
            ack_mode: AckMode::Auto,
            tls: None,
            connect_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            ping_interval: Duration::from_secs(25),
            dedupe_window: 4096,
            max_pending: 4096,
            max_frame: 512 * 1024,
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint.url())
            .field("uid", &self.uid)
            .field("token", &"<hidden>")
            .field("role", &self.role)
            .field("extensions", &self.extensions)
            .field("ack_mode", &self.ack_mode)
            .field("connect_timeout", &self.connect_timeout)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        let e: Endpoint = "tcp://127.0.0.1:19095".parse().unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Tcp, "127.0.0.1", 19095)
        );
        let e: Endpoint = "wss://im.example.com:8443/wss".parse().unwrap();
        assert_eq!((e.scheme, e.path.as_str()), (Scheme::Wss, "/wss"));
        let e: Endpoint = "ws://localhost:9095".parse().unwrap();
        assert_eq!(e.path, "/ws");
        let e: Endpoint = "tls://[::1]:19443".parse().unwrap();
        assert_eq!((e.scheme, e.host.as_str()), (Scheme::Tls, "::1"));
        assert_eq!(e.url(), "tls://[::1]:19443");
    }

    #[test]
    fn urls_parse_back_to_the_same_endpoint() {
        for s in [
            "TCP://Host:1",
            "tls://::1:2",
            "ws://h:3",
            "wss://[fe80::1%25eth0]:4/x y",
            "tcp://h:+5/",
        ] {
            let e: Endpoint = s.parse().unwrap();
            assert_eq!(e.url().parse::<Endpoint>().unwrap(), e, "{s}");
        }
    }

    #[test]
    fn refuses_malformed_endpoints() {
        for bad in [
            "127.0.0.1:19095",
            "http://x:1",
            "tcp://x",
            "tcp://:1",
            "tcp://x:0",
            "tcp://x:99999",
            "tcp://x:1/path",
            "ws://[::1:1/ws",
            "tcp://a]:b:1",
            "tcp://user@host:1",
            "tcp://ho st:1",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }
}
