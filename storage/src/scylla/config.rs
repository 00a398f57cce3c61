//! Where and how to reach ScyllaDB (the `[scylla]` config section).

use std::collections::BTreeMap;

use scylla::statement::Consistency;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// ScyllaDB connection, keyspace and request settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaConfig {
    /// `host:port` of one or more nodes; the driver discovers the rest.
    pub contact_points: Vec<String>,
    /// Keyspace of the offline tables, created when missing.
    pub keyspace: String,
    /// `NetworkTopologyStrategy` (production) or `SimpleStrategy` (one data centre, tests).
    pub replication_strategy: String,
    /// Replicas per data centre (used when `datacenters` is empty).
    pub replication_factor: u32,
    /// Per data-centre factors for `NetworkTopologyStrategy`, e.g. `{ dc1 = 3, dc2 = 3 }`.
    pub datacenters: BTreeMap<String, u32>,
    /// Consistency of every read and write: `local_quorum`, `quorum`, `one`, `local_one`,
    /// `all`, `each_quorum`, `two`, `three`.
    pub consistency: String,
    /// Empty for no authentication (PasswordAuthenticator otherwise).
    pub username: String,
    pub password: String,
    /// Connecting to the first node (and creating the schema) may take this long.
    pub connect_timeout_ms: u64,
    /// One request, including the driver's retries, may take this long.
    pub request_timeout_ms: u64,
    /// While ScyllaDB is unreachable, a new connection is tried at most this often.
    pub reconnect_interval_ms: u64,
    /// Statements of one batch sent at once.
    pub max_concurrency: usize,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        Self {
            contact_points: vec!["127.0.0.1:9042".into()],
            keyspace: "imserver".into(),
            replication_strategy: "NetworkTopologyStrategy".into(),
            replication_factor: 1,
            datacenters: BTreeMap::new(),
            consistency: "local_quorum".into(),
            username: String::new(),
            password: String::new(),
            connect_timeout_ms: 5_000,
            request_timeout_ms: 2_000,
            reconnect_interval_ms: 1_000,
            max_concurrency: 256,
        }
    }
}

impl ScyllaConfig {
    /// The consistency level, or an error naming the accepted values.
    pub fn consistency(&self) -> Result<Consistency, StoreError> {
        Ok(match self.consistency.to_ascii_lowercase().as_str() {
            "one" => Consistency::One,
            "two" => Consistency::Two,
            "three" => Consistency::Three,
            "quorum" => Consistency::Quorum,
            "all" => Consistency::All,
            "local_quorum" => Consistency::LocalQuorum,
            "each_quorum" => Consistency::EachQuorum,
            "local_one" => Consistency::LocalOne,
            other => {
                return Err(StoreError::engine(
                    "config",
                    format!(
                        "unknown scylla.consistency {other:?} (one of local_quorum, quorum, \
                         one, local_one, all, each_quorum, two, three)"
                    ),
                ))
            }
        })
    }

    /// The `replication = {...}` map of `CREATE KEYSPACE`.
    pub fn replication(&self) -> Result<String, StoreError> {
        let ident_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        match self.replication_strategy.as_str() {
            "SimpleStrategy" => Ok(format!(
                "{{'class': 'SimpleStrategy', 'replication_factor': {}}}",
                self.replication_factor
            )),
            "NetworkTopologyStrategy" if self.datacenters.is_empty() => Ok(format!(
                "{{'class': 'NetworkTopologyStrategy', 'replication_factor': {}}}",
                self.replication_factor
            )),
            "NetworkTopologyStrategy" => {
                let mut parts = vec!["'class': 'NetworkTopologyStrategy'".to_string()];
                for (dc, rf) in &self.datacenters {
                    if !ident_ok(dc) {
                        return Err(StoreError::engine(
                            "config",
                            format!("scylla.datacenters: bad data-centre name {dc:?}"),
                        ));
                    }
                    parts.push(format!("'{dc}': {rf}"));
                }
                Ok(format!("{{{}}}", parts.join(", ")))
            }
            other => Err(StoreError::engine(
                "config",
                format!(
                    "unknown scylla.replication_strategy {other:?} \
                     (NetworkTopologyStrategy or SimpleStrategy)"
                ),
            )),
        }
    }

    /// The keyspace name, checked (it is spliced into DDL).
    pub fn keyspace(&self) -> Result<&str, StoreError> {
        let k = &self.keyspace;
        let ok = !k.is_empty()
            && k.len() <= 48
            && k.starts_with(|c: char| c.is_ascii_alphabetic())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(k)
        } else {
            Err(StoreError::engine(
                "config",
                format!(
                    "scylla.keyspace {k:?}: letters, digits and '_', starting with a letter, \
                     at most 48"
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_maps() {
        let mut c = ScyllaConfig::default();
        assert_eq!(
            c.replication().unwrap(),
            "{'class': 'NetworkTopologyStrategy', 'replication_factor': 1}"
        );
        c.datacenters = BTreeMap::from([("dc1".into(), 3), ("dc2".into(), 2)]);
        assert_eq!(
            c.replication().unwrap(),
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}"
        );
        c.datacenters = BTreeMap::from([("dc1'; DROP".into(), 3)]);
        assert!(c.replication().is_err());
        c.replication_strategy = "Nope".into();
        assert!(c.replication().is_err());
    }

    #[test]
    fn keyspace_and_consistency_are_checked() {
        let mut c = ScyllaConfig::default();
        assert_eq!(c.consistency().unwrap(), Consistency::LocalQuorum);
        c.consistency = "ONE".into();
        assert_eq!(c.consistency().unwrap(), Consistency::One);
        c.consistency = "most".into();
        assert!(c.consistency().is_err());
        assert!(c.keyspace().is_ok());
        c.keyspace = "im; DROP".into();
        assert!(c.keyspace().is_err());
    }
}
