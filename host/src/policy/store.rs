//! The packs in force and their history. Every change is a new version, written by one person and put
//! in force only when a compliance officer other than its author approves it (four eyes), each step in
//! the audit log; the gate reads an immutable snapshot of the approved packs, swapped atomically when an
//! approval lands here or in another host sharing the database (`refresh_if_changed`). Owns the
//! `policy_packs` table.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use serde::Serialize;
use sqlx::Row;

use super::packs::{PackDocument, Packs, shipped};
use crate::audit;
use crate::auth::Principal;
use crate::store::{Db, now_ms};

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("pack {0} version {1} exists already: a change is a new version")]
    VersionExists(String, String),
    #[error("no version {1} of pack {0}")]
    NotFound(String, String),
    #[error("a version is approved by someone other than who proposed it")]
    SameApprover,
    #[error("pack {0} version {1} is approved already")]
    AlreadyApproved(String, String),
    #[error(transparent)]
    Db(#[from] anyhow::Error),
}

impl From<sqlx::Error> for PackError {
    fn from(e: sqlx::Error) -> Self {
        PackError::Db(e.into())
    }
}

/// Where a version of a pack stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionStatus {
    /// Waiting for a second person's approval; in force for nobody.
    Proposed,
    /// The newest approved version: the one the gate applies.
    InForce,
    /// Approved, then replaced by a newer approval.
    Superseded,
}

/// One version of a pack, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PackVersion {
    pub pack: String,
    pub version: String,
    pub status: VersionStatus,
    pub proposed_by: String,
    pub proposed_at: Option<jiff::Timestamp>,
    pub approved_by: Option<String>,
    pub approved_at: Option<jiff::Timestamp>,
    pub document: PackDocument,
}

pub struct PackStore {
    db: Db,
    /// The packs in force, with the generation of the reload that read them.
    live: ArcSwap<(u64, Arc<Packs>)>,
    /// Reloads begun; a snapshot never replaces one read later (as for bindings).
    reloads: AtomicU64,
}

impl PackStore {
    /// Opens the store: a pack the database has never seen is written in force from its shipped file;
    /// a shipped version the database does not hold yet (a new release) waits, proposed, for a compliance
    /// approval.
    pub async fn open(db: Db) -> anyhow::Result<PackStore> {
        let store = PackStore {
            db,
            live: ArcSwap::from_pointee((0, Arc::new(Packs::default()))),
            reloads: AtomicU64::new(0),
        };
        for (file, doc) in shipped() {
            let mut tx = store.db.begin_write().await?;
            let known: i64 = sqlx::query("SELECT COUNT(*) AS n FROM policy_packs WHERE pack = $1")
                .bind(&doc.pack)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
            let now = now_ms();
            let approved = (known == 0).then_some(now);
            // The row itself says where the version came from (the file of this release); a shipped
            // version is not a change made through the API, so it is not an audit entry.
            sqlx::query(
                "INSERT INTO policy_packs (pack, version, body, proposed_by, proposed_at, approved_by, approved_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (pack, version) DO NOTHING",
            )
            .bind(&doc.pack)
            .bind(&doc.version)
            .bind(serde_json::to_string(&doc)?)
            .bind(format!("shipped: {file}"))
            .bind(now)
            .bind(approved.map(|_| format!("shipped: {file}")))
            .bind(approved)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        store.reload().await?;
        Ok(store)
    }

    /// The packs in force now: an immutable snapshot.
    pub fn current(&self) -> Arc<Packs> {
        self.live.load().1.clone()
    }

    async fn versions(&self) -> anyhow::Result<Vec<PackVersion>> {
        let rows = sqlx::query(
            "SELECT pack, version, body, proposed_by, proposed_at, approved_by, approved_at FROM policy_packs
             ORDER BY pack, proposed_at, version",
        )
        .fetch_all(&self.db.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let approved_at: Option<i64> = r.try_get("approved_at")?;
            out.push(PackVersion {
                pack: r.try_get("pack")?,
                version: r.try_get("version")?,
                status: if approved_at.is_some() {
                    VersionStatus::Superseded
                } else {
                    VersionStatus::Proposed
                },
                proposed_by: r.try_get("proposed_by")?,
                proposed_at: jiff::Timestamp::from_millisecond(r.try_get("proposed_at")?).ok(),
                approved_by: r.try_get("approved_by")?,
                approved_at: approved_at.and_then(|t| jiff::Timestamp::from_millisecond(t).ok()),
                document: serde_json::from_str(&r.try_get::<String, _>("body")?)?,
            });
        }
        // In force: the newest approval of each pack.
        let mut newest: std::collections::BTreeMap<String, (Option<jiff::Timestamp>, usize)> =
            Default::default();
        for (i, v) in out.iter().enumerate().filter(|(_, v)| v.approved_at.is_some()) {
            let e = newest.entry(v.pack.clone()).or_insert((None, i));
            if v.approved_at >= e.0 {
                *e = (v.approved_at, i);
            }
        }
        for (_, i) in newest.into_values() {
            out[i].status = VersionStatus::InForce;
        }
        Ok(out)
    }

    /// Every version of every pack, the one in force of each marked.
    pub async fn list(&self) -> anyhow::Result<Vec<PackVersion>> {
        self.versions().await
    }

    /// Rebuilds the snapshot of the packs in force.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let generation = self.reloads.fetch_add(1, Ordering::SeqCst) + 1;
        let packs = Packs::new(
            self.versions()
                .await?
                .iter()
                .filter(|v| v.status == VersionStatus::InForce)
                .map(|v| v.document.pack())
                .collect(),
        );
        // Stored only over an older read: compare and swap, so that of two reloads that overlap the one
        // that read later is what stays.
        let fresh = Arc::new((generation, Arc::new(packs)));
        loop {
            let current = self.live.load_full();
            if current.0 >= generation {
                break;
            }
            let previous = self.live.compare_and_swap(&current, fresh.clone());
            if Arc::ptr_eq(&previous, &current) {
                break;
            }
        }
        Ok(())
    }

    /// Reloads when a version was proposed or approved since `seen` (by this host or another).
    pub async fn refresh_if_changed(&self, seen: &mut Option<String>) -> anyhow::Result<()> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(MAX(approved_at), 0) AS a, COUNT(approved_at) AS c FROM policy_packs",
        )
        .fetch_one(&self.db.pool)
        .await?;
        let mark = format!(
            "{}/{}/{}",
            row.try_get::<i64, _>("n")?,
            row.try_get::<i64, _>("a")?,
            row.try_get::<i64, _>("c")?
        );
        if seen.as_deref() != Some(&mark) {
            if seen.is_some() {
                self.reload().await?;
            }
            *seen = Some(mark);
        }
        Ok(())
    }

    /// Proposes a new version; it changes nothing until approved.
    pub async fn propose(&self, actor: &Principal, doc: PackDocument) -> Result<PackVersion, PackError> {
        doc.check().map_err(|(field, message)| PackError::Invalid { field, message })?;
        let mut tx = self.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO policy_packs (pack, version, body, proposed_by, proposed_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (pack, version) DO NOTHING",
        )
        .bind(&doc.pack)
        .bind(&doc.version)
        .bind(serde_json::to_string(&doc).map_err(anyhow::Error::from)?)
        .bind(&actor.holder)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(PackError::VersionExists(doc.pack, doc.version));
        }
        let detail = serde_json::json!({"version": doc.version, "document": doc});
        audit::record(&mut tx, actor, "pack.proposed", &doc.pack, &actor.brands, detail).await?;
        tx.commit().await?;
        self.reload().await?;
        self.version(&doc.pack, &doc.version).await
    }

    /// Approves a proposed version (never by its proposer); it is in force from then on.
    pub async fn approve(
        &self,
        actor: &Principal,
        pack: &str,
        version: &str,
    ) -> Result<PackVersion, PackError> {
        let mut tx = self.db.begin_write().await?;
        // One statement decides: two approvals at once cannot both pass, nor the proposer's own.
        let approved = sqlx::query(
            "UPDATE policy_packs SET approved_by = $3, approved_at = $4
             WHERE pack = $1 AND version = $2 AND approved_at IS NULL AND proposed_by <> $3",
        )
        .bind(pack)
        .bind(version)
        .bind(&actor.holder)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if approved == 0 {
            let row = sqlx::query(
                "SELECT proposed_by, approved_at FROM policy_packs WHERE pack = $1 AND version = $2",
            )
            .bind(pack)
            .bind(version)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| PackError::NotFound(pack.into(), version.into()))?;
            if row.try_get::<Option<i64>, _>("approved_at")?.is_some() {
                return Err(PackError::AlreadyApproved(pack.into(), version.into()));
            }
            return Err(PackError::SameApprover);
        }
        let detail = serde_json::json!({"version": version});
        audit::record(&mut tx, actor, "pack.approved", pack, &actor.brands, detail).await?;
        tx.commit().await?;
        self.reload().await?;
        self.version(pack, version).await
    }

    async fn version(&self, pack: &str, version: &str) -> Result<PackVersion, PackError> {
        self.versions()
            .await?
            .into_iter()
            .find(|v| v.pack == pack && v.version == version)
            .ok_or_else(|| PackError::NotFound(pack.into(), version.into()))
    }
}
