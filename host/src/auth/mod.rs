//! Who is calling: API keys with a role and the brands they may touch. No endpoint is open; a key of
//! brand A sees nothing of brand B. The core's own types: the HTTP layer reads them from a request
//! (`api::extract`), the CLI and tests make them directly.

pub mod keys;

use std::str::FromStr;

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
    /// The role as one bit of a set of roles.
    pub const fn bit(self) -> u8 {
        1 << self as u8
    }

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
}

impl crate::audit::Actor for Principal {
    fn key_id(&self) -> &str {
        &self.key_id
    }
    fn holder(&self) -> &str {
        &self.holder
    }
}
