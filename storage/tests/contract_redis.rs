//! The offline-store contract against the Redis backend, on a real `redis-server` started
//! for each case on a free port.

use std::path::Path;
use std::sync::Arc;

use im_storage::{OfflineStore, RedisConfig, RedisOffline};
use im_testkit::offline::Opener;
use im_testkit::RedisServer;

fn with_redis(case: fn(&Path, Opener)) {
    let redis = RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let cfg = RedisConfig {
        port: redis.port,
        ..RedisConfig::default()
    };
    let handle = rt.handle().clone();
    let open = move |_: &Path| -> Arc<dyn OfflineStore> {
        Arc::new(RedisOffline::connect(&cfg, handle.clone()).expect("connect to redis"))
    };
    let dir = tempfile::tempdir().expect("tempdir");
    case(dir.path(), &open);
}

im_testkit::offline_store_contract!(with = with_redis);
