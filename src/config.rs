//! The server's configuration: the core's sections plus Redis, ScyllaDB, storage and logging.
//!
//! Precedence, lowest first: built-in defaults (identical to `config/imserver.toml`), the
//! config file, environment variables `IMSERVER_<SECTION>__<KEY>` (e.g.
//! `IMSERVER_DELIVERY__PERSIST=before_ack`; values are parsed as TOML, else taken as
//! strings), then command-line flags.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use im_cluster::ClusterConfig;
use im_control::demo::DemoConfig;
use im_control::ControlConfig;
use im_shards::config::{
    AuthConfig, DeliveryConfig, GroupsConfig, NetConfig, RuntimeConfig, SessionConfig, TlsConfig,
};
use im_shards::CoreConfig;
use im_storage::{RedisConfig, ScyllaConfig};
use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub net: NetConfig,
    pub runtime: RuntimeConfig,
    pub session: SessionConfig,
    pub delivery: DeliveryConfig,
    pub auth: AuthConfig,
    pub groups: GroupsConfig,
    pub tls: TlsConfig,
    pub redis: RedisConfig,
    pub scylla: ScyllaConfig,
    pub control: ControlConfig,
    pub demo: DemoConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    pub cluster: ClusterConfig,
}

/// Where offline messages live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflineBackend {
    /// redb file `offline.redb` in `data_dir`.
    Embedded,
    /// Redis lists `im_offline:<uid>` (the `[redis]` section).
    Redis,
    /// ScyllaDB tables in `scylla.keyspace` (the `[scylla]` section).
    Scylla,
}

/// Offline-message storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: OfflineBackend,
    /// Directory of the embedded store (created if missing).
    pub data_dir: PathBuf,
    /// How often expired messages are purged, in seconds.
    pub purge_interval_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: OfflineBackend::Embedded,
            data_dir: PathBuf::from("data"),
            purge_interval_secs: 600,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `im_shards=debug,info`. `RUST_LOG` wins if set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

const ENV_PREFIX: &str = "IMSERVER_";

impl Config {
    /// Loads `path` (or the defaults when `None`), then applies environment overrides.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let mut value: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut value, std::env::vars())?;
        let cfg: Config = toml::Value::Table(value)
            .try_into()
            .context("invalid configuration")?;
        Ok(cfg)
    }

    /// Checks the `[cluster]` section against the rest: a cluster needs a shared offline
    /// store and Redis groups (every node must see the same ones).
    pub fn check_cluster(&self) -> anyhow::Result<()> {
        let c = &self.cluster;
        if !c.enabled {
            return Ok(());
        }
        c.validate().map_err(anyhow::Error::msg)?;
        if self.storage.backend == OfflineBackend::Embedded {
            bail!(
                "cluster.enabled needs an offline store every node shares: set storage.backend = \"redis\" (or \"scylla\"); the embedded store is local to one node"
            );
        }
        if self.groups.backend != im_shards::config::GroupBackend::Redis {
            bail!(
                "cluster.enabled needs group membership every node shares: set groups.backend = \"redis\""
            );
        }
        Ok(())
    }

    /// What this node registers in the cluster.
    pub fn node_info(&self) -> im_cluster::NodeInfo {
        let c = &self.cluster;
        let tls = self.tls.enabled;
        im_cluster::NodeInfo {
            id: c.node_id.clone(),
            host: c.advertise_host.clone(),
            tcp_port: c.advertise_tcp_port.unwrap_or(self.net.tcp_port),
            ws_port: c.advertise_ws_port.unwrap_or(self.net.ws_port),
            ws_path: self.net.ws_path.clone(),
            wss_port: if tls {
                c.advertise_wss_port.unwrap_or(self.tls.wss_port)
            } else {
                0
            },
            wss_path: self.tls.wss_path.clone(),
            tls_tcp_port: if tls {
                c.advertise_tls_tcp_port.unwrap_or(self.tls.tcp_port)
            } else {
                0
            },
            weight: c.weight,
            instance: format!("{:x}-{}", std::process::id(), im_storage::now_ms()),
        }
    }

    /// The part the shards run on.
    pub fn core(&self) -> CoreConfig {
        CoreConfig {
            net: self.net.clone(),
            runtime: self.runtime.clone(),
            session: self.session.clone(),
            delivery: self.delivery.clone(),
            auth: self.auth.clone(),
            groups: self.groups.clone(),
            tls: self.tls.clone(),
        }
    }
}

fn apply_env(
    table: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> anyhow::Result<()> {
    for (k, raw) in vars {
        let Some(rest) = k.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.len() < 2 || path.iter().any(String::is_empty) {
            continue; // e.g. IMSERVER_CONFIG, which is the config path itself
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw));
        let mut node = &mut *table;
        for seg in &path[..path.len() - 1] {
            let entry = node
                .entry(seg.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(t) = entry.as_table_mut() else {
                bail!("{k}: {seg} is not a section");
            };
            node = t;
        }
        node.insert(path[path.len() - 1].clone(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_file_holds_exactly_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/imserver.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let from_file: Config = toml::from_str(&text).unwrap();
        assert_eq!(from_file, Config::default());
    }

    #[test]
    fn compose_stack_config_selects_scylla_and_redis() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/imserver-compose.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let cfg: Config = toml::from_str(&text).unwrap();
        assert_eq!(cfg.storage.backend, OfflineBackend::Scylla);
        assert_eq!(cfg.scylla.contact_points, ["scylla:9042"]);
        assert_eq!(cfg.groups.backend, im_shards::config::GroupBackend::Redis);
        assert_eq!(cfg.redis.host, "redis");
        assert_eq!(cfg.delivery.persist, im_shards::config::Persist::BeforeAck);
    }

    #[test]
    fn env_overrides_parse_values_and_nest() {
        let mut t = toml::Table::new();
        let vars = [
            ("IMSERVER_DELIVERY__PERSIST", "before_ack"),
            ("IMSERVER_NET__TCP_PORT", "1234"),
            ("IMSERVER_CONFIG", "ignored.toml"),
            ("OTHER__X", "1"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()));
        apply_env(&mut t, vars.into_iter()).unwrap();
        let cfg: Config = toml::Value::Table(t).try_into().unwrap();
        assert_eq!(cfg.net.tcp_port, 1234);
        assert_eq!(cfg.delivery.persist, im_shards::config::Persist::BeforeAck);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("[net]\ntcp_prot = 1\n").is_err());
    }

    #[test]
    fn cluster_compose_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/imserver-cluster.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let node = |id: Option<&str>| {
            let mut table: toml::Table = toml::from_str(&text).unwrap();
            let mut env = vec![
                ("IMSERVER_NET__TCP_PORT".to_string(), "19096".to_string()),
                ("IMSERVER_CLUSTER__ADVERTISE_HOST".into(), "10.0.0.2".into()),
            ];
            if let Some(id) = id {
                env.push(("IMSERVER_CLUSTER__NODE_ID".into(), id.into()));
            }
            apply_env(&mut table, env.into_iter()).unwrap();
            let cfg: Config = toml::Value::Table(table).try_into().unwrap();
            cfg
        };
        let cfg = node(Some("n2"));
        cfg.check_cluster().unwrap();
        let info = cfg.node_info();
        assert_eq!(
            (info.id.as_str(), info.host.as_str(), info.tcp_port),
            ("n2", "10.0.0.2", 19096)
        );
        // Without a node id the node refuses to start.
        assert!(node(None).check_cluster().is_err());
        // The single-node defaults stay out of a cluster.
        assert!(Config::default().check_cluster().is_ok());
    }
}
