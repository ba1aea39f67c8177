//! Who is calling, as the HTTP layer reads it: the API key of `Authorization: Bearer KEY` becomes a
//! [`Principal`], and [`Authorized`] refuses a role the endpoint does not serve — both from the request's
//! head, so a caller is authenticated and authorised before any body is read.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::auth::Principal;

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer KEY`"))?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer KEY`"))?;
        let hash = crate::auth::keys::hash(key.trim());
        if let Some(p) = state.principals.get(&hash) {
            return Ok(p);
        }
        let principal = crate::auth::keys::lookup(&state.db, key.trim())
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))?;
        state.principals.insert(hash, principal.clone());
        Ok(principal)
    }
}

/// The roles an endpoint serves, as a set of bits: `Authorized<{ OPERATOR | ADMIN }>`.
pub mod roles {
    use crate::auth::Role;

    pub const PLATFORM: u8 = Role::Platform.bit();
    pub const OPERATOR: u8 = Role::Operator.bit();
    pub const COMPLIANCE: u8 = Role::Compliance.bit();
    pub const MARKETING: u8 = Role::Marketing.bit();
    pub const ANALYST: u8 = Role::Analyst.bit();
    pub const ADMIN: u8 = Role::Admin.bit();
}

/// A caller whose role is one of `ROLES`; any other is `403 forbidden`, before the body is read.
pub struct Authorized<const ROLES: u8>(pub Principal);

impl<const ROLES: u8> FromRequestParts<AppState> for Authorized<ROLES> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        if ROLES & principal.role.bit() == 0 {
            return Err(ApiError::forbidden(format!("role `{}` may not do this", principal.role.as_str())));
        }
        Ok(Authorized(principal))
    }
}

/// `axum::extract::Query` whose rejection is the API's error: `400 invalid_query`, naming the problem.
pub struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(ApiError::new(axum::http::StatusCode::BAD_REQUEST, "invalid_query", e.body_text())),
        }
    }
}

/// `axum::extract::Path` whose rejection is the API's error: `400 invalid_path` (e.g. not UTF-8).
pub struct Path<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => Err(ApiError::new(axum::http::StatusCode::BAD_REQUEST, "invalid_path", e.body_text())),
        }
    }
}

/// A body that must be JSON, of any shape (endpoints that look at it before deciding its type): not JSON
/// at all is `400 malformed_json`, as everywhere.
pub fn json_value(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not JSON: {e}"),
        )
    })
}

/// A JSON body, the same way on every endpoint: not JSON at all is `400 malformed_json`; JSON of the
/// wrong shape is `422` with the endpoint's own code, naming the field serde names (unknown or missing)
/// or else `field`.
pub fn json_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    code: &'static str,
    field: Option<&str>,
) -> Result<T, ApiError> {
    serde_json::from_value(json_value(body)?).map_err(|e| {
        let message = e.to_string();
        let named = message
            .strip_prefix("unknown field `")
            .or_else(|| message.strip_prefix("missing field `"))
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name.to_string());
        let error = ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, code, message);
        match named.or(field.map(str::to_string)) {
            Some(f) => error.with_field(f),
            None => error,
        }
    })
}
