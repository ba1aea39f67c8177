//! The HTTP API (axum). Each module exposes `router()`; `app(state)` assembles them so tests can run the
//! whole thing. Errors are JSON `{"error": {code, message, field?}}` with a stable code; internal
//! details are logged, never sent.

mod admin;
mod decisions;
mod events;
mod messaging;
mod players;
mod plugins;
mod templates;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use std::sync::Arc;

use crate::bus::Bus;
use crate::profiles::ProfileCache;
use crate::store::Db;
use crate::store::contacts::ContactsKey;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub contacts_key: ContactsKey,
    pub bus: Arc<dyn Bus>,
    pub profiles: ProfileCache,
    pub appender: crate::store::events::Appender,
    pub principals: crate::auth::PrincipalCache,
    pub registry: Arc<crate::plugins::registry::Registry>,
    pub delivery: Arc<crate::delivery::Context>,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", axum::routing::get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", axum::routing::get(metrics))
        .merge(events::router())
        .merge(admin::router())
        .merge(plugins::router())
        .merge(decisions::router())
        .merge(templates::router())
        .merge(players::router())
        .merge(messaging::router())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(state)
}

/// `GET /metrics`: Prometheus text; no player data in it, so no key is asked for (like /healthz).
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
        tracing::error!(error = %e, "internal error");
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
