//! The HTTP API (axum). Each module exposes `router()`; `app(state)` assembles them so tests can run the
//! whole thing. Errors are JSON `{"error": {code, message, field?}}` with a stable code; internal
//! details are logged, never sent.

mod admin;
pub mod codes;
mod decisions;
mod engage;
mod events;
pub mod extract;
mod impact;
mod messaging;
mod offers;
pub mod openapi;
mod packs;
mod players;
mod plugins;
mod segments;
mod templates;
mod unread;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use std::sync::Arc;

use crate::core::Core;

/// What every handler has: the core (the same one bus consumers and the CLI use) and the cache of API
/// keys seen.
#[derive(Clone)]
pub struct AppState {
    pub core: Arc<Core>,
    pub principals: crate::auth::PrincipalCache,
}

impl std::ops::Deref for AppState {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .route("/metrics", axum::routing::get(metrics))
        .route("/openapi.json", axum::routing::get(openapi::document))
        .merge(events::router())
        .merge(admin::router())
        .merge(plugins::router())
        .merge(decisions::router())
        .merge(templates::router())
        .merge(players::router())
        .merge(messaging::router())
        .merge(packs::router())
        .merge(segments::router())
        .merge(engage::router())
        .merge(offers::router())
        .merge(impact::router())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn(uri_limit))
        .layer(axum::middleware::from_fn(request_span))
        .layer(axum::middleware::from_fn(unread::close_unread))
        .with_state(state)
}

/// One span per request: method, path, status, and the caller's trace id — the `X-Trace-Id` header, or
/// the `trace_id` of the events or decision the body carries (the handler records it) — so every log
/// line of a request can be found from the platform's own trace.
async fn request_span(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        trace_id = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    if let Some(t) = request.headers().get("x-trace-id").and_then(|v| v.to_str().ok()) {
        span.record("trace_id", tracing::field::display(t));
    }
    async move {
        let response = next.run(request).await;
        tracing::Span::current().record("status", response.status().as_u16());
        tracing::debug!("answered");
        response
    }
    .instrument(span)
    .await
}

/// Names the caller's trace id in the request's span, once the body has shown it.
pub fn record_trace_id(trace_id: Option<&str>) {
    if let Some(t) = trace_id {
        tracing::Span::current().record("trace_id", tracing::field::display(t));
    }
}

/// Longest request target (path and query) the API reads.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// A request target longer than [`MAX_URI_BYTES`] is refused before routing, in the JSON shape. (Past
/// 64 KiB the HTTP server itself answers 414, with no body, before the API sees the request.)
async fn uri_limit(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let len = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is {len} bytes; at most {MAX_URI_BYTES}"),
        )
        .into_response();
    }
    next.run(request).await
}

/// Every error answer in the API's shape: what axum or a body extractor answers on its own — 405, 413,
/// a malformed multipart body, a JSON body of the wrong shape — becomes `{"error": {code, message}}`
/// with a stable code (its headers, such as `Allow`, kept).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let mut message = String::from_utf8_lossy(&text).trim().to_string();
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or("error").to_lowercase();
    }
    let code = match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "unprocessable_body",
        431 => "headers_too_large",
        500..=599 => "internal",
        _ => "bad_request",
    };
    if status.is_server_error() {
        tracing::error!(%status, %message, "an error answered outside the handlers");
        message = "internal error".into();
    }
    let error = ApiError::new(status, code, message).into_response();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts
        .headers
        .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    Response::from_parts(parts, error.into_body())
}

/// `GET /healthz`: liveness.
#[utoipa::path(get, path = "/healthz", tag = "meta", security(()),
    responses((status = 200, description = "alive", body = Object)))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /metrics`: Prometheus text; no player data in it, so no key is asked for (like /healthz).
#[utoipa::path(get, path = "/metrics", tag = "meta", security(()),
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String), openapi::Errors))]
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> Result<Response, ApiError> {
    let depth = crate::store::deliveries::depth(&state.db).await.map_err(ApiError::internal)?;
    let set_aside = crate::bus::set_aside_counts(&state.db).await.map_err(ApiError::internal)?;
    let text = state.delivery.metrics.render(&depth, &set_aside);
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        debug_assert!(codes::known(code), "error code `{code}` is not in api::codes::CODES");
        ApiError { status, code, message: message.into(), field: None }
    }

    /// The same error, naming the request field it is about.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: String) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    /// Logs the cause; the client only learns that it was on our side.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        let text = e.to_string();
        // SQLite's one write lock stayed taken past the busy timeout (many writers at once, a long
        // batch): nothing is wrong with the request, and trying again later works.
        if crate::store::is_busy(&text) {
            tracing::warn!(error = %text, "database busy");
            return Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "the database is busy; try again");
        }
        tracing::error!(error = %text, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }

    pub fn body(&self) -> serde_json::Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(f) = &self.field {
            e["field"] = json!(f);
        }
        json!({ "error": e })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
