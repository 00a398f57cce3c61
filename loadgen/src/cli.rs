//! Command line: the target and how to reach it (global options), then one scenario.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for the IM server and MQTT brokers"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// What is being loaded.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// This server, speaking the seed binary IM protocol.
    Im,
    /// An MQTT 3.1.1 broker, QoS 1: a topic per user, a topic per group.
    Mqtt,
    /// The echo baseline (`echo-server`): each connection gets its own frames back.
    Echo,
}

/// How the bytes travel (MQTT and echo always use plain TCP).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Ws,
    Wss,
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    #[arg(long, value_enum, default_value = "im", global = true)]
    pub target: Target,
    #[arg(long, value_enum, default_value = "tcp", global = true)]
    pub transport: Transport,
    #[arg(long, default_value = "127.0.0.1", global = true)]
    pub host: Ipv4Addr,
    /// Default: 19095 (tcp), 9095 (ws), 8443 (wss), 1883 (mqtt), 19999 (echo).
    #[arg(long, global = true)]
    pub port: Option<u16>,
    /// Several nodes of a cluster, `host:port,host:port,...` (instead of `--host`/`--port`):
    /// user `uid` connects to the `uid % N`-th, so a pair's two users use different nodes.
    #[arg(long, value_delimiter = ',', global = true)]
    pub targets: Vec<std::net::SocketAddrV4>,
    /// Cluster: before its login, each user asks `POST {admin_url}/auth/user_token` for its
    /// home node and connects there (the `tcp` address it answers), as a client following
    /// the login flow would; without it users go to `--targets` in turn and are relayed.
    #[arg(long, global = true)]
    pub connect_home: bool,
    /// WebSocket path; default /ws, or /wss with `--transport wss`.
    #[arg(long, global = true)]
    pub ws_path: Option<String>,
    /// Source addresses 127.0.0.1 .. 127.0.0.N, used in turn, so more connections than one
    /// address's ephemeral ports can be opened (loopback targets only).
    #[arg(long, default_value_t = 8, global = true)]
    pub source_addrs: u8,
    /// Threads, each its own monoio runtime (default: one per CPU).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// The server's token secret (`auth.secret`): tokens are minted locally.
    #[arg(long, default_value = "change-me-im-secret", global = true)]
    pub secret: String,
    /// The control API, for creating groups.
    #[arg(long, default_value = "http://127.0.0.1:10000", global = true)]
    pub admin_url: String,
    #[arg(long, default_value = "change-me-admin-secret", global = true)]
    pub admin_secret: String,
    /// For wss: accept the server's certificate without checking it (self-signed test setups).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// For wss: a PEM CA file to check the server's certificate against.
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// The TLS server name for wss.
    #[arg(long, default_value = "localhost", global = true)]
    pub server_name: String,
    /// How long messages are sent (or connections made / held).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub duration: Duration,
    /// After sending stops, how long to wait for what is still in flight.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub drain_timeout: Duration,
    /// Payload bytes per message (at least the 32-byte stamp for MQTT).
    #[arg(long, default_value_t = 64, global = true)]
    pub size: usize,
    /// First uid (and first group id) used; runs with different bases do not interfere.
    #[arg(long, global = true)]
    pub uid_base: Option<u32>,
    /// Keep retrying a failed login for this long (a target that is restarting).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration, global = true)]
    pub login_retry: Duration,
    /// Print one JSON document on stdout instead of the table.
    #[arg(long, global = true)]
    pub json: bool,
    /// No live progress line on stderr.
    #[arg(long, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// Pairs of users sending to each other.
    P2p(P2p),
    /// G groups of M members; one member of each group sends, the others receive.
    Group(Group),
    /// A connect + authenticate storm: connections per second.
    Connect(Connect),
    /// N idle connections held for `--duration`; memory per connection with `--server-pid`.
    Idle(Idle),
    /// Messages to offline users, then the users connect: the drain rate.
    Offline(Offline),
}

#[derive(Args, Debug, Clone)]
pub struct P2p {
    #[arg(long, default_value_t = 100)]
    pub pairs: u32,
    /// Messages per second per sender; 0 sends flat out (bounded by `--window`).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Messages a sender may have in flight: unacknowledged, and (end to end) not yet
    /// received by the peer.
    #[arg(long, default_value_t = 32)]
    pub window: u32,
}

#[derive(Args, Debug, Clone)]
pub struct Group {
    #[arg(long, default_value_t = 10)]
    pub groups: u32,
    /// Members per group, the sender included.
    #[arg(long, default_value_t = 50)]
    pub members: u32,
    /// Messages per second per group; 0 sends flat out (bounded by `--window`).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Messages a sender may have in flight: unacknowledged, and (end to end) not yet
    /// received by every member.
    #[arg(long, default_value_t = 8)]
    pub window: u32,
}

#[derive(Args, Debug, Clone)]
pub struct Connect {
    /// Connections being opened at once, per thread.
    #[arg(long, default_value_t = 32)]
    pub concurrency: u32,
}

#[derive(Args, Debug, Clone)]
pub struct Idle {
    #[arg(long, default_value_t = 1000)]
    pub conns: u32,
    /// The server's pid: its resident memory is read from /proc before and after.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

#[derive(Args, Debug, Clone)]
pub struct Offline {
    #[arg(long, default_value_t = 100)]
    pub receivers: u32,
    /// Messages per receiver.
    #[arg(long, default_value_t = 100)]
    pub messages: u32,
    #[arg(long, default_value_t = 10)]
    pub senders: u32,
    #[arg(long, default_value_t = 64)]
    pub window: u32,
    /// The server's pid: its CPU time over the drain is read from /proc, for the drain rate
    /// per server core.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

impl Common {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match (self.target, self.transport) {
            (Target::Mqtt, _) => 1883,
            (Target::Echo, _) => 19999,
            (Target::Im, Transport::Tcp) => 19095,
            (Target::Im, Transport::Ws) => 9095,
            (Target::Im, Transport::Wss) => 8443,
        })
    }

    pub fn ws_path(&self) -> String {
        self.ws_path
            .clone()
            .unwrap_or_else(|| match self.transport {
                Transport::Wss => "/wss".into(),
                _ => "/ws".into(),
            })
    }

    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }
}
