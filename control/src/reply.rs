//! The OpenIM response shape: `{"errCode":0,"errMsg":"","errDlt":"","data":{…}}`, with error
//! codes from seed 004 (`../shared/seeds/004_…`) and a matching HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

/// Seed 004 error codes used by the API.
pub mod code {
    pub const SERVER_INTERNAL: u32 = 500;
    pub const ARGS: u32 = 1001;
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

impl From<im_storage::GroupError> for ApiError {
    fn from(e: im_storage::GroupError) -> Self {
        Self::unavailable(e.to_string())
    }
}

/// Handlers return this.
pub type ApiResult = Result<Json<Value>, ApiError>;
