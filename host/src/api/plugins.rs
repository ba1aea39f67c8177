//! The plugin registry over HTTP: uploads (operator), compliance keys (admin), approvals (compliance).

use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::roles::{ADMIN, ANALYST, COMPLIANCE, OPERATOR};
use super::extract::{Authorized, Path, json_body};
use super::{ApiError, AppState};
use crate::plugins::registry::{MAX_COMPONENT_BYTES, RegistryError, Uploaded};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/plugins",
            get(list).post(upload).layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES + (1 << 20))),
        )
        .route("/admin/plugins/{id}", get(show))
        .route("/admin/plugins/{id}/approvals", post(approve))
        .route("/admin/plugins/{id}/approvals/{approval_id}", delete(revoke_approval))
        .route("/admin/bindings", get(list_bindings).post(bind))
        .route("/admin/bindings/rollback", post(rollback))
        .route("/admin/signing-keys", post(register_signing_key))
        .route("/admin/signing-keys/{id}", delete(revoke_signing_key))
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let (status, code) = match &e {
            RegistryError::Manifest(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_manifest"),
            RegistryError::Plugin(p) => (StatusCode::UNPROCESSABLE_ENTITY, p.code()),
            RegistryError::WorldMismatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "wrong_world"),
            RegistryError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            RegistryError::VersionTaken { .. } => (StatusCode::CONFLICT, "version_exists"),
            RegistryError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            RegistryError::FourEyes(_) => (StatusCode::FORBIDDEN, "four_eyes"),
            RegistryError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            RegistryError::BadSignature => (StatusCode::UNPROCESSABLE_ENTITY, "bad_signature"),
            RegistryError::KeyRevoked => (StatusCode::FORBIDDEN, "key_revoked"),
            RegistryError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            RegistryError::Internal(e) => return ApiError::internal(format!("{e:#}")),
        };
        let err = ApiError::new(status, code, e.to_string());
        match &e {
            RegistryError::Manifest(m) => err.with_field(m.field),
            _ => err,
        }
    }
}

fn bad_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_upload", message)
}

/// `multipart/form-data` with a `manifest` part (JSON) and a `component` part (the .wasm bytes).
#[utoipa::path(post, path = "/admin/plugins", tag = "plugins", request_body(content_type = "multipart/form-data", description = "parts `manifest` (JSON) and `component` (the .wasm bytes)"), responses((status = 201, description = "the new version (200: the same bytes uploaded before)", body = Object), crate::api::openapi::Errors))]
async fn upload(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ OPERATOR }>,
    mut form: Multipart,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (mut manifest, mut component) = (None, None);
    while let Some(field) = form.next_field().await.map_err(|e| bad_request(e.to_string()))? {
        match field.name() {
            Some("manifest") => manifest = Some(field.bytes().await.map_err(|e| bad_request(e.to_string()))?),
            Some("component") => {
                component = Some(field.bytes().await.map_err(|e| bad_request(e.to_string()))?)
            }
            other => {
                return Err(bad_request(format!(
                    "unexpected part {other:?}: send `manifest` and `component`"
                )));
            }
        }
    }
    let (Some(manifest), Some(component)) = (manifest, component) else {
        return Err(bad_request("send a `manifest` part and a `component` part".into()));
    };
    Ok(match state.registry.upload(&principal, &manifest, &component).await? {
        Uploaded::Created(v) => (StatusCode::CREATED, Json(json!(v))),
        Uploaded::Existing(v) => (StatusCode::OK, Json(json!(v))),
    })
}

#[utoipa::path(get, path = "/admin/plugins", tag = "plugins", responses((status = 200, description = "plugin versions", body = Object), crate::api::openapi::Errors))]
async fn list(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ OPERATOR | COMPLIANCE | ADMIN }>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"plugins": state.registry.list(&principal).await?})))
}

#[utoipa::path(get, path = "/admin/plugins/{id}", tag = "plugins", params(("id" = String, Path)), responses((status = 200, description = "a version, its approvals, the signing payload", body = Object), crate::api::openapi::Errors))]
async fn show(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ OPERATOR | COMPLIANCE | ADMIN }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let v = state.registry.get(&id).await?.filter(|v| principal.covers(&v.manifest.brands));
    Ok(Json(json!(v.ok_or(RegistryError::NotFound("plugin version"))?)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Approval {
    signing_key_id: String,
    signature: String,
}

#[utoipa::path(post, path = "/admin/plugins/{id}/approvals", tag = "plugins", params(("id" = String, Path)), request_body(content = Approval), responses((status = 201, description = "the version with its approvals", body = Object), crate::api::openapi::Errors))]
async fn approve(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ COMPLIANCE }>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let a: Approval = json_body(&body, "invalid_approval", None)?;
    let v = state.registry.approve(&principal, &id, &a.signing_key_id, &a.signature).await?;
    Ok((StatusCode::CREATED, Json(json!(v))))
}

#[utoipa::path(delete, path = "/admin/plugins/{id}/approvals/{approval_id}", tag = "plugins", params(("id" = String, Path), ("approval_id" = String, Path)), responses((status = 200, description = "revoked", body = Object), crate::api::openapi::Errors))]
async fn revoke_approval(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ COMPLIANCE | ADMIN }>,
    Path((id, approval_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.registry.revoke_approval(&principal, &id, &approval_id).await?)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SigningKey {
    holder: String,
    public_key: String,
    brands: Vec<String>,
}

#[utoipa::path(post, path = "/admin/signing-keys", tag = "plugins", request_body(content = SigningKey), responses((status = 201, description = "the registered key", body = Object), crate::api::openapi::Errors))]
async fn register_signing_key(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ ADMIN }>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let k: SigningKey = json_body(&body, "invalid_manifest", None)?;
    let id = state.registry.register_signing_key(&principal, &k.holder, &k.public_key, &k.brands).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id, "holder": k.holder.trim(), "brands": k.brands}))))
}

#[utoipa::path(delete, path = "/admin/signing-keys/{id}", tag = "plugins", params(("id" = String, Path)), responses((status = 200, description = "revoked", body = Object), crate::api::openapi::Errors))]
async fn revoke_signing_key(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ ADMIN }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.registry.revoke_signing_key(&principal, &id).await?;
    Ok(Json(json!({"id": id, "status": "revoked"})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBinding {
    brand_id: String,
    /// A jurisdiction, or "*" for the brand-wide default.
    jurisdiction: String,
    plugin_id: String,
    /// A segment's name: the version becomes that segment's rule (segment plugins only).
    segment: Option<String>,
    /// A named rule that triggers and journeys ask (`rule` in their definitions), with no segment
    /// behind it (segment plugins only).
    rule: Option<String>,
    #[serde(default)]
    config: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    limits: crate::plugins::registry::bindings::LimitOverrides,
}

#[utoipa::path(post, path = "/admin/bindings", tag = "plugins", request_body(content = Object, description = "{brand_id, jurisdiction, plugin_id, segment? | rule?, config?, limits?}"), responses((status = 201, description = "the binding, in force", body = Object), crate::api::openapi::Errors))]
async fn bind(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ OPERATOR }>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b: NewBinding = json_body(&body, "invalid_binding", None)?;
    // A jurisdiction no policy pack covers has no players to decide for: a typo, refused.
    if b.jurisdiction != "*" && state.policies.packs.current().for_jurisdiction(&b.jurisdiction).is_none() {
        let known = state.policies.packs.current().jurisdictions().join(", ");
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_binding",
            format!(
                "no policy pack covers `{}` (known: {known}, or `*` for the brand's default)",
                b.jurisdiction
            ),
        )
        .with_field("jurisdiction"));
    }
    if let Some(rule) = &b.rule
        && (b.segment.is_some() || !crate::segments::is_name(rule))
    {
        let message = "a rule is a name (a-z, 0-9, '-', '_'), given instead of a segment";
        return Err(
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_binding", message).with_field("rule")
        );
    }
    let slot = b.segment.clone().or(b.rule).unwrap_or_default();
    if b.segment.is_some() && principal.may_see_brand(&b.brand_id) {
        crate::segments::by_name(&state.db, &b.brand_id, &slot)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("segment").with_field("segment"))?;
    }
    let row = state
        .registry
        .bind(&principal, &b.brand_id, &b.jurisdiction, &slot, &b.plugin_id, b.config, b.limits)
        .await?;
    Ok((StatusCode::CREATED, Json(json!(row))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rollback {
    brand_id: String,
    jurisdiction: String,
    world: crate::plugins::World,
    /// The segment whose rule rolls back (segment world).
    segment: Option<String>,
    /// The named rule that rolls back (segment world).
    rule: Option<String>,
}

#[utoipa::path(post, path = "/admin/bindings/rollback", tag = "plugins", request_body(content = Object, description = "{brand_id, jurisdiction, world, segment? | rule?}"), responses((status = 200, description = "the binding now in force", body = Object), crate::api::openapi::Errors))]
async fn rollback(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ OPERATOR }>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let r: Rollback = json_body(&body, "invalid_binding", None)?;
    let slot = r.segment.or(r.rule).unwrap_or_default();
    Ok(Json(json!(state.registry.rollback(&principal, &r.brand_id, &r.jurisdiction, r.world, &slot).await?)))
}

#[utoipa::path(get, path = "/admin/bindings", tag = "plugins", responses((status = 200, description = "current bindings and history", body = Object), crate::api::openapi::Errors))]
async fn list_bindings(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
) -> Result<Json<Value>, ApiError> {
    let all = state.registry.bindings(&principal).await?;
    let (current, history): (Vec<_>, Vec<_>) = all.into_iter().partition(|b| b.replaced_at.is_none());
    let integrity_failures = state.registry.integrity_failures();
    Ok(Json(json!({"current": current, "history": history, "integrity_failures": integrity_failures})))
}

/// This module's part of the API document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    upload,
    list,
    show,
    approve,
    revoke_approval,
    list_bindings,
    bind,
    rollback,
    register_signing_key,
    revoke_signing_key
))]
pub(super) struct Doc;
