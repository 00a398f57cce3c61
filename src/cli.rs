//! Command line: `imserver [run]` serves; `imserver token --uid N` mints a client token;
//! `imserver print-config` shows the effective configuration; `imserver group ...` manages
//! group membership.

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
    #[command(flatten)]
    pub overrides: Overrides,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Common overrides of the configuration file.
#[derive(Debug, clap::Args)]
pub struct Overrides {
    /// Number of shards (0 = one per core).
    #[arg(long, global = true)]
    pub shards: Option<usize>,
    /// I/O driver.
    #[arg(long, value_enum, global = true)]
    pub driver: Option<DriverArg>,
    /// Listen address.
    #[arg(long, global = true)]
    pub bind: Option<String>,
    #[arg(long, global = true)]
    pub tcp_port: Option<u16>,
    #[arg(long, global = true)]
    pub ws_port: Option<u16>,
    /// Directory of the embedded store.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// When accepted messages are stored.
    #[arg(long, value_enum, global = true)]
    pub persist: Option<PersistArg>,
    /// Log filter (e.g. `debug`).
    #[arg(long, global = true)]
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
    Run,
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
