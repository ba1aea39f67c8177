//! `POST /v1/decisions/{world}`: the platform asks the plugin bound for the player's brand and
//! jurisdiction to decide. The host supplies the profile; the decision is recorded with the version and
//! binding that made it (`GET /admin/decisions?player_id=…`). A version that failed its integrity check
//! at load fails closed: no decision, an error, a record.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::roles::{ADMIN, ANALYST, COMPLIANCE, OPERATOR, PLATFORM};
use super::extract::{Authorized, Path, Query, json_body};
use super::players::{BrandQuery, brand_of};
use super::{ApiError, AppState};
use crate::decisions::{DecisionError, DecisionRequest};
use crate::model as m;
use crate::plugins::World;
use crate::store::decisions;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/decisions/{world}", post(decide)).route("/admin/decisions", get(list))
}

/// The body of `POST /v1/decisions/{world}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    player_id: String,
    brand_id: Option<String>,
    trace_id: Option<String>,
    /// segment: the segment whose rule decides; none for the brand's general segment binding.
    segment: Option<String>,
    /// segment (optional), bonus-rule (required): the event, in the model's shape.
    event: Option<m::Event>,
    #[serde(default)]
    bonuses: Vec<m::BonusState>,
    #[serde(default)]
    candidates: Vec<m::OfferTemplate>,
    context: Option<m::OfferContext>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_decision_request", message)
}

#[utoipa::path(post, path = "/v1/decisions/{world}", tag = "decisions", params(("world" = String, Path)), request_body(content = Object, description = "{player_id, brand_id?, trace_id?, segment?, event?, bonuses?, candidates?, context?}"), responses((status = 200, description = "the decision, the version that took it, usage, the record's seq", body = Object), crate::api::openapi::Errors))]
async fn decide(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM }>,
    Path(world): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let world: World =
        serde_json::from_value(Value::String(world)).map_err(|_| ApiError::not_found("world"))?;
    let req: DecisionBody = json_body(&body, "invalid_decision_request", None)?;
    super::record_trace_id(req.trace_id.as_deref());
    let brand = brand_of(&principal, &BrandQuery { brand_id: req.brand_id.clone() })?;
    let request = DecisionRequest {
        brand,
        player_id: req.player_id,
        world,
        segment: req.segment,
        trace_id: req.trace_id,
        event: req.event,
        bonuses: req.bonuses,
        candidates: req.candidates,
        context: req.context,
    };
    let decided = crate::decisions::decide(&state, &request).await?;
    Ok(Json(json!(decided)))
}

impl From<DecisionError> for ApiError {
    fn from(e: DecisionError) -> Self {
        match e {
            DecisionError::Profile(p) => p.into(),
            DecisionError::Invalid(m) => invalid(m),
            DecisionError::NoBinding { .. } => {
                ApiError::new(StatusCode::CONFLICT, "no_binding", e.to_string())
            }
            DecisionError::IntegrityFailed { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "integrity_failed", e.to_string())
            }
            // The runtime's own code is the error's code: one list, documented once.
            DecisionError::Plugin { code, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            DecisionError::Internal(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}

#[derive(Debug, Deserialize)]
struct DecisionQuery {
    player_id: String,
    brand_id: Option<String>,
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/admin/decisions", tag = "decisions", params(("player_id" = Option<String>, Query, description = "the player"), ("brand_id" = Option<String>, Query, description = "the brand, when the key has several"), ("limit" = Option<i64>, Query, description = "1 to 1000")), responses((status = 200, description = "decision records, newest first", body = Object), crate::api::openapi::Errors))]
async fn list(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Query(q): Query<DecisionQuery>,
) -> Result<Json<Value>, ApiError> {
    let brand = brand_of(&principal, &BrandQuery { brand_id: q.brand_id.clone() })?;
    let records =
        decisions::for_player(&state.db, &brand, &q.player_id, q.limit.unwrap_or(100).clamp(1, 1000))
            .await
            .map_err(ApiError::internal)?;
    Ok(Json(json!({"player_id": q.player_id, "decisions": records})))
}

/// This module's part of the API document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(decide, list))]
pub(super) struct Doc;
