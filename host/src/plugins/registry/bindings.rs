//! Bindings: which approved version decides for (brand, jurisdiction, world, slot), '*' being the
//! brand-wide default. The slot is the segment's name for segment bindings (each segment of a brand has
//! its own rule) and '' for the world's general binding. The live set is an immutable snapshot behind an atomic pointer: a decision takes the snapshot
//! once and finishes on it, so a swap never changes a decision in flight and every decision after the
//! swap sees the new version.
//!
//! Building a snapshot loads every bound version the way the integrity rule says: the bytes are re-hashed
//! against the recorded sha256 and the approvals' signatures re-verified against the stored manifest.
//! A version that fails does not run: its binding stays in the snapshot as failed, so its decisions fail
//! closed, and the failure is logged and counted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::manifest::{self, Manifest, signing_payload};
use super::{Registry, RegistryError};
use crate::audit;
use crate::auth::Principal;
use crate::plugins::{Limits, Plugin, World};
use crate::store::now_ms;

/// Limit overrides a binding may carry, within the ceilings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    pub fuel: Option<u64>,
    pub memory_mib: Option<u64>,
    pub deadline_ms: Option<u64>,
}

/// One live binding, with its version loaded (or the reason it may not run).
#[derive(Debug)]
pub struct ActiveBinding {
    pub binding_id: String,
    pub plugin_id: String,
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub plugin: Result<Arc<Plugin>, String>,
    pub config: Arc<BTreeMap<String, String>>,
    pub limits: Limits,
}

#[derive(Debug, Default)]
pub struct Snapshot {
    bindings: HashMap<(String, String, World, String), Arc<ActiveBinding>>,
    /// Which reload made it: a reload that began reading later saw at least as much, so a snapshot
    /// never replaces one of a higher generation.
    generation: u64,
}

impl Snapshot {
    /// The binding for the player's jurisdiction, else the brand's default, in `slot` ('' for the
    /// world's general binding, a segment's name for its rule).
    pub fn resolve(
        &self,
        brand: &str,
        jurisdiction: &str,
        world: World,
        slot: &str,
    ) -> Option<Arc<ActiveBinding>> {
        let get = |j: &str| {
            self.bindings.get(&(brand.to_string(), j.to_string(), world, slot.to_string())).cloned()
        };
        get(jurisdiction).or_else(|| get("*"))
    }

    /// Every live binding of a brand's slot, by jurisdiction ('*' the default).
    pub fn slot(&self, brand: &str, world: World, slot: &str) -> Vec<(String, Arc<ActiveBinding>)> {
        let mut out: Vec<(String, Arc<ActiveBinding>)> = self
            .bindings
            .iter()
            .filter(|((b, _, w, s), _)| b == brand && *w == world && s == slot)
            .map(|((_, j, _, _), a)| (j.clone(), a.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BindingRow {
    pub id: String,
    pub brand_id: String,
    pub jurisdiction: String,
    pub world: String,
    /// The segment's name for a segment's rule; '' for the world's general binding.
    pub slot: String,
    pub plugin_id: String,
    pub config: BTreeMap<String, String>,
    pub limits: LimitOverrides,
    pub bound_at: i64,
    pub bound_by: String,
    pub replaced_at: Option<i64>,
}

fn row_to_binding(r: &sqlx::any::AnyRow) -> Result<BindingRow, sqlx::Error> {
    Ok(BindingRow {
        id: r.try_get("id")?,
        brand_id: r.try_get("brand_id")?,
        jurisdiction: r.try_get("jurisdiction")?,
        world: r.try_get("world")?,
        slot: r.try_get("slot")?,
        plugin_id: r.try_get("plugin_id")?,
        config: serde_json::from_str(&r.try_get::<String, _>("config")?).unwrap_or_default(),
        limits: serde_json::from_str(&r.try_get::<String, _>("limits")?).unwrap_or_default(),
        bound_at: r.try_get("bound_at")?,
        bound_by: r.try_get("bound_by")?,
        replaced_at: r.try_get("replaced_at")?,
    })
}

const BINDING_COLUMNS: &str =
    "id, brand_id, jurisdiction, world, slot, plugin_id, config, limits, bound_at, bound_by, replaced_at";

impl Registry {
    /// Binds an approved version; the previous binding of the same key ends in the same transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn bind(
        &self,
        actor: &Principal,
        brand: &str,
        jurisdiction: &str,
        slot: &str,
        plugin_id: &str,
        config: BTreeMap<String, String>,
        limits: LimitOverrides,
    ) -> Result<BindingRow, RegistryError> {
        if !actor.may_see_brand(brand) {
            return Err(RegistryError::NotFound("brand"));
        }
        let version = self
            .get(plugin_id)
            .await?
            .filter(|v| actor.covers(&v.manifest.brands))
            .ok_or(RegistryError::NotFound("plugin version"))?;
        let m = &version.manifest;
        if !m.brands.iter().any(|b| b == brand) {
            return Err(RegistryError::Forbidden(format!(
                "{} {} is not for brand {brand}",
                m.name, m.version
            )));
        }
        // The brand default decides for every jurisdiction without its own binding: only a version made
        // for any jurisdiction ("*") may be it.
        if !m.jurisdictions.iter().any(|j| j == jurisdiction || j == "*") {
            return Err(RegistryError::Forbidden(format!(
                "{} {} is not for jurisdiction {jurisdiction}",
                m.name, m.version
            )));
        }
        if !version.approved {
            return Err(RegistryError::Forbidden(format!(
                "{} {} is not approved ({} of {} approvals)",
                m.name,
                m.version,
                version.approvals.iter().filter(|a| a.revoked_at.is_none()).count(),
                version.approvals_required
            )));
        }
        if !slot.is_empty() && m.world != World::Segment {
            return Err(RegistryError::Forbidden(format!(
                "{} {} is a {} plugin; only segment rules are bound to a segment",
                m.name, m.version, m.world
            )));
        }
        effective_limits(m, &limits)?;
        let mut tx = self.db.begin_write().await?;
        let now = now_ms();
        sqlx::query("UPDATE bindings SET replaced_at = $1 WHERE brand_id = $2 AND jurisdiction = $3 AND world = $4 AND slot = $5 AND replaced_at IS NULL")
            .bind(now)
            .bind(brand)
            .bind(jurisdiction)
            .bind(m.world.name())
            .bind(slot)
            .execute(&mut *tx)
            .await?;
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd).map_err(|e| anyhow::anyhow!("{e}"))?;
        let id = format!("bd_{}", hex::encode(rnd));
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO bindings ({BINDING_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL)"
        )))
        .bind(&id)
        .bind(brand)
        .bind(jurisdiction)
        .bind(m.world.name())
        .bind(slot)
        .bind(plugin_id)
        .bind(serde_json::to_string(&config).map_err(anyhow::Error::from)?)
        .bind(serde_json::to_string(&limits).map_err(anyhow::Error::from)?)
        .bind(now)
        .bind(&actor.holder)
        .execute(&mut *tx)
        .await?;
        let detail = serde_json::json!({"plugin_id": plugin_id, "name": m.name, "version": m.version, "jurisdiction": jurisdiction,
                                        "world": m.world, "slot": slot, "config": config, "limits": limits});
        audit::record(&mut tx, actor, "binding.bind", &id, &[brand.to_string()], detail).await?;
        tx.commit().await?;
        self.reload().await?;
        self.binding(&id).await?.ok_or(RegistryError::NotFound("binding"))
    }

    /// Binds again the version that was bound before the current one.
    pub async fn rollback(
        &self,
        actor: &Principal,
        brand: &str,
        jurisdiction: &str,
        world: World,
        slot: &str,
    ) -> Result<BindingRow, RegistryError> {
        if !actor.may_see_brand(brand) {
            return Err(RegistryError::NotFound("brand"));
        }
        let history = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {BINDING_COLUMNS} FROM bindings WHERE brand_id = $1 AND jurisdiction = $2 AND world = $3 AND slot = $4 ORDER BY bound_at DESC, id"
        )))
        .bind(brand)
        .bind(jurisdiction)
        .bind(world.name())
        .bind(slot)
        .fetch_all(&self.db.pool)
        .await?
        .iter()
        .map(row_to_binding)
        .collect::<Result<Vec<_>, _>>()?;
        let current = history
            .iter()
            .find(|b| b.replaced_at.is_none())
            .ok_or(RegistryError::NotFound("current binding"))?;
        let previous = history
            .iter()
            .find(|b| b.replaced_at.is_some() && b.plugin_id != current.plugin_id)
            .ok_or(RegistryError::NotFound("previous version"))?;
        self.bind(
            actor,
            brand,
            jurisdiction,
            slot,
            &previous.plugin_id,
            previous.config.clone(),
            previous.limits.clone(),
        )
        .await
    }

    /// Ends every current binding of a version (its approval was revoked).
    pub(super) async fn unbind_version(
        &self,
        actor: &Principal,
        plugin_id: &str,
        brands: &[String],
    ) -> Result<u64, RegistryError> {
        let mut tx = self.db.begin_write().await?;
        let done =
            sqlx::query("UPDATE bindings SET replaced_at = $1 WHERE plugin_id = $2 AND replaced_at IS NULL")
                .bind(now_ms())
                .bind(plugin_id)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() > 0 {
            audit::record(
                &mut tx,
                actor,
                "binding.unbind",
                plugin_id,
                brands,
                serde_json::json!({"bindings": done.rows_affected()}),
            )
            .await?;
        }
        tx.commit().await?;
        self.reload().await?;
        Ok(done.rows_affected())
    }

    pub async fn binding(&self, id: &str) -> Result<Option<BindingRow>, RegistryError> {
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {BINDING_COLUMNS} FROM bindings WHERE id = $1")))
                .bind(id)
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(row.as_ref().map(row_to_binding).transpose()?)
    }

    /// Every binding of the actor's brands, current ones and history, newest first.
    pub async fn bindings(&self, actor: &Principal) -> Result<Vec<BindingRow>, RegistryError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {BINDING_COLUMNS} FROM bindings ORDER BY bound_at DESC, id"
        )))
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows
            .iter()
            .map(row_to_binding)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|b| actor.may_see_brand(&b.brand_id))
            .collect())
    }

    /// Reloads the snapshot when bindings, approvals or signing keys changed since `seen` — how a change
    /// made by another host process sharing the database reaches this one.
    pub async fn refresh_if_changed(&self, seen: &mut Option<String>) -> Result<bool, RegistryError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM bindings) AS n,
                    (SELECT COALESCE(MAX(bound_at), 0) FROM bindings) AS b,
                    (SELECT COALESCE(MAX(replaced_at), 0) FROM bindings) AS r,
                    (SELECT COUNT(*) FROM approvals WHERE revoked_at IS NOT NULL) AS a,
                    (SELECT COUNT(*) FROM signing_keys WHERE revoked_at IS NOT NULL) AS k",
        )
        .fetch_one(&self.db.pool)
        .await?;
        let mark = ["n", "b", "r", "a", "k"]
            .iter()
            .map(|c| row.try_get::<i64, _>(*c).map(|v| v.to_string()))
            .collect::<Result<Vec<_>, _>>()?
            .join("/");
        if seen.as_deref() == Some(&mark) {
            return Ok(false);
        }
        let first = seen.is_none();
        *seen = Some(mark);
        if !first {
            self.reload().await?;
        }
        Ok(!first)
    }

    /// Rebuilds the live snapshot from the database, verifying every bound version, and swaps it in.
    pub async fn reload(&self) -> Result<(), RegistryError> {
        // Taken before reading: reloads that overlap (a bind's own, the background refresh) are ordered
        // by when they began to read, and the older read can never be stored over the newer.
        let generation = self.reloads.fetch_add(1, Ordering::SeqCst) + 1;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {BINDING_COLUMNS} FROM bindings WHERE replaced_at IS NULL"
        )))
        .fetch_all(&self.db.pool)
        .await?;
        let mut snapshot = Snapshot { generation, ..Snapshot::default() };
        for b in rows.iter().map(row_to_binding).collect::<Result<Vec<_>, _>>()? {
            let Ok(world) = serde_json::from_value::<World>(serde_json::Value::String(b.world.clone()))
            else {
                continue;
            };
            let active = self.activate(&b).await;
            let key = (b.brand_id.clone(), b.jurisdiction.clone(), world, b.slot.clone());
            snapshot.bindings.insert(key, Arc::new(active));
        }
        let fresh = Arc::new(snapshot);
        loop {
            let current = self.snapshot.load_full();
            if current.generation >= generation {
                break; // a reload that read later already stored its snapshot
            }
            let previous = self.snapshot.compare_and_swap(&current, fresh.clone());
            if Arc::ptr_eq(&previous, &current) {
                break;
            }
        }
        Ok(())
    }

    async fn activate(&self, b: &BindingRow) -> ActiveBinding {
        let (verified, name, version, sha256, limits) = match self
            .verified_version(&b.plugin_id, &b.limits)
            .await
        {
            Ok((plugin, m, sha, limits)) => (Ok(plugin), m.name, m.version, sha, limits),
            Err(why) => {
                self.integrity_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(plugin_id = %b.plugin_id, binding = %b.id, %why, "plugin version refused at load; its decisions fail closed");
                (Err(why), String::new(), String::new(), String::new(), Limits::CEILING)
            }
        };
        ActiveBinding {
            binding_id: b.id.clone(),
            plugin_id: b.plugin_id.clone(),
            name,
            version,
            sha256,
            plugin: verified,
            config: Arc::new(b.config.clone()),
            limits,
        }
    }

    /// Loads a version only if its bytes match the recorded sha256 and enough approvals verify against
    /// the stored manifest.
    async fn verified_version(
        &self,
        plugin_id: &str,
        overrides: &LimitOverrides,
    ) -> Result<(Arc<Plugin>, Manifest, String, Limits), String> {
        let row = sqlx::query("SELECT manifest, sha256 FROM plugin_versions WHERE id = $1")
            .bind(plugin_id)
            .fetch_optional(&self.db.pool)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the version is gone")?;
        let manifest_text: String = row.try_get("manifest").map_err(|e| e.to_string())?;
        let sha: String = row.try_get("sha256").map_err(|e| e.to_string())?;
        let m: Manifest = Manifest::parse(manifest_text.as_bytes())
            .map_err(|e| format!("stored manifest unreadable: {}", e.message))?;
        let bytes = self.blobs.get(&sha).map_err(|e| format!("component bytes unreadable: {e}"))?;
        if hex::encode(Sha256::digest(&bytes)) != sha {
            return Err("the component's bytes do not match their recorded sha256".into());
        }
        let approvals = sqlx::query(
            "SELECT a.approver_holder, a.signature, a.impact_sha256, k.public_key FROM approvals a JOIN signing_keys k ON k.id = a.signing_key_id
             WHERE a.plugin_id = $1 AND a.revoked_at IS NULL AND k.revoked_at IS NULL",
        )
        .bind(plugin_id)
        .fetch_all(&self.db.pool)
        .await
        .map_err(|e| e.to_string())?;
        // An approval that signed an impact report holds only while that report is the one stored.
        let report = self.impact_of(plugin_id).await.map_err(|e| e.to_string())?.and_then(|i| i.sha256);
        let mut holders = std::collections::BTreeSet::new();
        for a in &approvals {
            let (holder, sig, public, impact): (String, String, String, Option<String>) = (
                a.try_get("approver_holder").map_err(|e| e.to_string())?,
                a.try_get("signature").map_err(|e| e.to_string())?,
                a.try_get("public_key").map_err(|e| e.to_string())?,
                a.try_get("impact_sha256").map_err(|e| e.to_string())?,
            );
            if impact.is_some() && impact != report {
                continue;
            }
            let payload = signing_payload(&m, &sha, impact.as_deref());
            if manifest::verify(&public, &payload, &sig) {
                holders.insert(holder);
            }
        }
        let required = self.approvals_required(&m);
        if holders.len() < required {
            return Err(format!(
                "{} of {required} approvals verify against the stored manifest and sha256 (manifest or signatures altered, or approvals revoked)",
                holders.len()
            ));
        }
        let limits = effective_limits(&m, overrides).map_err(|e| e.to_string())?;
        let runtime = self.runtime.clone();
        let plugin = tokio::task::spawn_blocking(move || runtime.load(&bytes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok((plugin, m, sha, limits))
    }
}

/// The world's defaults, then the manifest's asks, then the binding's overrides; over a ceiling is an
/// error, not a silent clamp.
pub(super) fn effective_limits(m: &Manifest, o: &LimitOverrides) -> Result<Limits, RegistryError> {
    let mut l = Limits::default_for(m.world);
    if let Some(f) = o.fuel.or(m.fuel) {
        l.fuel = f;
    }
    if let Some(mib) = o.memory_mib.or(m.memory_mib) {
        l.memory_bytes = mib << 20;
    }
    if let Some(d) = o.deadline_ms {
        l.deadline_ms = d;
    }
    if l != l.clamped() || l.fuel == 0 || l.memory_bytes == 0 || l.deadline_ms == 0 {
        return Err(RegistryError::Manifest(super::ManifestError {
            field: "limits",
            message: format!("limits must be above zero and within the ceilings {:?}", Limits::CEILING),
        }));
    }
    Ok(l)
}
