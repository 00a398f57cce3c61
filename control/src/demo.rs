//! The browser chat demo at `/demo/` (`[demo] enabled = true`, off by default): the page,
//! the TypeScript client it runs on, and two open endpoints that a demo needs and a
//! production server must never offer — a token for any uid, and joining any group.
//!
//! The files are compiled into the binary: `clients/web-demo/` and the client library's
//! build output `clients/js/dist/` (committed; `scripts/test` checks it is current).

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::reply::{code, ok, ApiError, ApiResult};

/// The `[demo]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Serve the demo and its open token endpoint. Never on a production server: anyone who
    /// reaches the HTTP API can then log in as any uid.
    pub enabled: bool,
}

/// Where the page's client connects (the host is the one the page was loaded from).
#[derive(Debug, Clone, Serialize)]
pub struct DemoEndpoints {
    pub ws_port: u16,
    pub ws_path: String,
    /// `None` without TLS.
    pub wss_port: Option<u16>,
    pub wss_path: String,
}

/// (path under /demo/, content type, bytes)
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../clients/web-demo/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../clients/web-demo/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../clients/web-demo/app.js"),
    ),
    (
        "imclient/index.js",
        "text/javascript; charset=utf-8",
        include_str!("../../clients/js/dist/index.js"),
    ),
    (
        "imclient/client.js",
        "text/javascript; charset=utf-8",
        include_str!("../../clients/js/dist/client.js"),
    ),
    (
        "imclient/codec.js",
        "text/javascript; charset=utf-8",
        include_str!("../../clients/js/dist/codec.js"),
    ),
];

fn file(path: &str) -> Response {
    let path = if path.is_empty() { "index.html" } else { path };
    match FILES.iter().find(|(p, _, _)| *p == path) {
        Some((_, ty, body)) => (
            [
                (header::CONTENT_TYPE, *ty),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            code::RECORD_NOT_FOUND,
            "no such demo file",
        )
        .into_response(),
    }
}

#[derive(Deserialize)]
struct LoginRequest {
    uid: u32,
}

/// `POST /demo/login {uid}` → `{uid, token, endpoints}`: a token for anyone.
async fn login(
    State(st): State<crate::State>,
    body: Result<axum::Json<LoginRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let axum::Json(req) = body?;
    if req.uid == 0 {
        return Err(ApiError::args("uid 0 is not a user"));
    }
    let token = st
        .auth
        .mint(req.uid, std::time::Duration::from_secs(24 * 3600))
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                code::SERVER_INTERNAL,
                e.to_string(),
            )
        })?;
    tracing::info!(uid = req.uid, "demo login");
    Ok(ok(
        json!({"uid": req.uid, "token": token, "endpoints": st.demo}),
    ))
}

/// `POST /demo/groups/{gid}/join {uid}` → `{gid, members}`: joins (and creates) a group.
async fn join(
    State(st): State<crate::State>,
    Path(gid): Path<u32>,
    body: Result<axum::Json<LoginRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let axum::Json(req) = body?;
    if req.uid == 0 || gid == 0 {
        return Err(ApiError::args("uid and gid must not be 0"));
    }
    st.groups.add(gid, vec![req.uid]).await?;
    let members = st.groups.members(gid).await?;
    Ok(ok(json!({"gid": gid, "members": members})))
}

/// The demo's routes (merged only when enabled).
pub fn routes() -> Router<crate::State> {
    Router::new()
        .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
        .route("/demo/", get(|| async { file("") }))
        .route(
            "/demo/{*path}",
            get(|Path(p): Path<String>| async move { file(&p) }),
        )
        .route("/demo/login", post(login))
        .route("/demo/groups/{gid}/join", post(join))
}
