//! Triggers and journeys through the admin API (marketing and operator write; compliance, analyst and
//! admin read; activation by marketing, operator or compliance, and of a sensitive version only by a
//! compliance officer other than its author), their figures and dry runs, and a player's journeys and
//! trigger fires.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::roles::{ADMIN, ANALYST, COMPLIANCE, MARKETING, OPERATOR, PLATFORM};
use super::extract::{Authorized, Path, Query, json_body};
use super::players::{BrandQuery, brand_of};
use super::{ApiError, AppState};
use crate::defs::{self, DefError, Kind};
use crate::engage::{dry_run, journeys, triggers};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/triggers", get(list_triggers).post(create_trigger))
        .route("/admin/triggers/{trigger_id}", get(show_trigger).put(update_trigger))
        .route("/admin/triggers/{trigger_id}/activate", post(activate_trigger))
        .route("/admin/triggers/{trigger_id}/deactivate", post(deactivate_trigger))
        .route("/admin/triggers/{trigger_id}/stats", get(trigger_stats))
        .route("/admin/triggers/{trigger_id}/dry-run", post(dry_run_trigger))
        .route("/admin/journeys", get(list_journeys).post(create_journey))
        .route("/admin/journeys/{journey_id}", get(show_journey).put(update_journey))
        .route("/admin/journeys/{journey_id}/activate", post(activate_journey))
        .route("/admin/journeys/{journey_id}/deactivate", post(deactivate_journey))
        .route("/admin/journeys/{journey_id}/pause", post(pause_journey))
        .route("/admin/journeys/{journey_id}/resume", post(resume_journey))
        .route("/admin/journeys/{journey_id}/stats", get(journey_stats))
        .route("/admin/journeys/{journey_id}/dry-run", post(dry_run_journey))
        .route("/v1/players/{player_id}/journeys", get(player_journeys))
        .route("/v1/players/{player_id}/triggers", get(player_fires))
}

fn error(kind: Kind, e: DefError) -> ApiError {
    match e {
        DefError::Invalid { field, message } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, invalid_code(kind), message).with_field(field)
        }
        DefError::NotFound => ApiError::not_found(kind.noun),
        DefError::Exists(..) => {
            let code = if kind.noun == "trigger" { "trigger_exists" } else { "journey_exists" };
            ApiError::new(StatusCode::CONFLICT, code, e.to_string())
        }
        DefError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "four_eyes", m),
        DefError::Internal(e) => ApiError::internal(format!("{e:#}")),
    }
}

fn invalid_code(kind: Kind) -> &'static str {
    if kind.noun == "trigger" { "invalid_trigger" } else { "invalid_journey" }
}

/// A trigger or journey with its versions.
async fn shown(state: &AppState, kind: Kind, head: &defs::Head) -> Result<Value, ApiError> {
    let mut conn = state.db.pool.acquire().await.map_err(ApiError::internal)?;
    let versions = defs::versions(&mut conn, kind, &head.id).await.map_err(ApiError::internal)?;
    let mut v = json!(head);
    v["versions"] = json!(versions);
    if kind.noun == "journey" {
        v["paused"] = json!(journeys::is_paused(&mut conn, &head.id).await.map_err(ApiError::internal)?);
        v["note"] = json!("players finish the version they entered; the active version takes new entrants");
    }
    Ok(v)
}

async fn list(state: &AppState, kind: Kind, brand: &str) -> Result<Json<Value>, ApiError> {
    let mut conn = state.db.pool.acquire().await.map_err(ApiError::internal)?;
    let all = defs::of_brand(&mut conn, kind, brand).await.map_err(ApiError::internal)?;
    let key = if kind.noun == "trigger" { "triggers" } else { "journeys" };
    Ok(Json(json!({ key: all })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Activation {
    version: i64,
}

async fn activate(
    state: &AppState,
    kind: Kind,
    principal: &crate::auth::Principal,
    id: &str,
    version: Option<i64>,
) -> Result<Json<Value>, ApiError> {
    let head = defs::activate(&state.db, kind, principal, id, version, state.clock().now_ms())
        .await
        .map_err(|e| error(kind, e))?;
    Ok(Json(shown(state, kind, &head).await?))
}

#[utoipa::path(get, path = "/admin/triggers", tag = "engage", params(("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), responses((status = 200, description = "the brand's triggers", body = Object), crate::api::openapi::Errors))]
async fn list_triggers(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Query(q): Query<BrandQuery>,
) -> Result<Json<Value>, ApiError> {
    list(&state, defs::TRIGGERS, &brand_of(&principal, &q)?).await
}

#[utoipa::path(post, path = "/admin/triggers", tag = "engage", params(("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), request_body(content = Object, description = "a trigger definition: {name, on, rule?, conditions?, action, cooldown_minutes?, dedup_minutes?, dedup_by?, active_from?, active_until?, max_event_age_minutes?, sensitive?}"), responses((status = 201, description = "the trigger with its versions; a marketing trigger is inactive until activated", body = Object), crate::api::openapi::Errors))]
async fn create_trigger(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR }>,
    Query(q): Query<BrandQuery>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let def: triggers::TriggerDef = json_body(&body, "invalid_trigger", None)?;
    let brand = brand_of(&principal, &BrandQuery { brand_id: def.brand_id.clone().or(q.brand_id) })?;
    let (head, _) =
        triggers::save(&state, &principal, &brand, None, &def).await.map_err(|e| error(defs::TRIGGERS, e))?;
    Ok((StatusCode::CREATED, Json(shown(&state, defs::TRIGGERS, &head).await?)))
}

#[utoipa::path(get, path = "/admin/triggers/{trigger_id}", tag = "engage", params(("trigger_id" = String, Path)), responses((status = 200, description = "the trigger with every version", body = Object), crate::api::openapi::Errors))]
async fn show_trigger(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let head = defs::visible(&state.db, defs::TRIGGERS, &principal, &id)
        .await
        .map_err(|e| error(defs::TRIGGERS, e))?;
    Ok(Json(shown(&state, defs::TRIGGERS, &head).await?))
}

#[utoipa::path(put, path = "/admin/triggers/{trigger_id}", tag = "engage", params(("trigger_id" = String, Path)), request_body(content = Object, description = "the whole definition; its name stays"), responses((status = 200, description = "the trigger with its new version; a marketing version runs once activated, the active one meanwhile", body = Object), crate::api::openapi::Errors))]
async fn update_trigger(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR }>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let head = defs::visible(&state.db, defs::TRIGGERS, &principal, &id)
        .await
        .map_err(|e| error(defs::TRIGGERS, e))?;
    let def: triggers::TriggerDef = json_body(&body, "invalid_trigger", None)?;
    let (head, _) = triggers::save(&state, &principal, &head.brand_id.clone(), Some(&head), &def)
        .await
        .map_err(|e| error(defs::TRIGGERS, e))?;
    Ok(Json(shown(&state, defs::TRIGGERS, &head).await?))
}

#[utoipa::path(post, path = "/admin/triggers/{trigger_id}/activate", tag = "engage", params(("trigger_id" = String, Path)), request_body(content = Object, description = "{version}"), responses((status = 200, description = "the trigger, that version running", body = Object), crate::api::openapi::Errors))]
async fn activate_trigger(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE }>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let a: Activation = json_body(&body, "invalid_trigger", None)?;
    activate(&state, defs::TRIGGERS, &principal, &id, Some(a.version)).await
}

#[utoipa::path(post, path = "/admin/triggers/{trigger_id}/deactivate", tag = "engage", params(("trigger_id" = String, Path)), responses((status = 200, description = "the trigger, inactive", body = Object), crate::api::openapi::Errors))]
async fn deactivate_trigger(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    activate(&state, defs::TRIGGERS, &principal, &id, None).await
}

#[utoipa::path(get, path = "/admin/triggers/{trigger_id}/stats", tag = "engage", params(("trigger_id" = String, Path)), responses((status = 200, description = "fired, suppressed by reason, deduplicated, cooling down, failed; by version", body = Object), crate::api::openapi::Errors))]
async fn trigger_stats(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let head = defs::visible(&state.db, defs::TRIGGERS, &principal, &id)
        .await
        .map_err(|e| error(defs::TRIGGERS, e))?;
    let mut v = triggers::stats(&state.db, &head.id).await.map_err(ApiError::internal)?;
    v["trigger_id"] = json!(head.id);
    Ok(Json(v))
}

#[utoipa::path(post, path = "/admin/triggers/{trigger_id}/dry-run", tag = "engage", params(("trigger_id" = String, Path)), request_body(content = Object, description = "{player_id, version? (default the latest), events? (default the player's latest recorded events)}"), responses((status = 200, description = "per event: whether it would fire, the rule's decision, what the gate would answer; nothing written or sent", body = Object), crate::api::openapi::Errors))]
async fn dry_run_trigger(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE }>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let head = defs::visible(&state.db, defs::TRIGGERS, &principal, &id)
        .await
        .map_err(|e| error(defs::TRIGGERS, e))?;
    let req: dry_run::Request = json_body(&body, "invalid_trigger", None)?;
    dry_run::trigger(&state, &head, &req).await.map(Json).map_err(|e| error(defs::TRIGGERS, e))
}

#[utoipa::path(get, path = "/admin/journeys", tag = "engage", params(("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), responses((status = 200, description = "the brand's journeys", body = Object), crate::api::openapi::Errors))]
async fn list_journeys(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Query(q): Query<BrandQuery>,
) -> Result<Json<Value>, ApiError> {
    list(&state, defs::JOURNEYS, &brand_of(&principal, &q)?).await
}

#[utoipa::path(post, path = "/admin/journeys", tag = "engage", params(("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), request_body(content = Object, description = "a journey definition: {name, start, nodes, entry?, exit_on?}"), responses((status = 201, description = "the journey with its versions, inactive until activated", body = Object), crate::api::openapi::Errors))]
async fn create_journey(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR }>,
    Query(q): Query<BrandQuery>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let def: journeys::JourneyDef = json_body(&body, "invalid_journey", None)?;
    let brand = brand_of(&principal, &BrandQuery { brand_id: def.brand_id.clone().or(q.brand_id) })?;
    let (head, _) =
        journeys::save(&state, &principal, &brand, None, &def).await.map_err(|e| error(defs::JOURNEYS, e))?;
    Ok((StatusCode::CREATED, Json(shown(&state, defs::JOURNEYS, &head).await?)))
}

#[utoipa::path(get, path = "/admin/journeys/{journey_id}", tag = "engage", params(("journey_id" = String, Path)), responses((status = 200, description = "the journey with every version", body = Object), crate::api::openapi::Errors))]
async fn show_journey(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let head = defs::visible(&state.db, defs::JOURNEYS, &principal, &id)
        .await
        .map_err(|e| error(defs::JOURNEYS, e))?;
    Ok(Json(shown(&state, defs::JOURNEYS, &head).await?))
}

#[utoipa::path(put, path = "/admin/journeys/{journey_id}", tag = "engage", params(("journey_id" = String, Path)), request_body(content = Object, description = "the whole definition; its name stays"), responses((status = 200, description = "the journey with its new version: once activated it takes new entrants; players in flight finish theirs", body = Object), crate::api::openapi::Errors))]
async fn update_journey(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR }>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let head = defs::visible(&state.db, defs::JOURNEYS, &principal, &id)
        .await
        .map_err(|e| error(defs::JOURNEYS, e))?;
    let def: journeys::JourneyDef = json_body(&body, "invalid_journey", None)?;
    let (head, _) = journeys::save(&state, &principal, &head.brand_id.clone(), Some(&head), &def)
        .await
        .map_err(|e| error(defs::JOURNEYS, e))?;
    Ok(Json(shown(&state, defs::JOURNEYS, &head).await?))
}

#[utoipa::path(post, path = "/admin/journeys/{journey_id}/activate", tag = "engage", params(("journey_id" = String, Path)), request_body(content = Object, description = "{version}"), responses((status = 200, description = "the journey, that version taking new entrants", body = Object), crate::api::openapi::Errors))]
async fn activate_journey(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE }>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let a: Activation = json_body(&body, "invalid_journey", None)?;
    activate(&state, defs::JOURNEYS, &principal, &id, Some(a.version)).await
}

#[utoipa::path(post, path = "/admin/journeys/{journey_id}/deactivate", tag = "engage", params(("journey_id" = String, Path)), responses((status = 200, description = "the journey, taking no new entrants (players in flight go on)", body = Object), crate::api::openapi::Errors))]
async fn deactivate_journey(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    activate(&state, defs::JOURNEYS, &principal, &id, None).await
}

async fn pause(
    state: &AppState,
    principal: &crate::auth::Principal,
    id: &str,
    paused: bool,
) -> Result<Json<Value>, ApiError> {
    journeys::set_paused(&state.db, principal, id, paused, state.clock().now_ms())
        .await
        .map_err(|e| error(defs::JOURNEYS, e))?;
    let head = defs::visible(&state.db, defs::JOURNEYS, principal, id)
        .await
        .map_err(|e| error(defs::JOURNEYS, e))?;
    Ok(Json(shown(state, defs::JOURNEYS, &head).await?))
}

#[utoipa::path(post, path = "/admin/journeys/{journey_id}/pause", tag = "engage", params(("journey_id" = String, Path)), responses((status = 200, description = "the journey, paused: its players stay where they are, no step runs, no one enters", body = Object), crate::api::openapi::Errors))]
async fn pause_journey(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    pause(&state, &principal, &id, true).await
}

#[utoipa::path(post, path = "/admin/journeys/{journey_id}/resume", tag = "engage", params(("journey_id" = String, Path)), responses((status = 200, description = "the journey, running again: steps that came due meanwhile run now", body = Object), crate::api::openapi::Errors))]
async fn resume_journey(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    pause(&state, &principal, &id, false).await
}

#[utoipa::path(get, path = "/admin/journeys/{journey_id}/stats", tag = "engage", params(("journey_id" = String, Path)), responses((status = 200, description = "entered by version, players at each node, ended by reason, sends by status and suppressed by reason", body = Object), crate::api::openapi::Errors))]
async fn journey_stats(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let head = defs::visible(&state.db, defs::JOURNEYS, &principal, &id)
        .await
        .map_err(|e| error(defs::JOURNEYS, e))?;
    let mut v = journeys::stats(&state.db, &head.id).await.map_err(ApiError::internal)?;
    v["journey_id"] = json!(head.id);
    Ok(Json(v))
}

#[utoipa::path(post, path = "/admin/journeys/{journey_id}/dry-run", tag = "engage", params(("journey_id" = String, Path)), request_body(content = Object, description = "{player_id, version? (default the latest), events? (events that arrive while waiting)}"), responses((status = 200, description = "the path the player would take: each step, what it would send and what the gate would answer; nothing written or sent", body = Object), crate::api::openapi::Errors))]
async fn dry_run_journey(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE }>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let head = defs::visible(&state.db, defs::JOURNEYS, &principal, &id)
        .await
        .map_err(|e| error(defs::JOURNEYS, e))?;
    let req: dry_run::Request = json_body(&body, "invalid_journey", None)?;
    dry_run::journey(&state, &head, &req).await.map(Json).map_err(|e| error(defs::JOURNEYS, e))
}

#[utoipa::path(get, path = "/v1/players/{player_id}/journeys", tag = "engage", params(("player_id" = String, Path), ("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), responses((status = 200, description = "the player's journeys: where they are, since when, what comes next, each step taken", body = Object), crate::api::openapi::Errors))]
async fn player_journeys(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM | MARKETING | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Path(player): Path<String>,
    Query(q): Query<BrandQuery>,
) -> Result<Json<Value>, ApiError> {
    let brand = brand_of(&principal, &q)?;
    let runs = journeys::of_player(&state.db, &brand, &player).await.map_err(ApiError::internal)?;
    Ok(Json(json!({"player_id": player, "journeys": runs})))
}

#[utoipa::path(get, path = "/v1/players/{player_id}/triggers", tag = "engage", params(("player_id" = String, Path), ("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), responses((status = 200, description = "what the brand's triggers did with the player's events, newest first: outcome, reason, decision, delivery or journey run", body = Object), crate::api::openapi::Errors))]
async fn player_fires(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM | MARKETING | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Path(player): Path<String>,
    Query(q): Query<BrandQuery>,
) -> Result<Json<Value>, ApiError> {
    let brand = brand_of(&principal, &q)?;
    let fires =
        triggers::fires_of_player(&state.db, &brand, &player, 200).await.map_err(ApiError::internal)?;
    Ok(Json(json!({"player_id": player, "fires": fires})))
}

/// This module's part of the API document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list_triggers,
    create_trigger,
    show_trigger,
    update_trigger,
    activate_trigger,
    deactivate_trigger,
    trigger_stats,
    dry_run_trigger,
    list_journeys,
    create_journey,
    show_journey,
    update_journey,
    activate_journey,
    deactivate_journey,
    pause_journey,
    resume_journey,
    journey_stats,
    dry_run_journey,
    player_journeys,
    player_fires
))]
pub(super) struct Doc;
