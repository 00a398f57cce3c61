//! Command line: `imserver [run]` serves; `imserver token --uid N` mints a client token;
//! `imserver print-config` shows the effective configuration; `imserver group ...` manages
//! group membership.
//!
//! The server's overrides (`--shards`, `--tcp-port`, ...) belong to the server: they are
//! accepted before any subcommand or after `run`, and only `--config` is shared by every
//! subcommand, so `imserver token --help` lists what `token` takes and nothing else.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "imserver",
    version,
    about = "Thread-per-core IM server (seed binary protocol)"
)]
pub struct Cli {
    /// Configuration file (default: config/imserver.toml when present, else built-in defaults).
    #[arg(long, short, env = "IMSERVER_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Overrides for the server (also accepted after `run`); `--data-dir` also tells
    /// `group` where the embedded store is.
    #[command(flatten)]
    pub overrides: Overrides,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Common overrides of the configuration file.
#[derive(Debug, Default, clap::Args)]
pub struct Overrides {
    /// Number of shards (0 = one per core).
    #[arg(long)]
    pub shards: Option<usize>,
    /// I/O driver.
    #[arg(long, value_enum)]
    pub driver: Option<DriverArg>,
    /// Listen address.
    #[arg(long)]
    pub bind: Option<String>,
    /// Port of the length-prefixed TCP listener (default 19095).
    #[arg(long)]
    pub tcp_port: Option<u16>,
    /// Port of the WebSocket listener, `ws://HOST:PORT/ws` (default 9095).
    #[arg(long)]
    pub ws_port: Option<u16>,
    /// Directory of the embedded store.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// When accepted messages are stored.
    #[arg(long, value_enum)]
    pub persist: Option<PersistArg>,
    /// Log filter (e.g. `debug`).
    #[arg(long)]
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DriverArg {
    Auto,
    IoUring,
    Epoll,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PersistArg {
    OnFailure,
    BeforeAck,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Run {
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Print a token a client uses as CONNECT password (Username = the uid).
    Token {
        #[arg(long)]
        uid: u32,
        /// Lifetime in seconds (default: auth.token_ttl_secs).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Print the effective configuration as TOML.
    PrintConfig,
    /// Manage group membership in the configured store (groups.backend). The embedded store
    /// can only be changed while the server is stopped; Redis at any time.
    Group {
        #[command(subcommand)]
        op: GroupOp,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupOp {
    /// Create a group with its first members (fails if it exists).
    Create { gid: u32, uids: Vec<u32> },
    /// Add members (creates the group when missing).
    Add { gid: u32, uids: Vec<u32> },
    /// Remove members (removing the last one removes the group).
    Remove { gid: u32, uids: Vec<u32> },
    /// Delete a group.
    Delete { gid: u32 },
    /// List the groups, or one group's members.
    List { gid: Option<u32> },
}
