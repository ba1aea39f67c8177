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
            PackError::VersionExists(..) | PackError::AlreadyApproved(..) => {
                ApiError::new(StatusCode::CONFLICT, "pack_version_exists", e.to_string())
            }
            PackError::NotFound(..) => ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            PackError::SameApprover => ApiError::new(StatusCode::FORBIDDEN, "four_eyes", e.to_string()),
            PackError::Db(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}

async fn list(
    State(state): State<AppState>,
    Authorized(_): Authorized<{ COMPLIANCE | ADMIN | OPERATOR | ANALYST }>,
) -> Result<Json<Value>, ApiError> {
    let versions = state.packs.list().await.map_err(|e| ApiError::internal(format!("{e:#}")))?;
    Ok(Json(json!({ "packs": versions })))
}

async fn propose(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ COMPLIANCE | ADMIN }>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let doc: PackDocument = json_body(&body, "invalid_pack", None)?;
    let version = state.packs.propose(&principal, doc).await?;
    Ok((StatusCode::CREATED, Json(json!(version))))
}

async fn approve(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ COMPLIANCE }>,
    Path((pack, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.packs.approve(&principal, &pack, &version).await?)))
}
