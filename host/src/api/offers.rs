//! Offers and bonuses: offer templates through the admin API (marketing and operator write; compliance,
//! analyst and admin read), `POST /v1/offers/generate` and the offer's life (accept, decline, a
//! compliance approval above the high-value threshold), and what a player holds: their offers and
//! bonuses with terms, wagering and history.

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
use crate::defs::{self, DefError};
use crate::offers::service::{self, GenerateRequest, OfferError};
use crate::offers::templates::{self, OFFER_TEMPLATES, TemplateDef};
use crate::offers::{calls, ledger};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/offer-templates", get(list_templates).post(create_template))
        .route("/admin/offer-templates/{template_id}", get(show_template).put(update_template))
        .route("/admin/offers/{offer_id}/approve", post(approve))
        .route("/v1/offers/generate", post(generate))
        .route("/v1/offers/{offer_id}", get(show_offer))
        .route("/v1/offers/{offer_id}/accept", post(accept))
        .route("/v1/offers/{offer_id}/decline", post(decline))
        .route("/v1/players/{player_id}/offers", get(player_offers))
        .route("/v1/players/{player_id}/bonuses", get(player_bonuses))
        .route("/v1/bonuses/{bonus_id}", get(show_bonus))
}

fn template_error(e: DefError) -> ApiError {
    match e {
        DefError::Invalid { field, message } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_offer_template", message)
                .with_field(field)
        }
        DefError::NotFound => ApiError::not_found("offer template"),
        DefError::Exists(..) => ApiError::new(StatusCode::CONFLICT, "offer_template_exists", e.to_string()),
        DefError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "four_eyes", m),
        DefError::Internal(e) => ApiError::internal(format!("{e:#}")),
    }
}

impl From<OfferError> for ApiError {
    fn from(e: OfferError) -> Self {
        match e {
            OfferError::Invalid { field, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_offer_request", message)
                    .with_field(field)
            }
            OfferError::Profile(p) => p.into(),
            OfferError::Decision(d) => d.into(),
            OfferError::NotFound => ApiError::not_found("offer"),
            OfferError::State { code, message } => ApiError::new(StatusCode::CONFLICT, code, message),
            OfferError::FourEyes(m) => ApiError::new(StatusCode::FORBIDDEN, "four_eyes", m),
            OfferError::Internal(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}

async fn shown_template(state: &AppState, head: &defs::Head) -> Result<Value, ApiError> {
    let mut conn = state.db.pool.acquire().await.map_err(ApiError::internal)?;
    let versions = defs::versions(&mut conn, OFFER_TEMPLATES, &head.id).await.map_err(ApiError::internal)?;
    let mut v = json!(head);
    v["versions"] = json!(versions);
    Ok(v)
}

#[utoipa::path(get, path = "/admin/offer-templates", tag = "offers", params(("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), responses((status = 200, description = "the brand's offer templates", body = Object), crate::api::openapi::Errors))]
async fn list_templates(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Query(q): Query<BrandQuery>,
) -> Result<Json<Value>, ApiError> {
    let brand = brand_of(&principal, &q)?;
    let mut conn = state.db.pool.acquire().await.map_err(ApiError::internal)?;
    let all = defs::of_brand(&mut conn, OFFER_TEMPLATES, &brand).await.map_err(ApiError::internal)?;
    Ok(Json(json!({"offer_templates": all})))
}

#[utoipa::path(post, path = "/admin/offer-templates", tag = "offers", params(("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), request_body(content = Object, description = "a template: {name, kind, products, jurisdictions, bounds, cost?, terms?, conflict_group?, budget_daily_minor?, providers?}"), responses((status = 201, description = "the template with its versions, in use at once", body = Object), crate::api::openapi::Errors))]
async fn create_template(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR }>,
    Query(q): Query<BrandQuery>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let def: TemplateDef = json_body(&body, "invalid_offer_template", None)?;
    let brand = brand_of(&principal, &BrandQuery { brand_id: def.brand_id.clone().or(q.brand_id) })?;
    let (head, _) = templates::save(&state, &principal, &brand, None, &def).await.map_err(template_error)?;
    Ok((StatusCode::CREATED, Json(shown_template(&state, &head).await?)))
}

#[utoipa::path(get, path = "/admin/offer-templates/{template_id}", tag = "offers", params(("template_id" = String, Path)), responses((status = 200, description = "the template with every version", body = Object), crate::api::openapi::Errors))]
async fn show_template(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let head = defs::visible(&state.db, OFFER_TEMPLATES, &principal, &id).await.map_err(template_error)?;
    Ok(Json(shown_template(&state, &head).await?))
}

#[utoipa::path(put, path = "/admin/offer-templates/{template_id}", tag = "offers", params(("template_id" = String, Path)), request_body(content = Object, description = "the whole template; its name stays"), responses((status = 200, description = "the template with its new version, in use at once (offers made keep theirs)", body = Object), crate::api::openapi::Errors))]
async fn update_template(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR }>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let head = defs::visible(&state.db, OFFER_TEMPLATES, &principal, &id).await.map_err(template_error)?;
    let def: TemplateDef = json_body(&body, "invalid_offer_template", None)?;
    let (head, _) = templates::save(&state, &principal, &head.brand_id, Some(&head), &def)
        .await
        .map_err(template_error)?;
    Ok(Json(shown_template(&state, &head).await?))
}

#[utoipa::path(post, path = "/v1/offers/generate", tag = "offers", request_body(content = Object, description = "{player_id, brand_id?, context: {intent, channel}, constraints?: {max_cost_minor?, rg_safe? (default true)}, trace_id?}"), responses((status = 200, description = "{offer_id, state (issued, pending_approval or refused), template, params, expires_at, basis} — a refusal lists every reason", body = Object), crate::api::openapi::Errors))]
async fn generate(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM | OPERATOR }>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: GenerateRequest = json_body(&body, "invalid_offer_request", None)?;
    super::record_trace_id(req.trace_id.as_deref());
    let brand = brand_of(&principal, &BrandQuery { brand_id: req.brand_id.clone() })?;
    Ok(Json(service::generate(&state, &principal, &brand, &req).await?))
}

#[utoipa::path(get, path = "/v1/offers/{offer_id}", tag = "offers", params(("offer_id" = String, Path)), responses((status = 200, description = "the offer and its basis: the scorer's version and ranking, each host check with its figures", body = Object), crate::api::openapi::Errors))]
async fn show_offer(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM | OPERATOR | COMPLIANCE | MARKETING | ANALYST | ADMIN }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(service::visible(&state, &principal, &id).await?))
}

#[utoipa::path(post, path = "/v1/offers/{offer_id}/accept", tag = "offers", params(("offer_id" = String, Path)), responses((status = 201, description = "the bonus issued in the ledger (its grant is posted to the platform)", body = Object), (status = 200, description = "accepted before: the same bonus", body = Object), crate::api::openapi::Errors))]
async fn accept(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM }>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (new, bonus) = service::accept(&state, &principal, &id).await?;
    Ok((if new { StatusCode::CREATED } else { StatusCode::OK }, Json(bonus)))
}

#[utoipa::path(post, path = "/v1/offers/{offer_id}/decline", tag = "offers", params(("offer_id" = String, Path)), responses((status = 200, description = "the offer, declined", body = Object), crate::api::openapi::Errors))]
async fn decline(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(service::decline(&state, &principal, &id).await?))
}

#[utoipa::path(post, path = "/admin/offers/{offer_id}/approve", tag = "offers", params(("offer_id" = String, Path)), responses((status = 200, description = "the offer, issued", body = Object), crate::api::openapi::Errors))]
async fn approve(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ COMPLIANCE }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(service::approve(&state, &principal, &id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlayerQuery {
    brand_id: Option<String>,
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/players/{player_id}/offers", tag = "offers", params(("player_id" = String, Path), ("brand_id" = Option<String>, Query, description = "the brand, when the key has several"), ("limit" = Option<i64>, Query, description = "1 to 200 (default 50)")), responses((status = 200, description = "the player's offers, newest first", body = Object), crate::api::openapi::Errors))]
async fn player_offers(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Path(player): Path<String>,
    Query(q): Query<PlayerQuery>,
) -> Result<Json<Value>, ApiError> {
    let brand = brand_of(&principal, &BrandQuery { brand_id: q.brand_id })?;
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let offers = service::of_player(&state, &brand, &player, limit).await.map_err(ApiError::internal)?;
    Ok(Json(json!({"player_id": player, "offers": offers})))
}

#[utoipa::path(get, path = "/v1/players/{player_id}/bonuses", tag = "offers", params(("player_id" = String, Path), ("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), responses((status = 200, description = "each bonus: terms, wagering required, done and remaining, contribution per category, max bet, deadline, state, history and platform calls", body = Object), crate::api::openapi::Errors))]
async fn player_bonuses(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Path(player): Path<String>,
    Query(q): Query<BrandQuery>,
) -> Result<Json<Value>, ApiError> {
    let brand = brand_of(&principal, &q)?;
    let mut conn = state.db.pool.acquire().await.map_err(ApiError::internal)?;
    let bonuses = ledger::of_player(&mut conn, &brand, &player, false).await.map_err(ApiError::internal)?;
    let mut out = Vec::with_capacity(bonuses.len());
    for b in &bonuses {
        out.push(bonus_json(&mut conn, b).await?);
    }
    Ok(Json(json!({"player_id": player, "bonuses": out})))
}

async fn bonus_json(conn: &mut sqlx::AnyConnection, b: &ledger::Bonus) -> Result<Value, ApiError> {
    let mut v = ledger::shown(conn, b).await.map_err(ApiError::internal)?;
    v["platform_calls"] = json!(calls::of_bonus(conn, &b.bonus_id).await.map_err(ApiError::internal)?);
    Ok(v)
}

#[utoipa::path(get, path = "/v1/bonuses/{bonus_id}", tag = "offers", params(("bonus_id" = String, Path)), responses((status = 200, description = "the bonus with its terms, wagering, history and platform calls", body = Object), crate::api::openapi::Errors))]
async fn show_bonus(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut conn = state.db.pool.acquire().await.map_err(ApiError::internal)?;
    let b = ledger::get(&mut conn, &id)
        .await
        .map_err(ApiError::internal)?
        .filter(|b| principal.may_see_brand(&b.brand_id))
        .ok_or_else(|| ApiError::not_found("bonus"))?;
    Ok(Json(bonus_json(&mut conn, &b).await?))
}

/// This module's part of the API document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list_templates,
    create_template,
    show_template,
    update_template,
    generate,
    show_offer,
    accept,
    decline,
    approve,
    player_offers,
    player_bonuses,
    show_bonus
))]
pub(super) struct Doc;
