//! `GET /healthz` (the process is up), `GET /readyz` (every shard answers, storage and the
//! group store respond within a second) and `GET /metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

fn verdict<E: std::fmt::Display>(r: Result<Result<(), E>, tokio::time::error::Elapsed>) -> String {
    match r {
        Ok(Ok(())) => "ok".into(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".into(),
    }
}

pub async fn readyz(State(st): State<crate::State>) -> Response {
    let shards = verdict(tokio::time::timeout(PROBE_TIMEOUT, st.control.ping_all()).await);
    let storage = verdict(tokio::time::timeout(PROBE_TIMEOUT, st.store.flush()).await);
    let groups = verdict(
        tokio::time::timeout(PROBE_TIMEOUT, async {
            st.groups.members(0).await.map(|_| ())
        })
        .await,
    );
    let ready = [&shards, &storage, &groups].iter().all(|v| *v == "ok");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "shards": shards,
        "storage": storage,
        "groups": groups,
    });
    (status, Json(body)).into_response()
}

pub async fn metrics(State(st): State<crate::State>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &st.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
