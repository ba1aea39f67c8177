//! The manifest of a plugin version and the exact bytes compliance signs: the canonical manifest plus the
//! sha256 of the component. Canonical = this struct's fields in this order, serialised without spaces;
//! the host and `pitboss plugin sign` both produce it with the same function, so what is signed is what is
//! checked.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::plugins::{Limits, World};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    /// Semantic version.
    pub version: String,
    pub world: World,
    pub brands: Vec<String>,
    /// Jurisdictions the version is meant for ("*": any).
    pub jurisdictions: Vec<String>,
    /// Fuel per call asked for (none: the world's default).
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Linear memory asked for, in MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub source_repository: String,
    #[serde(default)]
    pub source_commit: String,
}

/// Why a manifest is refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub field: &'static str,
    pub message: String,
}

impl Manifest {
    pub fn parse(json: &[u8]) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_json::from_slice(json)
            .map_err(|e| ManifestError { field: "manifest", message: e.to_string() })?;
        m.check()?;
        Ok(m)
    }

    fn check(&self) -> Result<(), ManifestError> {
        let err = |field, message: String| Err(ManifestError { field, message });
        let ok_name = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        };
        if !ok_name(&self.name) {
            return err("name", "1 to 64 characters of a-z, 0-9, - and _".into());
        }
        if semver::Version::parse(&self.version).is_err() {
            return err("version", format!("`{}` is not a semantic version (1.2.3)", self.version));
        }
        if self.brands.is_empty() || self.brands.iter().any(|b| b.is_empty()) {
            return err("brands", "at least one brand".into());
        }
        if self.jurisdictions.is_empty() {
            return err("jurisdictions", "at least one jurisdiction, or \"*\"".into());
        }
        let ceiling = Limits::CEILING;
        if self.fuel.is_some_and(|f| f == 0 || f > ceiling.fuel) {
            return err("fuel", format!("1 to {} (the ceiling)", ceiling.fuel));
        }
        if self.memory_mib.is_some_and(|m| m == 0 || m << 20 > ceiling.memory_bytes) {
            return err("memory_mib", format!("1 to {} MiB (the ceiling)", ceiling.memory_bytes >> 20));
        }
        Ok(())
    }

    pub fn canonical(&self) -> String {
        serde_json::to_string(self).expect("a manifest serialises")
    }
}

/// What a compliance signature covers.
/// What an approval signs: the canonical manifest and the component's sha256 (v1), and the sha256 of
/// the version's impact report when it has one (v2: "these bytes, this manifest, this observed impact").
pub fn signing_payload(manifest: &Manifest, sha256_hex: &str, impact_sha256: Option<&str>) -> Vec<u8> {
    match impact_sha256 {
        None => format!("pitboss-plugin-approval-v1\n{}\n{}", manifest.canonical(), sha256_hex).into_bytes(),
        Some(impact) => {
            format!("pitboss-plugin-approval-v2\n{}\n{}\n{}", manifest.canonical(), sha256_hex, impact)
                .into_bytes()
        }
    }
}

/// A new ed25519 key pair: (private key hex, public key hex).
pub fn keygen() -> (String, String) {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).expect("randomness");
    let key = SigningKey::from_bytes(&secret);
    (hex::encode(secret), hex::encode(key.verifying_key().to_bytes()))
}

pub fn sign(private_hex: &str, payload: &[u8]) -> anyhow::Result<String> {
    let bytes: [u8; 32] = hex::decode(private_hex.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("a private key is 64 hex characters"))?;
    Ok(hex::encode(SigningKey::from_bytes(&bytes).sign(payload).to_bytes()))
}

pub fn parse_public(public_hex: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(public_hex.trim()).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

pub fn verify(public_hex: &str, payload: &[u8], signature_hex: &str) -> bool {
    let Some(key) = parse_public(public_hex) else { return false };
    let Some(sig) = hex::decode(signature_hex.trim()).ok().and_then(|b| Signature::from_slice(&b).ok())
    else {
        return false;
    };
    key.verify_strict(payload, &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest::parse(br#"{"name": "dormant-depositor", "version": "1.0.0", "world": "segment", "brands": ["A"], "jurisdictions": ["DE"]}"#).unwrap()
    }

    #[test]
    fn a_signature_covers_manifest_and_bytes() {
        let (private, public) = keygen();
        let m = manifest();
        let payload = signing_payload(&m, "ab".repeat(32).as_str(), None);
        let sig = sign(&private, &payload).unwrap();
        assert!(verify(&public, &payload, &sig));
        let mut other = m.clone();
        other.jurisdictions = vec!["*".into()];
        assert!(
            !verify(&public, &signing_payload(&other, "ab".repeat(32).as_str(), None), &sig),
            "another manifest"
        );
        assert!(!verify(&public, &signing_payload(&m, "cd".repeat(32).as_str(), None), &sig), "other bytes");
        let (_, stranger) = keygen();
        assert!(!verify(&stranger, &payload, &sig), "another key");
        assert!(!verify(&public, &payload, "00"), "garbage");
    }

    #[test]
    fn manifests_are_checked_field_by_field() {
        let field = |json: &str| Manifest::parse(json.as_bytes()).unwrap_err().field;
        assert_eq!(
            field(
                r#"{"name": "X!", "version": "1.0.0", "world": "segment", "brands": ["A"], "jurisdictions": ["*"]}"#
            ),
            "name"
        );
        assert_eq!(
            field(
                r#"{"name": "x", "version": "1.0", "world": "segment", "brands": ["A"], "jurisdictions": ["*"]}"#
            ),
            "version"
        );
        assert_eq!(
            field(
                r#"{"name": "x", "version": "1.0.0", "world": "segment", "brands": [], "jurisdictions": ["*"]}"#
            ),
            "brands"
        );
        assert_eq!(
            field(
                r#"{"name": "x", "version": "1.0.0", "world": "segment", "brands": ["A"], "jurisdictions": ["*"], "memory_mib": 4096}"#
            ),
            "memory_mib"
        );
        assert_eq!(
            field(
                r#"{"name": "x", "version": "1.0.0", "world": "slots", "brands": ["A"], "jurisdictions": ["*"]}"#
            ),
            "manifest"
        );
    }
}
