//! `/admin/templates`: message templates per brand and locale (roles marketing and operator write;
//! compliance and admin read too), and a render preview with strict placeholders.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::roles::{ADMIN, COMPLIANCE, MARKETING, OPERATOR};
use super::extract::{Authorized, Path, Query, json_body};
use super::players::{BrandQuery, brand_of};
use super::{ApiError, AppState};
use crate::delivery::templates::{self, TemplateError, TemplateInput};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/templates", get(list))
        .route("/admin/templates/{template_id}/{locale}", put(put_template).delete(delete_template))
        .route("/admin/templates/{template_id}/render", post(render))
}

fn invalid(message: String, field: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_template", message).with_field(field)
}

fn check_ids(template_id: &str, locale: &str) -> Result<(), ApiError> {
    if template_id.is_empty()
        || template_id.len() > 64
        || !template_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(invalid(
            "a template id is 1 to 64 characters of a-z, 0-9, - and _".into(),
            "template_id",
        ));
    }
    if locale != "default" && !crate::events::is_bcp47(locale) {
        return Err(invalid(format!("`{locale}` is neither a BCP-47 locale nor `default`"), "locale"));
    }
    Ok(())
}

#[utoipa::path(put, path = "/admin/templates/{template_id}/{locale}", tag = "templates", params(("template_id" = String, Path), ("locale" = String, Path), ("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), request_body(content = TemplateInput), responses((status = 200, description = "the template", body = Object), crate::api::openapi::Errors))]
async fn put_template(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR }>,
    Path((template_id, locale)): Path<(String, String)>,
    Query(q): Query<BrandQuery>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let brand = brand_of(&principal, &q)?;
    check_ids(&template_id, &locale)?;
    let input: TemplateInput = json_body(&body, "invalid_template", Some("body"))?;
    let t = templates::put(&state.db, &principal, &brand, &template_id, &locale, &input)
        .await
        .map_err(|e| ApiError::internal(format!("{e:#}")))?
        .map_err(render_error)?;
    Ok(Json(json!(t)))
}

#[utoipa::path(get, path = "/admin/templates", tag = "templates", params(("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), responses((status = 200, description = "every locale of every template", body = Object), crate::api::openapi::Errors))]
async fn list(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE | ADMIN }>,
    Query(q): Query<BrandQuery>,
) -> Result<Json<Value>, ApiError> {
    let brand = brand_of(&principal, &q)?;
    Ok(Json(json!({"templates": templates::list(&state.db, &brand).await.map_err(ApiError::internal)?})))
}

#[utoipa::path(delete, path = "/admin/templates/{template_id}/{locale}", tag = "templates", params(("template_id" = String, Path), ("locale" = String, Path), ("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), responses((status = 200, description = "deleted", body = Object), crate::api::openapi::Errors))]
async fn delete_template(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR }>,
    Path((template_id, locale)): Path<(String, String)>,
    Query(q): Query<BrandQuery>,
) -> Result<Json<Value>, ApiError> {
    let brand = brand_of(&principal, &q)?;
    if !templates::delete(&state.db, &principal, &brand, &template_id, &locale)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::not_found("template"));
    }
    Ok(Json(json!({"template_id": template_id, "locale": locale, "status": "deleted"})))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RenderRequest {
    locale: String,
    #[serde(default)]
    personalization: BTreeMap<String, String>,
}

#[utoipa::path(post, path = "/admin/templates/{template_id}/render", tag = "templates", params(("template_id" = String, Path), ("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), request_body(content = RenderRequest), responses((status = 200, description = "the rendered subject and body", body = Object), crate::api::openapi::Errors))]
async fn render(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE | ADMIN }>,
    Path(template_id): Path<String>,
    Query(q): Query<BrandQuery>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let brand = brand_of(&principal, &q)?;
    let req: RenderRequest = json_body(&body, "invalid_template", Some("body"))?;
    let mut conn = state.db.pool.acquire().await.map_err(ApiError::internal)?;
    let rendered = templates::render(&mut conn, &brand, &template_id, &req.locale, &req.personalization)
        .await
        .map_err(|e| ApiError::internal(format!("{e:#}")))?
        .map_err(render_error)?;
    Ok(Json(json!(rendered)))
}

/// A template that cannot be rendered, as an API error (the send path says the same).
pub fn render_error(e: TemplateError) -> ApiError {
    match e {
        TemplateError::NotFound(_) => ApiError::not_found("template"),
        TemplateError::MissingVariable(v) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_variable",
            format!("personalization lacks `{v}`"),
        )
        .with_field(format!("personalization.{v}")),
        TemplateError::Invalid { message, field } => invalid(message, field),
        TemplateError::TooLarge { code, field, message } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).with_field(field)
        }
    }
}

/// This module's part of the API document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, put_template, delete_template, render))]
pub(super) struct Doc;
