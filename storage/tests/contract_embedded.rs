//! The offline-store contract against the embedded (redb) backend, on real files.

use std::path::Path;
use std::sync::Arc;

use im_storage::{EmbeddedStore, OfflineStore};

fn open(dir: &Path) -> Arc<dyn OfflineStore> {
    Arc::new(EmbeddedStore::open(&dir.join("offline.redb")).expect("open embedded store"))
}

im_testkit::offline_store_contract!(open);
