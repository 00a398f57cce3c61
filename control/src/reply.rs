//! The OpenIM response shape: `{"errCode":0,"errMsg":"","errDlt":"","data":{…}}`, with the
//! error codes OpenIM uses (documented in `docs/protocol.md`) and a matching HTTP status.
//! [`openim_errors`] gives the same shape to errors no handler wrote (a path parameter that
//! is not a uid, a wrong method, a body over the limit).

use axum::extract::rejection::JsonRejection;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

/// Seed 004 error codes used by the API.
pub mod code {
    pub use im_protocol::packet::pub_err::{ARGS, SERVER_INTERNAL};
    pub const NO_PERMISSION: u32 = 1002;
    pub const RECORD_NOT_FOUND: u32 = 1004;
    pub const GROUP_NOT_FOUND: u32 = 1201;
    pub const GROUP_EXISTS: u32 = 1202;
}

/// A successful reply.
pub fn ok(data: impl Serialize) -> Json<Value> {
    Json(json!({"errCode": 0, "errMsg": "", "errDlt": "", "data": data}))
}

/// A failed request: HTTP status, seed-004 code and a message for humans.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub msg: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: u32, msg: impl Into<String>) -> Self {
        Self {
            status,
            code,
            msg: msg.into(),
        }
    }

    pub fn args(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::ARGS, msg)
    }

    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code::SERVER_INTERNAL, msg)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"errCode": self.code, "errMsg": self.msg, "errDlt": "", "data": null});
        (self.status, Json(body)).into_response()
    }
}

/// A body that is not the expected JSON: 400 / 1001 (axum's 422 for well-formed JSON of
/// the wrong shape included, as OpenIM answers), except a body over the size limit (413)
/// and a missing `content-type: application/json` (415), still errCode 1001.
impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        let status = match e.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        Self::new(status, code::ARGS, e.body_text())
    }
}

/// The seed-004 code for an HTTP error status no handler chose.
fn code_for(status: StatusCode) -> u32 {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => code::NO_PERMISSION,
        StatusCode::NOT_FOUND => code::RECORD_NOT_FOUND,
        s if s.is_server_error() => code::SERVER_INTERNAL,
        _ => code::ARGS,
    }
}

/// The longest error text kept from a response written by axum itself.
const MAX_ERROR_TEXT: usize = 4096;

/// Middleware: an error response that is not JSON (axum's own rejections: plain text or an
/// empty body) is rewritten into the OpenIM shape, keeping its status and headers (`allow`
/// on a 405). Responses the handlers wrote, and every success, pass untouched.
pub async fn openim_errors(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = match axum::body::to_bytes(body, MAX_ERROR_TEXT).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut out = ApiError::new(status, code_for(status), text).into_response();
    for (name, value) in parts.headers.iter() {
        out.headers_mut()
            .entry(name.clone())
            .or_insert_with(|| value.clone());
    }
    out
}

impl From<im_storage::GroupError> for ApiError {
    fn from(e: im_storage::GroupError) -> Self {
        Self::unavailable(e.to_string())
    }
}

/// Handlers return this.
pub type ApiResult = Result<Json<Value>, ApiError>;
