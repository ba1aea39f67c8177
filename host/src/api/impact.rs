//! Impact reports of candidate plugin versions: compliance (or the operator) asks for one, everyone who
//! reviews versions reads it; its sha256 is what an approval of the version signs with it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::extract::roles::{ADMIN, ANALYST, COMPLIANCE, OPERATOR};
use super::extract::{Authorized, Path, json_body};
use super::{ApiError, AppState};
use crate::impact::{self, ImpactError, ImpactRequest};

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/plugins/{plugin_id}/impact", get(show).post(run))
}

impl From<ImpactError> for ApiError {
    fn from(e: ImpactError) -> Self {
        match e {
            ImpactError::NotFound(what) => ApiError::not_found(what),
            ImpactError::Invalid { field, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_impact_request", message)
                    .with_field(field)
            }
            ImpactError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            ImpactError::Internal(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}

#[utoipa::path(post, path = "/admin/plugins/{plugin_id}/impact", tag = "plugins", params(("plugin_id" = String, Path)), request_body(content = Object, description = "{brand_id?, segment (segment rules: the segment whose rule the candidate would replace), days? (bonus rules: days of events replayed, 1–90, default 30)}"), responses((status = 202, description = "the report, running in the background", body = Object), crate::api::openapi::Errors))]
async fn run(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ COMPLIANCE | OPERATOR }>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: ImpactRequest = if body.is_empty() {
        ImpactRequest::default()
    } else {
        json_body(&body, "invalid_impact_request", None)?
    };
    let stored = impact::request(&state.core, &principal, &id, &req).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(stored))))
}

#[utoipa::path(get, path = "/admin/plugins/{plugin_id}/impact", tag = "plugins", params(("plugin_id" = String, Path)), responses((status = 200, description = "the report: state, figures once done, and the sha256 an approval signs", body = Object), crate::api::openapi::Errors))]
async fn show(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ COMPLIANCE | OPERATOR | ANALYST | ADMIN }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(impact::get(&state.core, &principal, &id).await?)))
}

/// This module's part of the API document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(run, show))]
pub(super) struct Doc;
