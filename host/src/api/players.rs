//! `GET /v1/players/{id}`: the profile of §3.2 as of now. A key sees only its brands' players; another
//! brand's player is "not found", never "forbidden", so brands cannot probe each other.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::roles::{ADMIN, ANALYST, COMPLIANCE, MARKETING, PLATFORM};
use super::extract::{Authorized, Path, Query, json_body};
use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::profiles::{self, ProfileView};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/players/{player_id}", get(get_player).delete(erase_player))
        .route("/v1/players/{player_id}/consents", axum::routing::put(put_consents))
        .route("/v1/players/{player_id}/consents/history", get(consent_history))
}

#[derive(Debug, Deserialize)]
pub struct BrandQuery {
    /// Needed when the key covers several brands.
    pub brand_id: Option<String>,
}

/// The brand a request is about: the one named, or the key's only brand.
pub fn brand_of(principal: &Principal, q: &BrandQuery) -> Result<String, ApiError> {
    match (&q.brand_id, principal.brands.as_slice()) {
        (Some(b), _) if principal.may_see_brand(b) => Ok(b.clone()),
        // Another brand is "not found", whatever the route is about: nothing of it is shown.
        (Some(_), _) => Err(ApiError::not_found("brand")),
        (None, [only]) => Ok(only.clone()),
        (None, _) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "brand_required",
            "this key covers several brands: add ?brand_id=…",
        )),
    }
}

#[utoipa::path(get, path = "/v1/players/{player_id}", tag = "players", params(("player_id" = String, Path), ("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), responses((status = 200, description = "the profile as of now", body = Object), crate::api::openapi::Errors))]
async fn get_player(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM | MARKETING | ANALYST | ADMIN }>,
    Path(player_id): Path<String>,
    Query(q): Query<BrandQuery>,
) -> Result<Json<ProfileView>, ApiError> {
    let brand = brand_of(&principal, &q)?;
    let stored = state.profiles.current(&brand, &player_id).await?;
    Ok(Json(stored.at(&brand, &player_id, state.clock().now())))
}

impl From<profiles::ProfileError> for ApiError {
    fn from(e: profiles::ProfileError) -> Self {
        match e {
            profiles::ProfileError::NotFound => ApiError::not_found("player"),
            profiles::ProfileError::Behind => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "profile_behind", e.to_string())
            }
            profiles::ProfileError::Failed(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}

/// Does the brand have this player (any event of theirs)?
async fn known(state: &AppState, brand: &str, player: &str) -> Result<bool, ApiError> {
    let mut conn = state.db.pool.acquire().await.map_err(ApiError::internal)?;
    crate::store::events::player_known(&mut conn, brand, player).await.map_err(ApiError::internal)
}

/// `PUT /v1/players/{id}/consents`: the preference centre. Items not named keep their state.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentChange {
    #[serde(default)]
    pub channels: std::collections::BTreeMap<String, bool>,
    #[serde(default)]
    pub products: std::collections::BTreeMap<String, bool>,
    pub profiling: Option<bool>,
    pub source: Option<String>,
}

const CHANNELS: [&str; 5] = ["email", "sms", "push", "in_app", "phone"];
const PRODUCTS: [&str; 4] = ["casino", "sports", "poker", "bingo"];

#[utoipa::path(put, path = "/v1/players/{player_id}/consents", tag = "players", params(("player_id" = String, Path), ("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), request_body(content = ConsentChange, description = "channels and products by name (email, sms, push, in_app, phone; casino, sports, poker, bingo), profiling, the source"), responses((status = 200, description = "the consents in force", body = Object), crate::api::openapi::Errors))]
async fn put_consents(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM | ADMIN }>,
    Path(player_id): Path<String>,
    Query(q): Query<BrandQuery>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let brand = brand_of(&principal, &q)?;
    let change: ConsentChange = json_body(&body, "invalid_consents", None)?;
    let mut items: Vec<(&str, String, bool)> = Vec::new();
    for (scope, map, allowed) in
        [("channel", &change.channels, &CHANNELS[..]), ("product", &change.products, &PRODUCTS[..])]
    {
        for (name, granted) in map {
            if !allowed.contains(&name.as_str()) {
                let e = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_consents",
                    format!("unknown {scope} `{name}` (one of {})", allowed.join(", ")),
                )
                .with_field(format!("{scope}s.{name}"));
                return Err(e);
            }
            items.push((scope, name.clone(), *granted));
        }
    }
    if let Some(p) = change.profiling {
        items.push(("profiling", "profiling".into(), p));
    }
    if items.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_consents",
            "no consent to change",
        ));
    }
    let source = change.source.unwrap_or_else(|| "preference_centre".into());
    if source.is_empty() || source.len() > 64 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_consents",
            "source: 1 to 64 characters",
        ));
    }
    if !known(&state, &brand, &player_id).await? {
        return Err(ApiError::not_found("player"));
    }
    let version = crate::store::consents::record(&state.db, &brand, &player_id, &items, &source)
        .await
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    state.profiles.invalidate(&brand, &player_id);
    let history = consent_history_of(&state, &brand, &player_id).await?;
    let (current, _) = crate::store::consents::current(&history);
    Ok(Json(serde_json::json!({"version": version, "consents": current})))
}

async fn consent_history_of(
    state: &AppState,
    brand: &str,
    player: &str,
) -> Result<Vec<crate::store::consents::ConsentRecord>, ApiError> {
    let mut conn = state.db.pool.acquire().await.map_err(ApiError::internal)?;
    crate::store::consents::history(&mut conn, brand, player).await.map_err(ApiError::internal)
}

#[utoipa::path(get, path = "/v1/players/{player_id}/consents/history", tag = "players", params(("player_id" = String, Path), ("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), responses((status = 200, description = "every consent version", body = Object), crate::api::openapi::Errors))]
async fn consent_history(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM | MARKETING | COMPLIANCE | ADMIN }>,
    Path(player_id): Path<String>,
    Query(q): Query<BrandQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let brand = brand_of(&principal, &q)?;
    if !known(&state, &brand, &player_id).await? {
        return Err(ApiError::not_found("player"));
    }
    let history = consent_history_of(&state, &brand, &player_id).await?;
    Ok(Json(serde_json::json!({"player_id": player_id, "history": history})))
}

/// `DELETE /v1/players/{id}`: right to erasure.
#[utoipa::path(delete, path = "/v1/players/{player_id}", tag = "players", params(("player_id" = String, Path), ("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), responses((status = 200, description = "erased", body = Object), crate::api::openapi::Errors))]
async fn erase_player(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM | ADMIN }>,
    Path(player_id): Path<String>,
    Query(q): Query<BrandQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let brand = brand_of(&principal, &q)?;
    let erased = state.erase(&brand, &player_id).await.map_err(|e| ApiError::internal(format!("{e:#}")))?;
    if !erased {
        return Err(ApiError::not_found("player"));
    }
    state.profiles.invalidate(&brand, &player_id);
    Ok(Json(serde_json::json!({"status": "erased"})))
}

/// This module's part of the API document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(get_player, erase_player, put_consents, consent_history))]
pub(super) struct Doc;
