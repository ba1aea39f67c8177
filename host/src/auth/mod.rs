//! Who is calling: API keys with a role and the brands they may touch. No endpoint is open; a key of
//! brand A sees nothing of brand B.

use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::api::{ApiError, AppState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Platform,
    Operator,
    Compliance,
    Marketing,
    Analyst,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Platform => "platform",
            Role::Operator => "operator",
            Role::Compliance => "compliance",
            Role::Marketing => "marketing",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "platform" => Role::Platform,
            "operator" => Role::Operator,
            "compliance" => Role::Compliance,
            "marketing" => Role::Marketing,
            "analyst" => Role::Analyst,
            "admin" => Role::Admin,
            _ => {
                return Err(format!(
                    "unknown role `{s}` (platform, operator, compliance, marketing, analyst, admin)"
                ));
            }
        })
    }
}

/// Keys recently seen, by hash: a request does not cost a database read for its key. Entries live
/// `PRINCIPAL_TTL`, which bounds how long a key revoked by another process keeps working.
pub type PrincipalCache = std::sync::Arc<moka::sync::Cache<String, Principal>>;

pub const PRINCIPAL_TTL: std::time::Duration = std::time::Duration::from_secs(10);

pub fn new_principal_cache() -> PrincipalCache {
    std::sync::Arc::new(moka::sync::Cache::builder().max_capacity(10_000).time_to_live(PRINCIPAL_TTL).build())
}

/// The caller, as its key says.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub role: Role,
    pub brands: Vec<String>,
    /// The person (or system) the key was issued to.
    pub holder: String,
}

impl Principal {
    /// May this key act on everything of every brand in `brands`?
    pub fn covers(&self, brands: &[String]) -> bool {
        brands.iter().all(|b| self.may_see_brand(b))
    }

    pub fn may_see_brand(&self, brand: &str) -> bool {
        self.brands.iter().any(|b| b == brand)
    }

    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("role `{}` may not do this", self.role.as_str())))
        }
    }
}

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
        let hash = crate::store::keys::hash(key.trim());
        if let Some(p) = state.principals.get(&hash) {
            return Ok(p);
        }
        let principal = crate::store::keys::lookup(&state.db, key.trim())
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))?;
        state.principals.insert(hash, principal.clone());
        Ok(principal)
    }
}
