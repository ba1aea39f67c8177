//! `POST /v1/events`: one event or a batch. 202 only once every event of the request is durably
//! committed; a batch is all or nothing.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::extract::Authorized;
use super::extract::roles::PLATFORM;
use super::{ApiError, AppState};
use crate::events::{self, FieldError, MAX_BATCH, ValidEvent};
use crate::store::events::{AppendError, Stored};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/events", post(post_events))
}

fn rejected(e: &FieldError) -> Value {
    json!({"code": e.code, "message": format!("{}: {}", if e.field.is_empty() { "event" } else { &e.field }, e.message), "field": e.field})
}

fn status_of(s: &Stored) -> Value {
    match s {
        Stored::Accepted { seq } => json!({"status": "accepted", "seq": seq}),
        Stored::Duplicate { seq } => json!({"status": "duplicate", "seq": seq}),
    }
}

#[utoipa::path(post, path = "/v1/events", tag = "events", request_body(content = Object, description = "one event (object) or a batch (array of 1 to 500); see docs/events.md"), responses((status = 202, description = "stored: a result per event", body = Object), crate::api::openapi::Errors))]
async fn post_events(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM }>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let doc = super::extract::json_value(&body)?;
    let (items, batch) = match doc {
        Value::Array(items) => (items, true),
        other => (vec![other], false),
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_batch_size",
            format!("a batch holds 1 to {MAX_BATCH} events, not {}", items.len()),
        ));
    }
    let now = state.clock().now();
    let checked: Vec<Result<ValidEvent, FieldError>> = items
        .iter()
        .map(|item| {
            let e = events::validate(item, now)?;
            if !principal.may_see_brand(&e.brand_id) {
                return Err(FieldError {
                    code: "brand_not_allowed",
                    field: "brand_id".into(),
                    message: format!("this key may not post events of brand `{}`", e.brand_id),
                });
            }
            state.admissible(&e)?;
            Ok(e)
        })
        .collect();
    if checked.iter().any(Result::is_err) {
        let code = |e: &FieldError| {
            if e.code == "brand_not_allowed" {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            }
        };
        if !batch {
            let e = checked.into_iter().next().and_then(Result::err).expect("one item");
            return Ok((code(&e), Json(json!({"error": rejected(&e)}))).into_response());
        }
        let results: Vec<Value> = checked
            .iter()
            .zip(&items)
            .enumerate()
            .map(|(index, (r, item))| match r {
                Ok(_) => json!({"index": index, "event_id": item.get("event_id"), "status": "not_stored"}),
                Err(e) => json!({"index": index, "event_id": item.get("event_id"), "status": "rejected", "error": rejected(e)}),
            })
            .collect();
        let rejected_count = checked.iter().filter(|r| r.is_err()).count();
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": {"code": "invalid_batch", "message": format!("{rejected_count} of {} events are invalid; nothing was stored", items.len())},
                "results": results,
            })),
        )
            .into_response());
    }
    let valid: Vec<ValidEvent> = checked.into_iter().map(|r| r.expect("checked")).collect();
    super::record_trace_id(valid.iter().find_map(|e| e.trace_id.as_deref()));
    let ids: Vec<(String, String)> =
        valid.iter().map(|e| (e.event.event_id.clone(), e.player_id.clone())).collect();
    // The field an error is about: `[3].event_id` in a batch, `event_id` alone.
    let item_field =
        |index: usize, name: &str| if batch { format!("[{index}].{name}") } else { name.to_string() };
    let stored = match state.append(valid).await {
        Ok(s) => s,
        Err(AppendError::Conflict { index, seq }) => {
            let message = format!(
                "event_id `{}` was already used (seq {seq}) for a different event; nothing was stored",
                ids[index].0
            );
            return Err(ApiError::new(StatusCode::CONFLICT, "event_id_conflict", message)
                .with_field(item_field(index, "event_id")));
        }
        Err(AppendError::Erased { index }) => {
            let message = format!(
                "player `{}` was erased; their events are not accepted; nothing was stored",
                ids[index].1
            );
            return Err(ApiError::new(StatusCode::GONE, "player_erased", message)
                .with_field(item_field(index, "player_id")));
        }
        Err(AppendError::Refused { index, error }) => {
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, error.code, error.message)
                .with_field(item_field(index, &error.field)));
        }
        Err(AppendError::Db(e)) => return Err(ApiError::internal(format!("{e:#}"))),
    };
    let results: Vec<Value> = ids
        .iter()
        .zip(&stored)
        .enumerate()
        .map(|(index, ((event_id, _), s))| {
            let mut v = status_of(s);
            v["event_id"] = json!(event_id);
            if batch {
                v["index"] = json!(index);
            }
            v
        })
        .collect();
    let body = if batch { json!({"results": results}) } else { results.into_iter().next().expect("one") };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// This module's part of the API document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(post_events))]
pub(super) struct Doc;
