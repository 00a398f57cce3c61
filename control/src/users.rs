//! Tokens, server-side sends and who is online.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use im_shards::control::{ControlError, SystemMessage, Target};
use serde::{Deserialize, Deserializer};
use serde_json::json;

use crate::reply::{code, ok, ApiError, ApiResult};
use crate::require_admin;

/// A uid given as a number or as a decimal string (OpenIM sends strings).
fn uid<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u32),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(n),
        Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn opt_uid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    uid(d).map(Some)
}

#[derive(Deserialize)]
pub struct TokenRequest {
    secret: String,
    #[serde(alias = "platformID", default)]
    platform: u32,
    #[serde(alias = "userID", deserialize_with = "uid")]
    uid: u32,
}

/// `POST /auth/user_token` `{secret, platform, uid}` → `{uid, token, expiredTime}` (Unix
/// seconds). The token is the CONNECT password; the username is the uid. In a cluster the
/// answer also has `node`: the user's home node (`id`, `host`, and a URL per transport)
/// to connect to; any node accepts the login, but the home serves it without a relay.
pub async fn user_token(
    State(st): State<crate::State>,
    body: Result<axum::Json<TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let axum::Json(req) = body?;
    if !crate::constant_time_eq(req.secret.as_bytes(), st.cfg.admin_secret.as_bytes()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            code::NO_PERMISSION,
            "wrong secret",
        ));
    }
    if req.uid == 0 {
        return Err(ApiError::args("uid 0 is not a user"));
    }
    let ttl = Duration::from_secs(st.cfg.token_ttl_secs);
    let token = st.auth.mint(req.uid, ttl).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::SERVER_INTERNAL,
            e.to_string(),
        )
    })?;
    let expired = im_storage::now_ms() / 1000 + ttl.as_secs();
    tracing::debug!(uid = req.uid, platform = req.platform, "token issued");
    let mut data = json!({"uid": req.uid, "token": token, "expiredTime": expired});
    if let Some(node) = st.home.as_ref().and_then(|home| home(req.uid)) {
        data["node"] = node;
    }
    Ok(ok(data))
}

#[derive(Deserialize)]
pub struct SendRequest {
    /// Shown as `from` in the envelope; 0 (default) = the system.
    #[serde(alias = "sendID", default, deserialize_with = "uid")]
    from: u32,
    #[serde(alias = "recvID", default, deserialize_with = "opt_uid")]
    to: Option<u32>,
    #[serde(alias = "groupID", default, deserialize_with = "opt_uid")]
    group: Option<u32>,
    content: String,
    /// 32 characters; generated when absent.
    #[serde(alias = "msgID", default)]
    msg_id: Option<String>,
}

fn new_msg_id() -> [u8; 32] {
    let v: u128 = rand::random();
    let mut id = [0u8; 32];
    id.copy_from_slice(format!("{v:032x}").as_bytes());
    id
}

fn control_error(e: ControlError) -> ApiError {
    match e {
        ControlError::Refused { code: c, why } => {
            let status = if c == code::SERVER_INTERNAL {
                StatusCode::SERVICE_UNAVAILABLE
            } else if c == code::GROUP_NOT_FOUND {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError::new(status, c, why)
        }
        other => ApiError::unavailable(other.to_string()),
    }
}

/// `POST /msg/send` `{sendID?, recvID | groupID, content, msgID?}` → `{msgID}`: delivered
/// like a client PUBLISH / GROUP_PUBLISH (same envelope, acks, redelivery, offline storage,
/// persistence mode); answered once accepted.
pub async fn send(
    State(st): State<crate::State>,
    headers: HeaderMap,
    body: Result<axum::Json<SendRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    require_admin(&st, &headers)?;
    let axum::Json(req) = body?;
    let to = match (req.to, req.group) {
        (Some(u), None) => Target::User(u),
        (None, Some(g)) => Target::Group(g),
        _ => {
            return Err(ApiError::args(
                "give exactly one of recvID (uid) and groupID",
            ))
        }
    };
    let msg_id = match &req.msg_id {
        None => new_msg_id(),
        Some(s) => s
            .as_bytes()
            .try_into()
            .map_err(|_| ApiError::args("msgID must be exactly 32 bytes"))?,
    };
    let msg = SystemMessage {
        from: req.from,
        to,
        msg_id,
        payload: req.content.into_bytes(),
    };
    st.control.send(msg).await.map_err(control_error)?;
    Ok(ok(json!({"msgID": String::from_utf8_lossy(&msg_id)})))
}

/// `GET /users/{uid}/online` → `{uid, online, sessions: [{session, transport, extensions}]}`.
pub async fn online(
    State(st): State<crate::State>,
    headers: HeaderMap,
    Path(uid): Path<u32>,
) -> ApiResult {
    require_admin(&st, &headers)?;
    let sessions = st.control.online(uid).await.map_err(control_error)?;
    let list: Vec<_> = sessions
        .iter()
        .map(
            |s| json!({"session": s.session, "transport": s.transport, "extensions": s.extensions}),
        )
        .collect();
    Ok(ok(
        json!({"uid": uid, "online": !list.is_empty(), "sessions": list}),
    ))
}
