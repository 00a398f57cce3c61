//! The group store the configuration asks for, the control-plane runtime it may need, and
//! the `imserver group ...` commands.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use im_shards::config::GroupBackend;
use im_storage::groups::wait;
use im_storage::{EmbeddedGroups, GroupStore, RedisGroups};

use crate::cli::GroupOp;
use crate::config::Config;

/// The tokio runtime of the control plane: one worker thread, off the shard cores. The
/// Redis client (`fred` is tokio-only) runs here.
pub fn control_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("im-control")
        .enable_all()
        .build()
        .context("starting the control-plane runtime")
}

/// Where the embedded group store lives.
pub fn embedded_path(cfg: &Config) -> PathBuf {
    cfg.storage.data_dir.join("groups.redb")
}

/// Opens the configured store; also returns a one-line description for the summary.
pub fn open(
    cfg: &Config,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<(Arc<dyn GroupStore>, String)> {
    match cfg.groups.backend {
        GroupBackend::Embedded => {
            let path = embedded_path(cfg);
            let store = EmbeddedGroups::open(&path).with_context(|| {
                format!(
                    "opening group store {} (is a server using this data directory running?)",
                    path.display()
                )
            })?;
            Ok((
                Arc::new(store),
                format!("embedded redb at {}", path.display()),
            ))
        }
        GroupBackend::Redis => {
            let r = &cfg.redis;
            let store = RedisGroups::connect(r, rt.handle().clone())
                .context("setting up the Redis group store")?;
            let events = if store.notifications() {
                "keyspace notifications on"
            } else {
                "no keyspace notifications: direct edits apply after groups.cache_ttl_ms"
            };
            let desc = format!(
                "redis {}:{} db {}{} ({events})",
                r.host,
                r.port,
                r.db,
                if r.tls { " tls" } else { "" }
            );
            Ok((Arc::new(store), desc))
        }
    }
}

fn check_uids(uids: &[u32]) -> anyhow::Result<()> {
    if uids.is_empty() {
        bail!("give at least one uid");
    }
    if uids.contains(&0) {
        bail!("0 is not a uid");
    }
    Ok(())
}

/// Runs one `imserver group` command.
pub fn run_cli(cfg: &Config, op: GroupOp) -> anyhow::Result<()> {
    let rt = control_runtime()?;
    let (store, _) = open(cfg, &rt)?;
    let s = &*store;
    match op {
        GroupOp::Create { gid, uids } => {
            check_uids(&uids)?;
            if !wait(s.members(gid))?.is_empty() {
                bail!("group {gid} exists already");
            }
            let n = wait(s.add(gid, uids))?;
            println!("created group {gid} with {n} members");
        }
        GroupOp::Add { gid, uids } => {
            check_uids(&uids)?;
            let n = wait(s.add(gid, uids))?;
            println!("added {n} members to group {gid}");
        }
        GroupOp::Remove { gid, uids } => {
            check_uids(&uids)?;
            let n = wait(s.remove(gid, uids))?;
            println!("removed {n} members from group {gid}");
        }
        GroupOp::Delete { gid } => {
            if wait(s.delete(gid))? {
                println!("deleted group {gid}");
            } else {
                bail!("no group {gid}");
            }
        }
        GroupOp::List { gid: Some(gid) } => {
            let m = wait(s.members(gid))?;
            if m.is_empty() {
                bail!("no group {gid}");
            }
            for uid in m {
                println!("{uid}");
            }
        }
        GroupOp::List { gid: None } => {
            for gid in wait(s.groups())? {
                println!("{gid}\t{}", wait(s.members(gid))?.len());
            }
        }
    }
    Ok(())
}
