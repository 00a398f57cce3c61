//! The control plane: a small tokio runtime on its own thread (the data plane stays on the
//! shards) serving the admin/server HTTP API with axum, Prometheus metrics and health.
//!
//! Endpoints (documented in the README):
//! - `POST /auth/user_token` — a client token (the CONNECT password) for a uid;
//! - `POST /msg/send` — a server-side message to a user or a group;
//! - `GET /groups`, `POST /groups`, `GET|DELETE /groups/{gid}`,
//!   `POST /groups/{gid}/members`, `POST /groups/{gid}/members/remove` — membership;
//! - `GET /users/{uid}/online` — a user's sessions and their transports;
//! - `/demo/` — the browser chat demo, only with `[demo] enabled` (see [`demo`]);
//! - `GET /healthz`, `GET /readyz`, `GET /metrics` — open, everything else needs the admin
//!   secret (`token: <secret>` as OpenIM clients send it, or `Authorization: Bearer <secret>`).

pub mod callback;
pub mod demo;
mod groups;
mod health;
pub mod metrics;
mod process;
mod reply;
mod users;

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use im_shards::control::ControlHandle;
use im_shards::TokenAuth;
use im_storage::{GroupStore, StoreHandle};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

pub use reply::{code, ApiError};

/// The `[control]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Serve the HTTP API at all.
    pub enabled: bool,
    pub bind: String,
    pub port: u16,
    /// Needed by every endpoint but health and metrics, and as `secret` by
    /// `/auth/user_token`. Change it in production.
    pub admin_secret: String,
    /// Lifetime of tokens from `/auth/user_token`, in seconds.
    pub token_ttl_secs: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: "127.0.0.1".into(),
            port: 10000,
            admin_secret: "change-me-admin-secret".into(),
            token_ttl_secs: 7 * 24 * 3600,
        }
    }
}

/// What the handlers share.
pub struct AppState {
    pub cfg: ControlConfig,
    pub auth: Arc<TokenAuth>,
    pub groups: Arc<dyn GroupStore>,
    pub control: ControlHandle,
    pub store: StoreHandle,
    pub registry: Registry,
    /// The demo's transports when `[demo] enabled`, else `None` (no demo routes).
    pub demo: Option<demo::DemoEndpoints>,
    /// In a cluster: a user's home node and its client addresses (JSON), which the token
    /// endpoint returns so the client connects there directly.
    pub home: Option<HomeOf>,
}

/// Looks up the node a user should connect to (see [`AppState::home`]).
pub type HomeOf = Arc<dyn Fn(u32) -> Option<serde_json::Value> + Send + Sync>;

pub type State = Arc<AppState>;

/// Refuses a request without the admin secret (401, errCode 1002).
pub(crate) fn require_admin(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get("token")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        });
    match given {
        Some(s) if constant_time_eq(s.as_bytes(), st.cfg.admin_secret.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            code::NO_PERMISSION,
            "wrong admin secret",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            code::NO_PERMISSION,
            "missing admin secret: send header `token: <admin_secret>` or `Authorization: Bearer <admin_secret>`",
        )),
    }
}

/// Compares secrets without an early exit on the first differing byte.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The API's routes.
pub fn router(state: State) -> Router {
    let demo = if state.demo.is_some() {
        demo::routes()
    } else {
        Router::new()
    };
    Router::new()
        .merge(demo)
        .route("/auth/user_token", post(users::user_token))
        .route("/msg/send", post(users::send))
        .route("/users/{uid}/online", get(users::online))
        .route("/groups", get(groups::list).post(groups::create))
        .route("/groups/{gid}", get(groups::members).delete(groups::delete))
        .route("/groups/{gid}/members", post(groups::add))
        .route("/groups/{gid}/members/remove", post(groups::remove))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                code::RECORD_NOT_FOUND,
                "no such endpoint",
            )
        })
        .layer(axum::middleware::map_response(reply::openim_errors))
        .with_state(state)
}

/// Binds the API's listener (so a taken port fails the start) and serves it on the
/// current tokio runtime until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: State,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
