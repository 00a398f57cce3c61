//! Starting and stopping the control plane's HTTP API on the control runtime.

use std::sync::Arc;

use anyhow::Context;
use im_control::metrics::{registry, CoreMetrics};
use im_control::AppState;
use im_shards::{Server, TokenAuth};
use im_storage::{GroupStore, StoreHandle};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

use crate::config::Config;

/// The running API (or nothing, when `control.enabled` is false).
pub struct Api {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Binds the API's port (a taken port fails the start) and serves it on `rt`.
pub fn start(
    cfg: &Config,
    rt: &Runtime,
    server: &Server,
    store: StoreHandle,
    groups: Arc<dyn GroupStore>,
    cluster: Option<Arc<im_cluster::Cluster>>,
) -> anyhow::Result<Api> {
    if !cfg.control.enabled {
        return Ok(Api {
            stop: None,
            task: None,
        });
    }
    let addr = format!("{}:{}", cfg.control.bind, cfg.control.port);
    let std_listener = std::net::TcpListener::bind(&addr)
        .with_context(|| format!("binding the HTTP API on {addr} (control.bind / control.port)"))?;
    std_listener.set_nonblocking(true)?;
    let listener = {
        let _guard = rt.enter();
        tokio::net::TcpListener::from_std(std_listener)?
    };
    let metrics = CoreMetrics {
        shards: server.stats().to_vec(),
        control: server.control(),
        store: store.clone(),
    };
    let mut registry = registry(metrics);
    if let Some(c) = &cluster {
        registry.register_collector(Box::new(im_cluster::stats::ClusterMetrics(c.stats())));
    }
    let home = cluster.map(|c| {
        let f: im_control::HomeOf = Arc::new(move |uid| c.home_of(uid).map(|n| node_json(&n)));
        f
    });
    let state = Arc::new(AppState {
        cfg: cfg.control.clone(),
        auth: Arc::new(TokenAuth::new(&cfg.auth.secret)),
        groups,
        control: server.control(),
        store,
        registry,
        home,
        demo: cfg.demo.enabled.then(|| im_control::demo::DemoEndpoints {
            ws_port: cfg.net.ws_port,
            ws_path: cfg.net.ws_path.clone(),
            wss_port: cfg.tls.enabled.then_some(cfg.tls.wss_port),
            wss_path: cfg.tls.wss_path.clone(),
        }),
    });
    let (tx, rx) = oneshot::channel::<()>();
    let task = rt.spawn(async move {
        let shutdown = async {
            let _ = rx.await;
        };
        if let Err(e) = im_control::serve(listener, state, shutdown).await {
            tracing::error!(error = %e, "HTTP API stopped");
        }
    });
    Ok(Api {
        stop: Some(tx),
        task: Some(task),
    })
}

impl Api {
    /// Stops taking requests and waits (briefly) for the ones in progress.
    pub fn stop(mut self, rt: &Runtime) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = rt.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(5), task).await
            });
        }
    }
}

/// A node's client addresses as the token endpoint returns them.
fn node_json(n: &im_cluster::NodeInfo) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": n.id,
        "host": n.host,
        "tcp": format!("{}:{}", n.host, n.tcp_port),
        "ws": format!("ws://{}:{}{}", n.host, n.ws_port, n.ws_path),
    });
    if n.wss_port != 0 {
        v["wss"] = format!("wss://{}:{}{}", n.host, n.wss_port, n.wss_path).into();
    }
    if n.tls_tcp_port != 0 {
        v["tls_tcp"] = format!("{}:{}", n.host, n.tls_tcp_port).into();
    }
    v
}
