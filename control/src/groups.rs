//! Group membership through the configured store (the same `im_group:<gid>` sets, or the
//! embedded store). Changes apply to the very next group message: the store bumps the
//! group's version, which every shard's cache checks.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::reply::{code, ok, ApiError, ApiResult};
use crate::require_admin;

type Body<T> = Result<axum::Json<T>, axum::extract::rejection::JsonRejection>;

fn body<T>(b: Body<T>) -> Result<T, ApiError> {
    b.map(|axum::Json(t)| t).map_err(ApiError::from)
}

fn check_uids(uids: &[u32]) -> Result<(), ApiError> {
    if uids.is_empty() {
        return Err(ApiError::args("give at least one uid"));
    }
    if uids.contains(&0) {
        return Err(ApiError::args("0 is not a uid"));
    }
    Ok(())
}

fn not_found(gid: u32) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        code::GROUP_NOT_FOUND,
        format!("no group {gid}"),
    )
}

#[derive(Deserialize)]
pub struct CreateRequest {
    #[serde(alias = "groupID")]
    gid: u32,
    #[serde(alias = "memberUserIDs")]
    members: Vec<u32>,
}

#[derive(Deserialize)]
pub struct MembersRequest {
    #[serde(alias = "userIDs")]
    uids: Vec<u32>,
}

/// `GET /groups` → `{groups: [{gid, members}]}` (member counts).
pub async fn list(State(st): State<crate::State>, headers: HeaderMap) -> ApiResult {
    require_admin(&st, &headers)?;
    let mut out = Vec::new();
    for gid in st.groups.groups().await? {
        out.push(json!({"gid": gid, "members": st.groups.members(gid).await?.len()}));
    }
    Ok(ok(json!({ "groups": out })))
}

/// `POST /groups` `{gid, members}`: creates a group (1202 if it exists).
pub async fn create(
    State(st): State<crate::State>,
    headers: HeaderMap,
    b: Body<CreateRequest>,
) -> ApiResult {
    require_admin(&st, &headers)?;
    let req = body(b)?;
    check_uids(&req.members)?;
    if !st.groups.members(req.gid).await?.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            code::GROUP_EXISTS,
            format!("group {} exists", req.gid),
        ));
    }
    let n = st.groups.add(req.gid, req.members).await?;
    Ok(ok(json!({"gid": req.gid, "members": n})))
}

/// `GET /groups/{gid}` → `{gid, members: [uid…]}`.
pub async fn members(
    State(st): State<crate::State>,
    headers: HeaderMap,
    Path(gid): Path<u32>,
) -> ApiResult {
    require_admin(&st, &headers)?;
    let m = st.groups.members(gid).await?;
    if m.is_empty() {
        return Err(not_found(gid));
    }
    Ok(ok(json!({"gid": gid, "members": m})))
}

/// `DELETE /groups/{gid}`.
pub async fn delete(
    State(st): State<crate::State>,
    headers: HeaderMap,
    Path(gid): Path<u32>,
) -> ApiResult {
    require_admin(&st, &headers)?;
    if !st.groups.delete(gid).await? {
        return Err(not_found(gid));
    }
    Ok(ok(json!({ "gid": gid })))
}

/// `POST /groups/{gid}/members` `{uids}` → `{added}` (creates the group when missing).
pub async fn add(
    State(st): State<crate::State>,
    headers: HeaderMap,
    Path(gid): Path<u32>,
    b: Body<MembersRequest>,
) -> ApiResult {
    edit_members(&st, &headers, gid, b, true).await
}

/// `POST /groups/{gid}/members/remove` `{uids}` → `{removed}`.
pub async fn remove(
    State(st): State<crate::State>,
    headers: HeaderMap,
    Path(gid): Path<u32>,
    b: Body<MembersRequest>,
) -> ApiResult {
    edit_members(&st, &headers, gid, b, false).await
}

async fn edit_members(
    st: &crate::AppState,
    headers: &HeaderMap,
    gid: u32,
    b: Body<MembersRequest>,
    add: bool,
) -> ApiResult {
    require_admin(st, headers)?;
    let req = body(b)?;
    check_uids(&req.uids)?;
    if add {
        let n = st.groups.add(gid, req.uids).await?;
        Ok(ok(json!({"gid": gid, "added": n})))
    } else {
        let n = st.groups.remove(gid, req.uids).await?;
        Ok(ok(json!({"gid": gid, "removed": n})))
    }
}
