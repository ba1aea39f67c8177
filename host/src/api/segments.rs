//! Segments: defined per brand through the admin API (marketing and operator write; compliance, analyst
//! and admin read), their members (cursor pages, CSV for analysts), a player's memberships with the
//! decision behind each, and sweeps on demand.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::roles::{ADMIN, ANALYST, COMPLIANCE, MARKETING, OPERATOR, PLATFORM};
use super::extract::{Authorized, Path, Query, json_body};
use super::players::{BrandQuery, brand_of};
use super::{ApiError, AppState};
use crate::segments::{self, SegmentError, SegmentSpec, sweep};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/segments", get(list))
        .route("/v1/segments/{segment_id}", get(show))
        .route("/v1/segments/{segment_id}/members", get(members))
        .route("/v1/players/{player_id}/segments", get(of_player))
        .route("/admin/segments", post(create))
        .route("/admin/segments/{segment_id}", axum::routing::patch(update))
        .route("/admin/segments/{segment_id}/refresh", post(refresh))
        .route("/admin/segments/{segment_id}/sweeps", get(sweeps))
        .route("/admin/segments/{segment_id}/sweeps/{sweep_id}", get(show_sweep))
}

impl From<SegmentError> for ApiError {
    fn from(e: SegmentError) -> Self {
        match e {
            SegmentError::Invalid { field, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_segment", message).with_field(field)
            }
            SegmentError::NotFound => ApiError::not_found("segment"),
            SegmentError::Exists(_) => ApiError::new(StatusCode::CONFLICT, "segment_exists", e.to_string()),
            SegmentError::Internal(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}

/// A segment with its current members by jurisdiction.
fn with_counts(s: &segments::Segment, counts: &[(String, String, i64)]) -> Value {
    let by: serde_json::Map<String, Value> =
        counts.iter().filter(|(id, _, _)| *id == s.id).map(|(_, j, n)| (j.clone(), json!(n))).collect();
    let total: i64 = counts.iter().filter(|(id, _, _)| *id == s.id).map(|(_, _, n)| n).sum();
    let mut v = json!(s);
    v["members"] = json!({"total": total, "by_jurisdiction": by});
    v
}

#[utoipa::path(get, path = "/v1/segments", tag = "segments", params(("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), responses((status = 200, description = "the brand's segments with their members by jurisdiction", body = Object), crate::api::openapi::Errors))]
async fn list(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Query(q): Query<BrandQuery>,
) -> Result<Json<Value>, ApiError> {
    let brand = brand_of(&principal, &q)?;
    let mut conn = state.db.pool.acquire().await.map_err(ApiError::internal)?;
    let all = segments::of_brand(&mut conn, &brand).await.map_err(ApiError::internal)?;
    drop(conn);
    let counts = segments::counts(&state.db, &brand).await.map_err(ApiError::internal)?;
    Ok(Json(json!({"segments": all.iter().map(|s| with_counts(s, &counts)).collect::<Vec<_>>()})))
}

#[utoipa::path(get, path = "/v1/segments/{segment_id}", tag = "segments", params(("segment_id" = String, Path)), responses((status = 200, description = "the segment, its members by jurisdiction, its rule's bindings and its latest sweep", body = Object), crate::api::openapi::Errors))]
async fn show(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let s = segments::visible(&state.db, &principal, &id).await?;
    let counts = segments::counts(&state.db, &s.brand_id).await.map_err(ApiError::internal)?;
    let rules: Vec<Value> = state
        .registry
        .snapshot()
        .slot(&s.brand_id, crate::plugins::World::Segment, &s.name)
        .iter()
        .map(|(j, b)| {
            json!({"jurisdiction": j, "binding_id": b.binding_id, "plugin_id": b.plugin_id,
                             "name": b.name, "version": b.version})
        })
        .collect();
    let last = sweep::of_segment(&state.db, &s.id, 1).await.map_err(ApiError::internal)?;
    let mut v = with_counts(&s, &counts);
    v["rules"] = json!(rules);
    v["last_sweep"] = json!(last.first());
    Ok(Json(v))
}

#[utoipa::path(post, path = "/admin/segments", tag = "segments", params(("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), request_body(content = Object, description = "{name, description?, marketing? (default true), sweep_minutes? (5–60, default 15), brand_id?}"), responses((status = 201, description = "the segment; its first sweep is due at once", body = Object), crate::api::openapi::Errors))]
async fn create(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR }>,
    Query(q): Query<BrandQuery>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec: SegmentSpec = json_body(&body, "invalid_segment", None)?;
    let brand = brand_of(&principal, &BrandQuery { brand_id: spec.brand_id.clone().or(q.brand_id) })?;
    let s = segments::create(&state.db, &principal, &brand, &spec, state.clock().now_ms()).await?;
    Ok((StatusCode::CREATED, Json(json!(s))))
}

#[utoipa::path(patch, path = "/admin/segments/{segment_id}", tag = "segments", params(("segment_id" = String, Path)), request_body(content = Object, description = "{description?, marketing?, sweep_minutes?}"), responses((status = 200, description = "the segment", body = Object), crate::api::openapi::Errors))]
async fn update(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR }>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let spec: SegmentSpec = json_body(&body, "invalid_segment", None)?;
    Ok(Json(json!(segments::update(&state.db, &principal, &id, &spec, state.clock().now_ms()).await?)))
}

/// Longest page of members.
const MAX_PAGE: i64 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersQuery {
    /// The last player id of the previous page.
    cursor: Option<String>,
    limit: Option<i64>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

#[utoipa::path(get, path = "/v1/segments/{segment_id}/members", tag = "segments", params(("segment_id" = String, Path), ("cursor" = Option<String>, Query, description = "the next_cursor of the previous page"), ("limit" = Option<i64>, Query, description = "1–1000, default 100"), ("format" = Option<String>, Query, description = "json (default) or csv (also with Accept: text/csv)")), responses((status = 200, description = "current members in player-id order, with the decision behind each; next_cursor while more follow", body = Object), crate::api::openapi::Errors))]
async fn members(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Path(id): Path<String>,
    Query(q): Query<MembersQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit is 1 to {MAX_PAGE}"),
        )
        .with_field("limit"));
    }
    let csv = match q.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        None => headers
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.starts_with("text/csv")),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("format `{other}`: json or csv"),
            )
            .with_field("format"));
        }
    };
    let s = segments::visible(&state.db, &principal, &id).await?;
    let page = segments::members(&state.db, &s.id, q.cursor.as_deref().unwrap_or(""), limit)
        .await
        .map_err(ApiError::internal)?;
    let next = (page.len() as i64 == limit).then(|| page.last().map(|m| m.player_id.clone())).flatten();
    if csv {
        let mut out = String::from("player_id,jurisdiction,entered_at,plugin_id,via,score,reason\n");
        for m in &page {
            let cells = [
                m.player_id.clone(),
                m.jurisdiction.clone(),
                m.entered_at.to_string(),
                m.plugin_id.clone(),
                m.via.clone(),
                m.score.map(|s| s.to_string()).unwrap_or_default(),
                m.reason.clone().unwrap_or_default(),
            ];
            out.push_str(&cells.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(","));
            out.push('\n');
        }
        let mut response = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response();
        if let Some(next) = next
            && let Ok(v) = header::HeaderValue::from_str(&next)
        {
            response.headers_mut().insert("x-next-cursor", v);
        }
        return Ok(response);
    }
    Ok(Json(json!({"segment_id": s.id, "members": page, "next_cursor": next})).into_response())
}

/// A CSV cell (RFC 4180), with formula-leading characters neutralised for spreadsheets.
fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) && s.parse::<f64>().is_err() {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

#[utoipa::path(get, path = "/v1/players/{player_id}/segments", tag = "segments", params(("player_id" = String, Path), ("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), responses((status = 200, description = "the player's segments now, and past memberships, with the decision behind each", body = Object), crate::api::openapi::Errors))]
async fn of_player(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM | MARKETING | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Path(player): Path<String>,
    Query(q): Query<BrandQuery>,
) -> Result<Json<Value>, ApiError> {
    let brand = brand_of(&principal, &q)?;
    let all = segments::of_player(&state.db, &brand, &player, 500).await.map_err(ApiError::internal)?;
    let mut conn = state.db.pool.acquire().await.map_err(ApiError::internal)?;
    let names: std::collections::HashMap<String, String> = segments::of_brand(&mut conn, &brand)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|s| (s.id, s.name))
        .collect();
    drop(conn);
    let shown = |m: &segments::Membership| {
        let mut v = json!(m);
        v["segment"] = json!(names.get(&m.segment_id));
        v
    };
    let (current, past): (Vec<_>, Vec<_>) = all.iter().partition(|m| m.left_at.is_none());
    Ok(Json(json!({
        "player_id": player,
        "segments": current.into_iter().map(shown).collect::<Vec<_>>(),
        "history": past.into_iter().map(shown).collect::<Vec<_>>(),
    })))
}

#[utoipa::path(post, path = "/admin/segments/{segment_id}/refresh", tag = "segments", params(("segment_id" = String, Path)), responses((status = 202, description = "{sweep_id}: a sweep of the whole population is queued; GET …/sweeps/{sweep_id} shows it", body = Object), crate::api::openapi::Errors))]
async fn refresh(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR }>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let s = segments::visible(&state.db, &principal, &id).await?;
    let mut tx = state.db.begin_write().await.map_err(ApiError::internal)?;
    let sweep_id =
        sweep::request(&mut tx, &s.id, "request", &principal.holder).await.map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"sweep_id": sweep_id, "segment_id": s.id, "state": "queued"}))))
}

#[utoipa::path(get, path = "/admin/segments/{segment_id}/sweeps", tag = "segments", params(("segment_id" = String, Path)), responses((status = 200, description = "the segment's sweeps, newest first", body = Object), crate::api::openapi::Errors))]
async fn sweeps(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let s = segments::visible(&state.db, &principal, &id).await?;
    Ok(Json(json!({"sweeps": sweep::of_segment(&state.db, &s.id, 50).await.map_err(ApiError::internal)?})))
}

#[utoipa::path(get, path = "/admin/segments/{segment_id}/sweeps/{sweep_id}", tag = "segments", params(("segment_id" = String, Path), ("sweep_id" = String, Path)), responses((status = 200, description = "the sweep: state, progress and figures", body = Object), crate::api::openapi::Errors))]
async fn show_sweep(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ MARKETING | OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Path((id, sweep_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let s = segments::visible(&state.db, &principal, &id).await?;
    let found = sweep::get(&state.db, &sweep_id).await.map_err(ApiError::internal)?;
    let sweep = found.filter(|w| w.segment_id == s.id).ok_or_else(|| ApiError::not_found("sweep"))?;
    Ok(Json(json!(sweep)))
}

/// This module's part of the API document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, show, create, update, members, of_player, refresh, sweeps, show_sweep))]
pub(super) struct Doc;
