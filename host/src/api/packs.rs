//! `/admin/packs`: the jurisdiction packs and their versions (compliance, admin, operator, analyst
//! read), a new version proposed (compliance, admin) and approved by another compliance officer.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::extract::roles::{ADMIN, ANALYST, COMPLIANCE, OPERATOR};
use super::extract::{Authorized, Path, json_body};
use super::{ApiError, AppState};
use crate::policy::{PackDocument, PackError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/packs", get(list).post(propose))
        .route("/admin/packs/{pack}/versions/{version}/approve", post(approve))
}

impl From<PackError> for ApiError {
    fn from(e: PackError) -> Self {
        match e {
            PackError::Invalid { field, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_pack", message).with_field(field)
            }
            PackError::VersionExists(..) => {
                ApiError::new(StatusCode::CONFLICT, "pack_version_exists", e.to_string())
            }
            PackError::AlreadyApproved(..) => {
                ApiError::new(StatusCode::CONFLICT, "already_approved", e.to_string())
            }
            PackError::NotFound(..) => ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            PackError::SameApprover => ApiError::new(StatusCode::FORBIDDEN, "four_eyes", e.to_string()),
            PackError::Db(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}

#[utoipa::path(get, path = "/admin/packs", tag = "packs", responses((status = 200, description = "every version of every pack", body = Object), crate::api::openapi::Errors))]
async fn list(
    State(state): State<AppState>,
    Authorized(_): Authorized<{ COMPLIANCE | ADMIN | OPERATOR | ANALYST }>,
) -> Result<Json<Value>, ApiError> {
    let versions = state.policies.packs.list().await.map_err(|e| ApiError::internal(format!("{e:#}")))?;
    Ok(Json(json!({ "packs": versions })))
}

#[utoipa::path(post, path = "/admin/packs", tag = "packs", request_body(content = Object, description = "the whole pack, every value with its source (packs/*.toml as JSON)"), responses((status = 201, description = "the proposed version", body = Object), crate::api::openapi::Errors))]
async fn propose(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ COMPLIANCE | ADMIN }>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let doc: PackDocument = json_body(&body, "invalid_pack", None)?;
    let version = state.policies.packs.propose(&principal, doc).await?;
    Ok((StatusCode::CREATED, Json(json!(version))))
}

#[utoipa::path(post, path = "/admin/packs/{pack}/versions/{version}/approve", tag = "packs", params(("pack" = String, Path), ("version" = String, Path)), responses((status = 200, description = "the version, in force", body = Object), crate::api::openapi::Errors))]
async fn approve(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ COMPLIANCE }>,
    Path((pack, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.policies.packs.approve(&principal, &pack, &version).await?)))
}

/// This module's part of the API document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, propose, approve))]
pub(super) struct Doc;
