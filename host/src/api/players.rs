//! `GET /v1/players/{id}`: the profile of §3.2 as of now. A key sees only its brands' players; another
//! brand's player is "not found", never "forbidden", so brands cannot probe each other.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::auth::{Principal, Role};
use crate::profiles::{self, ProfileView};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/players/{player_id}", get(get_player))
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
        (Some(_), _) => Err(ApiError::not_found("player")),
        (None, [only]) => Ok(only.clone()),
        (None, _) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "brand_required",
            "this key covers several brands: add ?brand_id=…",
        )),
    }
}

async fn get_player(
    State(state): State<AppState>,
    principal: Principal,
    Path(player_id): Path<String>,
    Query(q): Query<BrandQuery>,
) -> Result<Json<ProfileView>, ApiError> {
    principal.require(&[Role::Platform, Role::Marketing, Role::Analyst, Role::Admin])?;
    let brand = brand_of(&principal, &q)?;
    let key = (brand.clone(), player_id.clone());
    let stored = match state.profiles.get(&key) {
        Some(p) => p,
        None => {
            let p = profiles::load(&state.db, &state.contacts_key, &brand, &player_id)
                .await
                .map_err(|e| ApiError::internal(format!("{e:#}")))?
                .ok_or_else(|| ApiError::not_found("player"))?;
            let p = std::sync::Arc::new(p);
            state.profiles.insert(key, p.clone());
            p
        }
    };
    Ok(Json(stored.at(&brand, &player_id, jiff::Timestamp::now())))
}
