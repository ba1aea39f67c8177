//! The plugin registry: operators upload versions (validated, stored content-addressed), admins register
//! compliance keys, compliance approves versions with signatures over the canonical manifest and the
//! bytes' sha256 — never their own uploads (four eyes). Every change is audited in the same transaction.

pub mod bindings;
pub mod manifest;

use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use self::manifest::{Manifest, ManifestError, signing_payload};
use super::{Limits, Plugin, PluginError, Runtime};
use crate::audit;
use crate::auth::Principal;
use crate::store::{Db, now_ms};

/// Largest component accepted (a componentize-py plugin is about 18 MB).
pub const MAX_COMPONENT_BYTES: usize = 48 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{}: {}", .0.field, .0.message)]
    Manifest(ManifestError),
    #[error("the component is refused: {0}")]
    Plugin(PluginError),
    #[error("the manifest declares world `{declared}` but the component exports `{found}`")]
    WorldMismatch { declared: String, found: String },
    #[error("the component is {0} bytes, over the limit of {MAX_COMPONENT_BYTES}")]
    TooLarge(usize),
    #[error("{name} {version} already exists with other bytes")]
    VersionTaken { name: String, version: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("four eyes: {0}")]
    FourEyes(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(
        "the signature does not verify against this version's signing payload (its canonical manifest, sha256 and, once it has an impact report, the report's sha256)"
    )]
    BadSignature,
    #[error("the signing key is revoked")]
    KeyRevoked,
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for RegistryError {
    fn from(e: sqlx::Error) -> Self {
        RegistryError::Internal(e.into())
    }
}

/// Component bytes, by sha256, in a directory the host holds a capability for (nothing outside it can
/// be reached through this handle).
#[derive(Clone)]
pub struct BlobStore {
    dir: Arc<Dir>,
}

impl BlobStore {
    pub fn open(path: &std::path::Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)?;
        Ok(BlobStore { dir: Arc::new(Dir::open_ambient_dir(path, ambient_authority())?) })
    }

    /// Writes atomically (temporary name, then rename); the same bytes twice is one file.
    pub fn put(&self, sha: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let name = format!("{sha}.wasm");
        if self.dir.exists(&name) {
            return Ok(());
        }
        let tmp = format!(".{sha}.{}.tmp", std::process::id());
        self.dir.write(&tmp, bytes)?;
        self.dir.rename(&tmp, &self.dir, &name)?;
        Ok(())
    }

    pub fn get(&self, sha: &str) -> anyhow::Result<Vec<u8>> {
        Ok(self.dir.read(format!("{sha}.wasm"))?)
    }
}

/// A version as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    pub id: String,
    pub manifest: Manifest,
    pub wit_version: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub uploaded_by: String,
    pub uploaded_at: i64,
    pub approvals: Vec<ApprovalView>,
    /// Approvals in force, and how many the version's jurisdictions require.
    pub approvals_required: usize,
    pub approved: bool,
    /// What a compliance signature must cover (hex of the exact bytes): with the impact report's sha256
    /// once the version has a finished report.
    pub signing_payload: String,
    /// The version's impact report, if one was asked for: its state and, once done, its sha256.
    pub impact: Option<ImpactState>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImpactState {
    pub state: String,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApprovalView {
    pub id: String,
    pub signing_key_id: String,
    pub approver_holder: String,
    pub approved_at: i64,
    pub revoked_at: Option<i64>,
    /// The impact report's sha256 the approval signed, if the version had one.
    pub impact_sha256: Option<String>,
}

/// Who must approve what: jurisdictions whose versions need two approvers, and those whose versions
/// need an impact report before anyone may approve them.
#[derive(Debug, Clone, Default)]
pub struct ApprovalPolicy {
    pub dual: Vec<String>,
    pub require_impact: Vec<String>,
}

impl ApprovalPolicy {
    fn covers(list: &[String], m: &Manifest) -> bool {
        m.jurisdictions.iter().any(|j| j == "*" && !list.is_empty() || list.contains(j))
    }
}

pub struct Registry {
    db: Db,
    blobs: BlobStore,
    runtime: Arc<Runtime>,
    /// Jurisdictions whose versions need two approvers, or an impact report.
    policy: ApprovalPolicy,
    /// The live bindings (see `bindings`).
    snapshot: arc_swap::ArcSwap<bindings::Snapshot>,
    /// Versions refused at load because their bytes or approvals did not check out.
    integrity_failures: std::sync::atomic::AtomicU64,
    /// Reloads begun (the generation of the next snapshot).
    reloads: std::sync::atomic::AtomicU64,
}

pub enum Uploaded {
    Created(VersionView),
    /// The same bytes were uploaded before: that version.
    Existing(VersionView),
}

impl Registry {
    /// The live bindings now: an immutable snapshot; a decision keeps the one it started with.
    pub fn snapshot(&self) -> Arc<bindings::Snapshot> {
        self.snapshot.load_full()
    }

    /// The runtime the bound versions run in.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// How many versions were refused at load because their bytes or approvals did not check out.
    pub fn integrity_failures(&self) -> u64 {
        self.integrity_failures.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Opens the registry and loads (and verifies) everything bound.
    pub async fn open(
        db: Db,
        blobs: BlobStore,
        runtime: Arc<Runtime>,
        policy: ApprovalPolicy,
    ) -> anyhow::Result<Registry> {
        let registry = Registry {
            db,
            blobs,
            runtime,
            policy,
            snapshot: Default::default(),
            integrity_failures: Default::default(),
            reloads: Default::default(),
        };
        registry.reload().await.map_err(|e| anyhow::anyhow!("loading bindings: {e}"))?;
        Ok(registry)
    }

    /// Validates and stores a new version.
    pub async fn upload(
        &self,
        actor: &Principal,
        manifest_json: &[u8],
        bytes: &[u8],
    ) -> Result<Uploaded, RegistryError> {
        let manifest = Manifest::parse(manifest_json).map_err(RegistryError::Manifest)?;
        if !actor.covers(&manifest.brands) {
            return Err(RegistryError::NotFound("brand"));
        }
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(RegistryError::TooLarge(bytes.len()));
        }
        let sha = hex::encode(Sha256::digest(bytes));
        if let Some(existing) = self.find_by_sha(&sha).await? {
            return if actor.covers(&existing.manifest.brands) {
                Ok(Uploaded::Existing(existing))
            } else {
                Err(RegistryError::Conflict("these bytes are registered for another brand".into()))
            };
        }
        // Compiles, checks the world, its WIT version and its imports (compilation is cached by sha256).
        let runtime = self.runtime.clone();
        let owned = bytes.to_vec();
        let plugin = tokio::task::spawn_blocking(move || runtime.load(&owned))
            .await
            .map_err(|e| anyhow::anyhow!("compiling: {e}"))?
            .map_err(RegistryError::Plugin)?;
        if plugin.world != manifest.world {
            return Err(RegistryError::WorldMismatch {
                declared: manifest.world.to_string(),
                found: plugin.world.to_string(),
            });
        }
        self.blobs.put(&sha, bytes)?;
        let id = format!("pv_{}", &sha[..16]);
        let mut tx = self.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO plugin_versions (id, name, version, world, wit_version, sha256, size_bytes, manifest, brands,
                 uploaded_by_key, uploaded_by_holder, uploaded_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (name, version) DO NOTHING",
        )
        .bind(&id)
        .bind(&manifest.name)
        .bind(&manifest.version)
        .bind(manifest.world.name())
        .bind(&plugin.wit_version)
        .bind(&sha)
        .bind(bytes.len() as i64)
        .bind(manifest.canonical())
        .bind(serde_json::to_string(&manifest.brands).map_err(anyhow::Error::from)?)
        .bind(&actor.key_id)
        .bind(&actor.holder)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(RegistryError::VersionTaken { name: manifest.name, version: manifest.version });
        }
        let detail = serde_json::json!({"name": manifest.name, "version": manifest.version, "sha256": sha, "world": manifest.world});
        audit::record(&mut tx, actor, "plugin.upload", &id, &manifest.brands, detail).await?;
        tx.commit().await?;
        Ok(Uploaded::Created(self.get(&id).await?.ok_or(RegistryError::NotFound("plugin version"))?))
    }

    async fn find_by_sha(&self, sha: &str) -> Result<Option<VersionView>, RegistryError> {
        let id: Option<String> = sqlx::query_scalar("SELECT id FROM plugin_versions WHERE sha256 = $1")
            .bind(sha)
            .fetch_optional(&self.db.pool)
            .await?;
        match id {
            Some(id) => self.get(&id).await,
            None => Ok(None),
        }
    }

    /// How many distinct approvers a version needs.
    fn approvals_required(&self, m: &Manifest) -> usize {
        if ApprovalPolicy::covers(&self.policy.dual, m) { 2 } else { 1 }
    }

    /// A version as it would run, approved or not (an impact report runs candidates): its bytes checked
    /// against their sha256, compiled, with the limits its manifest asks for.
    pub async fn candidate(&self, plugin_id: &str) -> Result<(Arc<Plugin>, Manifest, Limits), RegistryError> {
        let version = self.get(plugin_id).await?.ok_or(RegistryError::NotFound("plugin version"))?;
        let bytes = self
            .blobs
            .get(&version.sha256)
            .map_err(|e| anyhow::anyhow!("component bytes unreadable: {e}"))?;
        if hex::encode(Sha256::digest(&bytes)) != version.sha256 {
            return Err(RegistryError::Internal(anyhow::anyhow!(
                "the component's bytes do not match their sha256"
            )));
        }
        let limits = bindings::effective_limits(&version.manifest, &Default::default())?;
        let runtime = self.runtime.clone();
        let plugin = tokio::task::spawn_blocking(move || runtime.load(&bytes))
            .await
            .map_err(|e| anyhow::anyhow!(e))?
            .map_err(RegistryError::Plugin)?;
        Ok((plugin, version.manifest, limits))
    }

    /// The version's impact report as the registry sees it: (state, sha256 once done).
    pub async fn impact_of(&self, plugin_id: &str) -> Result<Option<ImpactState>, RegistryError> {
        let row = sqlx::query("SELECT state, sha256 FROM impact_reports WHERE plugin_id = $1")
            .bind(plugin_id)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(ImpactState { state: r.try_get("state")?, sha256: r.try_get("sha256")? }),
            None => None,
        })
    }

    pub async fn get(&self, id: &str) -> Result<Option<VersionView>, RegistryError> {
        let Some(r) = sqlx::query(
            "SELECT id, manifest, wit_version, sha256, size_bytes, uploaded_by_holder, uploaded_at FROM plugin_versions WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?
        else {
            return Ok(None);
        };
        let manifest: Manifest =
            serde_json::from_str(&r.try_get::<String, _>("manifest")?).map_err(anyhow::Error::from)?;
        let sha: String = r.try_get("sha256")?;
        let approvals = sqlx::query(
            "SELECT id, signing_key_id, approver_holder, approved_at, revoked_at, impact_sha256 FROM approvals WHERE plugin_id = $1 ORDER BY approved_at",
        )
        .bind(id)
        .fetch_all(&self.db.pool)
        .await?
        .into_iter()
        .map(|a| -> Result<ApprovalView, sqlx::Error> {
            Ok(ApprovalView {
                id: a.try_get("id")?,
                signing_key_id: a.try_get("signing_key_id")?,
                approver_holder: a.try_get("approver_holder")?,
                approved_at: a.try_get("approved_at")?,
                revoked_at: a.try_get("revoked_at")?,
                impact_sha256: a.try_get("impact_sha256")?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
        let impact = self.impact_of(id).await?;
        let impact_sha = impact.as_ref().filter(|i| i.state == "done").and_then(|i| i.sha256.as_deref());
        let in_force: std::collections::BTreeSet<&str> =
            approvals.iter().filter(|a| a.revoked_at.is_none()).map(|a| a.approver_holder.as_str()).collect();
        let required = self.approvals_required(&manifest);
        Ok(Some(VersionView {
            id: r.try_get("id")?,
            wit_version: r.try_get("wit_version")?,
            size_bytes: r.try_get("size_bytes")?,
            uploaded_by: r.try_get("uploaded_by_holder")?,
            uploaded_at: r.try_get("uploaded_at")?,
            approved: in_force.len() >= required,
            approvals_required: required,
            signing_payload: hex::encode(signing_payload(&manifest, &sha, impact_sha)),
            impact,
            sha256: sha,
            approvals,
            manifest,
        }))
    }

    /// Versions of the actor's brands.
    pub async fn list(&self, actor: &Principal) -> Result<Vec<VersionView>, RegistryError> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM plugin_versions ORDER BY name, uploaded_at")
                .fetch_all(&self.db.pool)
                .await?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(v) = self.get(&id).await?
                && actor.covers(&v.manifest.brands)
            {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Registers a compliance public key for a named holder.
    pub async fn register_signing_key(
        &self,
        actor: &Principal,
        holder: &str,
        public_key: &str,
        brands: &[String],
    ) -> Result<String, RegistryError> {
        if manifest::parse_public(public_key).is_none() {
            return Err(RegistryError::Manifest(ManifestError {
                field: "public_key",
                message: "an ed25519 public key, 64 hex characters".into(),
            }));
        }
        if holder.trim().is_empty() || brands.is_empty() {
            return Err(RegistryError::Manifest(ManifestError {
                field: "holder",
                message: "a holder and brands are required".into(),
            }));
        }
        if !actor.covers(brands) {
            return Err(RegistryError::NotFound("brand"));
        }
        let id = format!("sk_{}", &hex::encode(Sha256::digest(public_key.trim().as_bytes()))[..16]);
        let mut tx = self.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO signing_keys (id, holder, public_key, brands, registered_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(holder.trim())
        .bind(public_key.trim().to_lowercase())
        .bind(serde_json::to_string(brands).map_err(anyhow::Error::from)?)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(RegistryError::Conflict("this public key is already registered".into()));
        }
        audit::record(
            &mut tx,
            actor,
            "signing_key.register",
            &id,
            brands,
            serde_json::json!({"holder": holder.trim()}),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn revoke_signing_key(&self, actor: &Principal, id: &str) -> Result<(), RegistryError> {
        let brands = self.signing_key_brands(id).await?.ok_or(RegistryError::NotFound("signing key"))?;
        if !actor.covers(&brands) {
            return Err(RegistryError::NotFound("signing key"));
        }
        let mut tx = self.db.begin_write().await?;
        let done =
            sqlx::query("UPDATE signing_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::NotFound("active signing key"));
        }
        audit::record(&mut tx, actor, "signing_key.revoke", id, &brands, serde_json::json!({})).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn signing_key_brands(&self, id: &str) -> Result<Option<Vec<String>>, RegistryError> {
        let brands: Option<String> = sqlx::query_scalar("SELECT brands FROM signing_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(brands.map(|b| serde_json::from_str(&b).unwrap_or_default()))
    }

    /// Approves a version with a compliance signature.
    pub async fn approve(
        &self,
        actor: &Principal,
        plugin_id: &str,
        signing_key_id: &str,
        signature: &str,
    ) -> Result<VersionView, RegistryError> {
        let version = self
            .get(plugin_id)
            .await?
            .filter(|v| actor.covers(&v.manifest.brands))
            .ok_or(RegistryError::NotFound("plugin version"))?;
        let key =
            sqlx::query("SELECT holder, public_key, brands, revoked_at FROM signing_keys WHERE id = $1")
                .bind(signing_key_id)
                .fetch_optional(&self.db.pool)
                .await?
                .ok_or(RegistryError::NotFound("signing key"))?;
        let holder: String = key.try_get("holder")?;
        let key_brands: Vec<String> =
            serde_json::from_str(&key.try_get::<String, _>("brands")?).unwrap_or_default();
        if !actor.covers(&key_brands) {
            return Err(RegistryError::NotFound("signing key"));
        }
        if key.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
            return Err(RegistryError::KeyRevoked);
        }
        if holder != actor.holder {
            return Err(RegistryError::Forbidden(format!(
                "signing key {signing_key_id} belongs to {holder}, not to {}",
                actor.holder
            )));
        }
        if holder == version.uploaded_by {
            return Err(RegistryError::FourEyes(format!(
                "{holder} uploaded this version and cannot approve it"
            )));
        }
        let impact = match version.impact.as_ref() {
            Some(ImpactState { state, sha256: Some(sha) }) if state == "done" => Some(sha.clone()),
            Some(ImpactState { state, .. }) if state == "running" => {
                return Err(RegistryError::Conflict(
                    "the version's impact report is still running; approve it once it is done".into(),
                ));
            }
            _ => None,
        };
        if impact.is_none() && ApprovalPolicy::covers(&self.policy.require_impact, &version.manifest) {
            return Err(RegistryError::Forbidden(format!(
                "{} {} needs an impact report before approval (jurisdictions {}): POST /admin/plugins/{plugin_id}/impact",
                version.manifest.name,
                version.manifest.version,
                self.policy.require_impact.join(", ")
            )));
        }
        let payload = signing_payload(&version.manifest, &version.sha256, impact.as_deref());
        if !manifest::verify(&key.try_get::<String, _>("public_key")?, &payload, signature) {
            return Err(RegistryError::BadSignature);
        }
        let id = format!(
            "ap_{}",
            &hex::encode(Sha256::digest(format!("{plugin_id}/{signing_key_id}").as_bytes()))[..16]
        );
        let mut tx = self.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO approvals (id, plugin_id, signing_key_id, approver_key_id, approver_holder, signature, approved_at, impact_sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(plugin_id)
        .bind(signing_key_id)
        .bind(&actor.key_id)
        .bind(&actor.holder)
        .bind(signature.trim().to_lowercase())
        .bind(now_ms())
        .bind(impact.as_deref())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(RegistryError::Conflict(format!(
                "{holder} already approved this version with this key"
            )));
        }
        let detail = serde_json::json!({"signing_key_id": signing_key_id, "sha256": version.sha256,
                                        "impact_sha256": impact});
        audit::record(&mut tx, actor, "plugin.approve", plugin_id, &version.manifest.brands, detail).await?;
        tx.commit().await?;
        self.get(plugin_id).await?.ok_or(RegistryError::NotFound("plugin version"))
    }

    /// Revokes an approval (the version stops being approved if that was one too few).
    pub async fn revoke_approval(
        &self,
        actor: &Principal,
        plugin_id: &str,
        approval_id: &str,
    ) -> Result<VersionView, RegistryError> {
        let version = self
            .get(plugin_id)
            .await?
            .filter(|v| actor.covers(&v.manifest.brands))
            .ok_or(RegistryError::NotFound("plugin version"))?;
        let mut tx = self.db.begin_write().await?;
        let done = sqlx::query(
            "UPDATE approvals SET revoked_at = $1 WHERE id = $2 AND plugin_id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(approval_id)
        .bind(plugin_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::NotFound("approval in force"));
        }
        audit::record(
            &mut tx,
            actor,
            "plugin.approval_revoke",
            plugin_id,
            &version.manifest.brands,
            serde_json::json!({"approval_id": approval_id}),
        )
        .await?;
        tx.commit().await?;
        let after = self.get(plugin_id).await?.ok_or(RegistryError::NotFound("plugin version"))?;
        if !after.approved {
            // No longer approved: unbound everywhere, at once.
            self.unbind_version(actor, plugin_id, &after.manifest.brands).await?;
        }
        Ok(after)
    }
}
