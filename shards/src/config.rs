//! Configuration of the core: network, runtime, sessions, delivery and auth. Every field has
//! its default here and in `config/imserver.toml` (a test keeps the two equal); limits are
//! checked by [`CoreConfig::validate`] at load.

use serde::{Deserialize, Serialize};

/// Everything the shards need.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoreConfig {
    pub net: NetConfig,
    pub runtime: RuntimeConfig,
    pub session: SessionConfig,
    pub delivery: DeliveryConfig,
    pub auth: AuthConfig,
    pub groups: GroupsConfig,
    pub tls: TlsConfig,
}

/// TLS listeners: `wss://HOST:wss_port{wss_path}` and TCP+TLS on `tcp_port`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub enabled: bool,
    /// PEM certificate chain.
    pub cert_path: std::path::PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: std::path::PathBuf,
    pub wss_port: u16,
    pub wss_path: String,
    pub tcp_port: u16,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            cert_path: Default::default(),
            key_path: Default::default(),
            wss_port: 8443,
            wss_path: "/wss".into(),
            tcp_port: 19443,
        }
    }
}

/// Listeners and framing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetConfig {
    /// Address every listener binds.
    pub bind: String,
    /// Length-prefixed TCP port.
    pub tcp_port: u16,
    /// WebSocket port.
    pub ws_port: u16,
    /// WebSocket path; other paths get 404.
    pub ws_path: String,
    /// Largest packet accepted (TCP length prefix or WebSocket message), in bytes.
    pub max_frame: usize,
    /// Listen backlog per shard.
    pub backlog: i32,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            bind: "0.0.0.0".into(),
            tcp_port: 19095,
            ws_port: 9095,
            ws_path: "/ws".into(),
            max_frame: 512 * 1024,
            backlog: 1024,
        }
    }
}

/// Which I/O driver the shard runtimes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// io_uring where the kernel allows it, epoll otherwise.
    Auto,
    /// io_uring or fail at start.
    IoUring,
    /// epoll.
    Epoll,
}

/// Shard threads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Number of shards; 0 = one per available core.
    pub shards: usize,
    pub driver: Driver,
    /// Pin each shard thread to a core.
    pub pin_cores: bool,
    /// io_uring submission queue entries per shard.
    pub uring_entries: u32,
    /// Let the kernel back the heap with transparent huge pages (2 MiB). Off by default:
    /// a huge page stays resident whole while any of its bytes is in use, which roughly
    /// doubled the memory of idle connections; the binary turns it off for the process at
    /// start (`prctl(PR_SET_THP_DISABLE)`).
    pub huge_pages: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            shards: 0,
            driver: Driver::Auto,
            pin_cores: true,
            uring_entries: 1024,
            huge_pages: false,
        }
    }
}

/// What happens when a user logs in while already connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateLogin {
    /// The old session gets LOGOUT and is closed.
    KickOld,
    /// The new session gets CONNECT_ACK 1 and is closed.
    Reject,
    /// All sessions receive, up to `max_devices` (the oldest is logged out beyond it).
    Multi,
}

/// Per-session limits and timers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// The first packet (CONNECT) must arrive within this time.
    pub connect_timeout_ms: u64,
    /// PING an idle session after this long without a packet from it.
    pub heartbeat_interval_ms: u64,
    /// Close a session that does not answer a PING within this time.
    pub heartbeat_timeout_ms: u64,
    pub duplicate_login: DuplicateLogin,
    /// Sessions per user in `multi` mode.
    pub max_devices: usize,
    /// Frames waiting to be written to one session; beyond it the client is too slow and
    /// is closed (its unacknowledged messages are kept offline).
    pub send_queue: usize,
    /// Pushes awaiting the client's ack; beyond it the session is closed the same way.
    pub max_inflight: usize,
    /// A write (at most 64 KiB) not finished after this long closes the session; checked on
    /// the shard timer tick, so up to one tick (at most 500 ms) later.
    pub write_timeout_ms: u64,
    /// After a server-side close, how long the socket keeps draining input so the final
    /// packet (LOGOUT, INVALID_PACKET, ...) reaches the client before the socket closes.
    pub close_linger_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 10_000,
            heartbeat_interval_ms: 30_000,
            heartbeat_timeout_ms: 10_000,
            duplicate_login: DuplicateLogin::KickOld,
            max_devices: 5,
            send_queue: 1024,
            max_inflight: 1024,
            write_timeout_ms: 10_000,
            close_linger_ms: 1_000,
        }
    }
}

/// Pushed payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Envelope {
    /// `{"from","to","role","content"}` as the seed SDK expects.
    Json,
    /// The payload unchanged.
    Raw,
}

/// When accepted messages are written to the offline store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Persist {
    /// Only when the recipient is offline or does not ack (the seed's behaviour). A crash
    /// loses messages accepted but not yet delivered or stored.
    OnFailure,
    /// Write-ahead: durable before the sender's PUB_ACK, removed when every recipient
    /// session acked.
    BeforeAck,
}

/// Delivery guarantees and formats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    pub envelope: Envelope,
    pub persist: Persist,
    /// Resend an unacknowledged push after this long.
    pub redelivery_interval_ms: u64,
    /// Resends before the session is closed and the message kept offline.
    pub redelivery_max: u8,
    /// A sender's PUBLISH with a MsgId seen within this window is acked, not delivered again.
    pub dedupe_window_ms: u64,
    /// At most this many recent MsgIds are remembered per sender (memory bounded by count,
    /// not only by time; a client retransmits only publishes it has no ack for); 1 to 32,768.
    pub dedupe_per_sender: usize,
    /// Offline retention.
    pub retention_days: u64,
    /// Offline messages fetched per page when draining to a new session.
    pub offline_page: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            envelope: Envelope::Json,
            persist: Persist::OnFailure,
            redelivery_interval_ms: 2_000,
            redelivery_max: 3,
            dedupe_window_ms: 60_000,
            dedupe_per_sender: 1_024,
            retention_days: 7,
            offline_page: 256,
        }
    }
}

/// How CONNECT is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Username = decimal uid, Password = HS256 JWT signed with `secret`.
    Token,
    /// The seed's HTTP callback: form POST to `http_url`, JSON `pass` + `uid` or `denied`.
    Http,
}

/// Authentication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// HS256 secret for tokens. Change it in production.
    pub secret: String,
    /// Lifetime of tokens minted by `imserver token`, in seconds.
    pub token_ttl_secs: u64,
    /// `mode = "http"`: the callback URL (http://; TLS callbacks are not supported).
    pub http_url: String,
    /// `mode = "http"`: a call not answered within this time answers CONNECT_ACK 4.
    pub http_timeout_ms: u64,
    /// `mode = "http"`: calls in flight at once; beyond this CONNECT_ACK 4.
    pub http_max_inflight: usize,
    /// Failed logins from one source address within `failure_window_ms` after which its
    /// CONNECTs get CONNECT_ACK 5 until the window ends; 0 turns the limit off.
    pub max_failures: u32,
    pub failure_window_ms: u64,
    /// Source addresses the limiter tracks at once (it fails open beyond this).
    pub limiter_max_addrs: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Token,
            secret: "change-me-im-secret".into(),
            token_ttl_secs: 7 * 24 * 3600,
            http_url: String::new(),
            http_timeout_ms: 3000,
            http_max_inflight: 256,
            max_failures: 10,
            failure_window_ms: 60_000,
            limiter_max_addrs: 100_000,
        }
    }
}

/// Where group membership lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBackend {
    /// A redb file in the data directory (`groups.redb`).
    Embedded,
    /// Redis SETs `im_group:<gid>` (the `[redis]` section).
    Redis,
}

/// Groups: membership source, caching, fan-out limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupsConfig {
    pub backend: GroupBackend,
    /// Longest a shard uses a cached membership without asking the store again. Changes
    /// made through this server, and (with Redis keyspace notifications) directly in Redis,
    /// apply at once regardless.
    pub cache_ttl_ms: u64,
    /// Memberships each shard caches at most.
    pub cache_max_groups: usize,
    /// Most uids a GROUP_PART_PUBLISH may list (more: refused with 1001).
    pub max_part_targets: usize,
    /// Members served per step of a fan-out before the shard serves its other sessions.
    pub fanout_chunk: usize,
    /// Deliveries a shard may have queued for fan-out before it stops taking mail (back-
    /// pressure on the senders).
    pub fanout_backlog: usize,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        Self {
            backend: GroupBackend::Embedded,
            cache_ttl_ms: 30_000,
            cache_max_groups: 100_000,
            max_part_targets: 1000,
            fanout_chunk: 256,
            fanout_backlog: 1_000_000,
        }
    }
}

impl CoreConfig {
    /// Checks limits; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let checks: [(bool, &str); 13] = [
            (
                self.net.max_frame >= 64,
                "net.max_frame must be at least 64",
            ),
            (
                self.net.max_frame <= 16 * 1024 * 1024,
                "net.max_frame must be at most 16 MiB",
            ),
            (
                self.net.ws_path.starts_with('/'),
                "net.ws_path must start with '/'",
            ),
            (
                self.session.heartbeat_interval_ms > 0 && self.session.heartbeat_timeout_ms > 0,
                "session heartbeat times must be positive",
            ),
            (
                self.session.max_devices >= 1,
                "session.max_devices must be >= 1",
            ),
            (
                self.session.send_queue >= 8 && self.session.max_inflight >= 8,
                "session.send_queue and session.max_inflight must be >= 8",
            ),
            (
                self.delivery.redelivery_interval_ms > 0,
                "delivery.redelivery_interval_ms must be positive",
            ),
            (
                self.delivery.offline_page >= 1,
                "delivery.offline_page must be >= 1",
            ),
            (
                (1..=crate::engine::recent::MAX_IDS).contains(&self.delivery.dedupe_per_sender),
                "delivery.dedupe_per_sender must be between 1 and 32768",
            ),
            (
                !self.auth.secret.is_empty(),
                "auth.secret must not be empty",
            ),
            (
                self.groups.fanout_chunk >= 1 && self.groups.fanout_backlog >= 1,
                "groups.fanout_chunk and groups.fanout_backlog must be >= 1",
            ),
            (
                self.auth.mode != AuthMode::Http
                    || (self.auth.http_url.starts_with("http://") && self.auth.http_max_inflight >= 1),
                "auth.mode = \"http\" needs auth.http_url (http://...) and auth.http_max_inflight >= 1",
            ),
            (
                self.groups.cache_max_groups >= 1,
                "groups.cache_max_groups must be >= 1",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err((*msg).to_string()),
            None => Ok(()),
        }
    }

    /// Number of shards after resolving 0 to the core count.
    pub fn shard_count(&self) -> usize {
        match self.runtime.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration that passes validation (the defaults, with a secret).
    fn valid() -> CoreConfig {
        let mut c = CoreConfig::default();
        c.auth.secret = "s".into();
        c
    }

    #[test]
    fn dedupe_per_sender_is_bounded_by_what_the_index_can_tell_apart() {
        assert_eq!(valid().validate(), Ok(()));
        for (n, ok) in [(0, false), (1, true), (32_768, true), (32_769, false)] {
            let mut c = valid();
            c.delivery.dedupe_per_sender = n;
            assert_eq!(c.validate().is_ok(), ok, "dedupe_per_sender = {n}");
        }
    }
}
