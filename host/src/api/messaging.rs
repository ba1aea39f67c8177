//! The send path and what follows it: `POST /v1/messaging/send` (§12, with a required
//! `X-Idempotency-Key`), `POST /v1/messaging/feedback` and signed provider webhooks
//! (`POST /v1/webhooks/{provider}`), `GET /v1/deliveries/{id}` (status history, reasons, basis) and the
//! in-app inbox. Every send goes through the policy gate before it is stored, and is stored before
//! anything leaves.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::roles::{ADMIN, ANALYST, COMPLIANCE, MARKETING, PLATFORM};
use super::extract::{Authorized, Path, Query, json_body};
use super::players::{BrandQuery, brand_of};
use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::delivery::feedback::{self, FeedbackEvent};
use crate::messaging::{SendError, SendRequest};
use crate::model::Channel;
use crate::policy::Priority;
use crate::store::deliveries::{self, Delivery, Status};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/messaging/send", post(send))
        .route("/v1/messaging/feedback", post(post_feedback))
        .route("/v1/webhooks/{provider}", post(webhook))
        .route("/v1/deliveries/{delivery_id}", get(get_delivery))
        .route("/v1/players/{player_id}/deliveries", get(player_deliveries))
        .route("/v1/players/{player_id}/inbox", get(inbox))
        .route("/v1/players/{player_id}/inbox/{delivery_id}/read", post(mark_read))
}

fn invalid(message: impl Into<String>, field: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_message", message).with_field(field)
}

/// The field a request's error is about: the one serde names (unknown or missing), else the first whose
/// value is of the wrong kind.
fn field_of(e: &serde_json::Error, doc: &Value) -> String {
    let m = e.to_string();
    if let Some(rest) = m.strip_prefix("unknown field `").or_else(|| m.strip_prefix("missing field `"))
        && let Some((name, _)) = rest.split_once('`')
    {
        return name.to_string();
    }
    let fits = |name: &str, v: &Value| match name {
        "channel" => serde_json::from_value::<Channel>(v.clone()).is_ok(),
        "personalization" => serde_json::from_value::<BTreeMap<String, String>>(v.clone()).is_ok(),
        "priority" => serde_json::from_value::<Priority>(v.clone()).is_ok(),
        "campaign_id" | "brand_id" => v.is_string() || v.is_null(),
        _ => v.is_string(),
    };
    const FIELDS: [&str; 8] = [
        "channel",
        "player_id",
        "template_id",
        "personalization",
        "frequency_policy_id",
        "priority",
        "campaign_id",
        "brand_id",
    ];
    FIELDS
        .into_iter()
        .find(|name| doc.get(name).is_some_and(|v| !fits(name, v)))
        .unwrap_or("body")
        .to_string()
}

/// What a send answers, the first time and every time its key comes again.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Accepted {
    delivery_id: String,
    status: Status,
    /// Why it waits or was refused, each with a stable code (`quiet_hours`, `cap_reached`, …).
    #[schema(value_type = Vec<Object>)]
    reasons: Value,
    /// When a DEFERRED message will go (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    deliver_after: Option<jiff::Timestamp>,
}

fn accepted(d: &Delivery) -> Response {
    let body = Accepted {
        delivery_id: d.delivery_id.clone(),
        status: d.status,
        reasons: d.reasons.clone(),
        deliver_after: (d.status == Status::Deferred)
            .then(|| d.next_attempt_at.and_then(|t| jiff::Timestamp::from_millisecond(t).ok()))
            .flatten(),
    };
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// The `X-Idempotency-Key` header, required.
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let bad = |code, message| Err(ApiError::new(StatusCode::BAD_REQUEST, code, message));
    // Present but not visible ASCII (e.g. UTF-8 bytes) is a wrong key, not a missing one.
    match headers.get("x-idempotency-key").map(|v| v.to_str().map(str::trim)) {
        None | Some(Ok("")) => bad("idempotency_key_required", "the X-Idempotency-Key header is required"),
        Some(Err(_)) => bad("idempotency_key_invalid", "X-Idempotency-Key: visible ASCII characters only"),
        Some(Ok(key)) if key.len() > 128 => {
            bad("idempotency_key_invalid", "X-Idempotency-Key: at most 128 characters")
        }
        Some(Ok(key)) => Ok(key.to_string()),
    }
}

#[utoipa::path(post, path = "/v1/messaging/send", tag = "messaging", params(("X-Idempotency-Key" = String, Header, description = "1 to 128 visible ASCII characters; the same key with the same request is the same delivery")), request_body(content = SendRequest), responses((status = 202, description = "the delivery: QUEUED, DEFERRED (with deliver_after) or SUPPRESSED, with its reasons", body = Accepted), crate::api::openapi::Errors))]
async fn send(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM | MARKETING }>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let doc = super::extract::json_value(&body)?;
    let mut req: SendRequest =
        serde_json::from_value(doc.clone()).map_err(|e| invalid(e.to_string(), &field_of(&e, &doc)))?;
    let brand = brand_of(&principal, &BrandQuery { brand_id: req.brand_id.take() })?;
    let delivery = crate::messaging::send(&state, &brand, &key, req).await?;
    Ok(accepted(&delivery))
}

impl From<SendError> for ApiError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Invalid { message, field } => invalid(message, field),
            SendError::Erased => {
                ApiError::new(StatusCode::GONE, "player_erased", e.to_string()).with_field("player_id")
            }
            SendError::Profile(p) => p.into(),
            SendError::UnknownTemplate { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_template", e.to_string())
                    .with_field("template_id")
            }
            SendError::Template(t) => super::templates::render_error(t),
            SendError::KeyConflict => key_conflict(),
            SendError::Internal(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}

fn key_conflict() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_conflict",
        "this X-Idempotency-Key was used for a different request",
    )
}

/// A delivery the caller may see, or 404 (another brand's delivery is "not found").
async fn visible(state: &AppState, principal: &Principal, delivery_id: &str) -> Result<Delivery, ApiError> {
    found(state, delivery_id, |d| principal.may_see_brand(&d.brand_id)).await
}

/// A delivery that passes `may_see`, or 404.
async fn found(
    state: &AppState,
    delivery_id: &str,
    may_see: impl Fn(&Delivery) -> bool,
) -> Result<Delivery, ApiError> {
    let mut conn = state.db.pool.acquire().await.map_err(ApiError::internal)?;
    deliveries::get(&mut conn, delivery_id)
        .await
        .map_err(ApiError::internal)?
        .filter(|d| may_see(d))
        .ok_or_else(|| ApiError::not_found("delivery"))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Feedback {
    delivery_id: String,
    event: FeedbackEvent,
    #[schema(value_type = String, format = DateTime)]
    occurred_at: jiff::Timestamp,
}

fn parse_feedback(body: &[u8]) -> Result<Feedback, ApiError> {
    json_body(body, "invalid_feedback", None)
}

async fn apply_feedback(
    state: &AppState,
    d: &Delivery,
    f: &Feedback,
    source: &str,
) -> Result<Json<Value>, ApiError> {
    let now = state.delivery.clock.now_ms();
    let applied = feedback::apply(&state.db, d, f.event, f.occurred_at.as_millisecond(), source, now)
        .await
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    if applied.consent_version.is_some() {
        state.profiles.invalidate(&d.brand_id, &d.player_id);
    }
    Ok(Json(json!(applied)))
}

#[utoipa::path(post, path = "/v1/messaging/feedback", tag = "messaging", request_body(content = Feedback), responses((status = 200, description = "the report applied (or a duplicate)", body = Object), crate::api::openapi::Errors))]
async fn post_feedback(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM }>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let f = parse_feedback(&body)?;
    let d = visible(&state, &principal, &f.delivery_id).await?;
    apply_feedback(&state, &d, &f, "api").await
}

/// How far a webhook's timestamp may be from our clock (a replay after this is refused).
const WEBHOOK_TOLERANCE_S: i64 = 300;

/// A provider's own report, signed like our calls to it; it may only speak of deliveries it carried.
#[utoipa::path(post, path = "/v1/webhooks/{provider}", tag = "messaging", params(("provider" = String, Path)), request_body(content = Object, description = "the provider's report, signed with X-Pitboss-Signature"), security(()), responses((status = 200, description = "the report applied", body = Object), crate::api::openapi::Errors))]
async fn webhook(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let providers = &state.delivery.settings.providers;
    let p = providers
        .push
        .iter()
        .chain(&providers.sms)
        .find(|p| p.name == provider)
        .ok_or_else(|| ApiError::not_found("provider"))?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (timestamp, signature) = (header("x-pitboss-timestamp"), header("x-pitboss-signature"));
    if !crate::delivery::channels::verify(&p.secret, timestamp, &body, signature) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "the webhook's signature does not verify",
        ));
    }
    let sent_at: i64 = timestamp.parse().unwrap_or(i64::MIN);
    if (state.delivery.clock.now().as_second() - sent_at).abs() > WEBHOOK_TOLERANCE_S {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "stale_webhook",
            format!("the webhook's timestamp is more than {WEBHOOK_TOLERANCE_S} s from now"),
        ));
    }
    let f = parse_feedback(&body)?;
    let d = found(&state, &f.delivery_id, |d| d.provider.as_deref() == Some(p.name.as_str())).await?;
    apply_feedback(&state, &d, &f, &format!("webhook:{}", p.name)).await
}

#[utoipa::path(get, path = "/v1/deliveries/{delivery_id}", tag = "messaging", params(("delivery_id" = String, Path)), responses((status = 200, description = "status, reasons, basis, attempts, history", body = Object), crate::api::openapi::Errors))]
async fn get_delivery(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM | MARKETING | COMPLIANCE | ANALYST | ADMIN }>,
    Path(delivery_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let d = visible(&state, &principal, &delivery_id).await?;
    let history = deliveries::history(&state.db, &delivery_id).await.map_err(ApiError::internal)?;
    let mut v = json!(d);
    v["history"] = json!(history);
    Ok(Json(v))
}

/// A player's latest deliveries (200), newest first, each with its status, reasons and basis.
#[utoipa::path(get, path = "/v1/players/{player_id}/deliveries", tag = "messaging", params(("player_id" = String, Path), ("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), responses((status = 200, description = "the player's latest deliveries", body = Object), crate::api::openapi::Errors))]
async fn player_deliveries(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM | MARKETING | COMPLIANCE | ANALYST | ADMIN }>,
    Path(player_id): Path<String>,
    Query(q): Query<BrandQuery>,
) -> Result<Json<Value>, ApiError> {
    let brand = brand_of(&principal, &q)?;
    state.profiles.current(&brand, &player_id).await?;
    let list =
        deliveries::for_player(&state.db, &brand, &player_id, false).await.map_err(ApiError::internal)?;
    Ok(Json(json!({"player_id": player_id, "deliveries": list})))
}

#[utoipa::path(get, path = "/v1/players/{player_id}/inbox", tag = "messaging", params(("player_id" = String, Path), ("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), responses((status = 200, description = "in-app messages", body = Object), crate::api::openapi::Errors))]
async fn inbox(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM }>,
    Path(player_id): Path<String>,
    Query(q): Query<BrandQuery>,
) -> Result<Json<Value>, ApiError> {
    let brand = brand_of(&principal, &q)?;
    state.profiles.current(&brand, &player_id).await?;
    let messages: Vec<Value> = deliveries::for_player(&state.db, &brand, &player_id, true)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|d| {
            let ts = |ms: Option<i64>| ms.and_then(|t| jiff::Timestamp::from_millisecond(t).ok());
            json!({"delivery_id": d.delivery_id, "template_id": d.template_id, "subject": d.subject, "body": d.body,
                   "sent_at": ts(Some(d.updated_at)), "read_at": ts(d.read_at)})
        })
        .collect();
    Ok(Json(json!({"player_id": player_id, "messages": messages})))
}

/// Marks an inbox message read: an `open`, recorded once (again, the first reading's time).
#[utoipa::path(post, path = "/v1/players/{player_id}/inbox/{delivery_id}/read", tag = "messaging", params(("player_id" = String, Path), ("delivery_id" = String, Path), ("brand_id" = Option<String>, Query, description = "the brand, when the key has several")), responses((status = 200, description = "read (an open)", body = Object), crate::api::openapi::Errors))]
async fn mark_read(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM }>,
    Path((player_id, delivery_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let d = visible(&state, &principal, &delivery_id).await?;
    if d.player_id != player_id
        || d.channel != "in_app"
        || !matches!(d.status, Status::Sent | Status::Delivered)
    {
        return Err(ApiError::not_found("inbox message"));
    }
    let read_at = d.read_at.unwrap_or_else(|| state.delivery.clock.now_ms());
    let f = Feedback {
        delivery_id,
        event: FeedbackEvent::Open,
        occurred_at: jiff::Timestamp::from_millisecond(read_at).map_err(ApiError::internal)?,
    };
    apply_feedback(&state, &d, &f, "inbox").await
}

/// This module's part of the API document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(send, post_feedback, webhook, get_delivery, player_deliveries, inbox, mark_read))]
pub(super) struct Doc;
