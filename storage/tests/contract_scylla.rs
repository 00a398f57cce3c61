//! The offline-store contract against a real ScyllaDB at `SCYLLA_URI` (`host:port`, e.g.
//! `127.0.0.1:9042`). No ScyllaDB can be installed on the development machine, so the cases
//! are `#[ignore]`d: `cargo test` lists them as ignored, and the test command runs them
//! with `--include-ignored` when `SCYLLA_URI` is set (and says SKIPPED when it is not). Run
//! by hand without `SCYLLA_URI`, they fail. The driver wiring runs in CI against an
//! in-process CQL server (`scylla_wiring.rs`).
//!
//! Each case uses its own keyspace (`im_contract_<hash>`, SimpleStrategy, RF 1), left in
//! place afterwards for inspection.

use std::path::Path;
use std::sync::Arc;

use im_storage::{OfflineStore, ScyllaConfig, ScyllaOffline};
use im_testkit::offline::Opener;

fn with_scylla(case: fn(&Path, Opener)) {
    let uri = std::env::var("SCYLLA_URI")
        .expect("the ScyllaDB contract needs a real ScyllaDB: set SCYLLA_URI=host:port");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let run = std::process::id();
    let open = |dir: &Path| -> Arc<dyn OfflineStore> {
        let h = dir.to_string_lossy().bytes().fold(u64::from(run), |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
        let cfg = ScyllaConfig {
            contact_points: vec![uri.clone()],
            keyspace: format!("im_contract_{h:x}"),
            replication_strategy: "SimpleStrategy".into(),
            consistency: "one".into(),
            ..ScyllaConfig::default()
        };
        let s = ScyllaOffline::new(cfg, 86_400, rt.handle().clone()).expect("config");
        s.connect_now().expect("connect to SCYLLA_URI");
        Arc::new(s)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    case(dir.path(), &open);
}

im_testkit::offline_store_contract!(
    with = with_scylla,
    ignore = "needs a real ScyllaDB at SCYLLA_URI"
);
