//! `/admin/keys` (admin: create, list, revoke), `/admin/audit` (admin, compliance) and
//! `/admin/set-aside-events` (events no consumer could apply). An admin key acts
//! only within its brands: a key or entry of another brand is "not found".

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::roles::{ADMIN, COMPLIANCE, OPERATOR};
use super::extract::{Authorized, Path, Query, json_body};
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::auth::keys;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/keys", get(list_keys).post(create_key))
        .route("/admin/keys/{id}", delete(revoke_key))
        .route("/admin/audit", get(audit_entries))
        .route("/admin/set-aside-events", get(set_aside_events))
}

/// `GET /admin/set-aside-events`: events a consumer could not apply and passed over, with the error,
/// newest first (admin, operator, compliance).
#[utoipa::path(get, path = "/admin/set-aside-events", tag = "admin", responses((status = 200, description = "events a consumer could not apply, with the error", body = Object), crate::api::openapi::Errors))]
async fn set_aside_events(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ ADMIN | OPERATOR | COMPLIANCE }>,
) -> Result<Json<Value>, ApiError> {
    let list = crate::bus::set_aside_list(&state.db, &principal.brands, 500)
        .await
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    Ok(Json(json!({ "events": list })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewKey {
    role: String,
    brands: Vec<String>,
    holder: String,
}

#[utoipa::path(post, path = "/admin/keys", tag = "admin", request_body(content = NewKey, description = "role: platform, operator, compliance, marketing, analyst or admin; the key is shown once"), responses((status = 201, description = "the new key", body = Object), crate::api::openapi::Errors))]
async fn create_key(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ ADMIN }>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let new: NewKey = json_body(&body, "invalid_key_request", None)?;
    let role: Role = new
        .role
        .parse()
        .map_err(|e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_key_request", e))?;
    if new.brands.is_empty() || new.holder.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_key_request",
            "a key needs brands and a holder",
        ));
    }
    if !principal.covers(&new.brands) {
        return Err(ApiError::not_found("brand"));
    }
    let (id, key) = keys::create(&state.db, &principal, role, &new.brands, new.holder.trim())
        .await
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": id, "key": key, "role": role.as_str(), "brands": new.brands, "holder": new.holder.trim()}),
        ),
    ))
}

#[utoipa::path(get, path = "/admin/keys", tag = "admin", responses((status = 200, description = "the API keys of the admin's brands", body = Object), crate::api::openapi::Errors))]
async fn list_keys(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ ADMIN }>,
) -> Result<Json<Value>, ApiError> {
    let all = keys::list(&state.db).await.map_err(ApiError::internal)?;
    let mine: Vec<_> = all.into_iter().filter(|k| principal.covers(&k.brands)).collect();
    Ok(Json(json!({"keys": mine})))
}

#[utoipa::path(delete, path = "/admin/keys/{id}", tag = "admin", params(("id" = String, Path)), responses((status = 200, description = "revoked", body = Object), crate::api::openapi::Errors))]
async fn revoke_key(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ ADMIN }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let visible = keys::list(&state.db)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .any(|k| k.id == id && principal.covers(&k.brands));
    if !visible {
        return Err(ApiError::not_found("key"));
    }
    match keys::revoke(&state.db, &principal, &id).await.map_err(|e| ApiError::internal(format!("{e:#}")))? {
        Some(hash) => {
            state.principals.invalidate(&hash);
            Ok(Json(json!({"id": id, "status": "revoked"})))
        }
        None => Err(ApiError::not_found("active key")),
    }
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    #[serde(default)]
    after: i64,
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/admin/audit", tag = "admin", params(("after" = Option<i64>, Query, description = "entries after this seq"), ("limit" = Option<i64>, Query, description = "1 to 1000")), responses((status = 200, description = "audit entries of the key's brands, oldest first", body = Object), crate::api::openapi::Errors))]
async fn audit_entries(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ ADMIN | COMPLIANCE }>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = crate::audit::list(&state.db, q.after, limit).await.map_err(ApiError::internal)?;
    let next = entries.last().map(|e| e.seq);
    let mine: Vec<_> = entries.into_iter().filter(|e| principal.covers(&e.brands)).collect();
    Ok(Json(json!({"entries": mine, "next_after": next})))
}

/// This module's part of the API document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list_keys, create_key, revoke_key, audit_entries, set_aside_events))]
pub(super) struct Doc;
