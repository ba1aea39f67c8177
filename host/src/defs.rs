//! Versioned definitions per brand (triggers, journeys, offer templates): a name whose definition is
//! versioned (editing writes a new version), audited, and used only in its active version. A version that sends marketing starts
//! inactive and waits for someone to activate it; one that does not is active at once. A sensitive
//! version is activated only by a compliance officer who did not write it (four eyes).

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Row;

use crate::audit;
use crate::auth::{Principal, Role};
use crate::store::Db;

/// Which kind of definition: its tables and names.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub table: &'static str,
    pub versions: &'static str,
    pub key: &'static str,
    /// In audit actions (`trigger.create`) and messages.
    pub noun: &'static str,
    pub prefix: &'static str,
}

pub const TRIGGERS: Kind = Kind {
    table: "triggers",
    versions: "trigger_versions",
    key: "trigger_id",
    noun: "trigger",
    prefix: "tg",
};
pub const JOURNEYS: Kind = Kind {
    table: "journeys",
    versions: "journey_versions",
    key: "journey_id",
    noun: "journey",
    prefix: "jn",
};

#[derive(Debug, Clone, Serialize)]
pub struct Head {
    pub id: String,
    pub brand_id: String,
    pub name: String,
    pub latest_version: i64,
    /// The version that runs; none: inactive.
    pub active_version: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub version: i64,
    pub definition: Value,
    pub marketing: bool,
    pub sensitive: bool,
    pub created_by: String,
    pub created_at: i64,
    pub activated_by: Option<String>,
    pub activated_at: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum DefError {
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("not found")]
    NotFound,
    #[error("the brand already has a {0} `{1}`")]
    Exists(&'static str, String),
    /// Four eyes: the activation needs someone else.
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for DefError {
    fn from(e: sqlx::Error) -> Self {
        DefError::Internal(e.into())
    }
}

pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> DefError {
    DefError::Invalid { field: field.into(), message: message.into() }
}

/// A name: 1–64 of `a-z 0-9 - _`, starting with a letter.
pub fn check_name(field: &str, name: &str) -> Result<(), DefError> {
    if crate::segments::is_name(name) {
        Ok(())
    } else {
        Err(invalid(field, "1–64 characters of a-z, 0-9, '-' and '_', starting with a letter"))
    }
}

/// What the host made of a definition when it was saved.
#[derive(Debug, Clone, Copy)]
pub struct Traits {
    pub marketing: bool,
    pub sensitive: bool,
}

fn head_of(r: &sqlx::any::AnyRow) -> Result<Head, sqlx::Error> {
    Ok(Head {
        id: r.try_get("id")?,
        brand_id: r.try_get("brand_id")?,
        name: r.try_get("name")?,
        latest_version: r.try_get("latest_version")?,
        active_version: r.try_get("active_version")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn version_of(r: &sqlx::any::AnyRow) -> anyhow::Result<Version> {
    Ok(Version {
        version: r.try_get("version")?,
        definition: serde_json::from_str(&r.try_get::<String, _>("definition")?)?,
        marketing: r.try_get::<i64, _>("marketing")? != 0,
        sensitive: r.try_get::<i64, _>("sensitive")? != 0,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        activated_by: r.try_get("activated_by")?,
        activated_at: r.try_get("activated_at")?,
    })
}

const HEAD: &str = "id, brand_id, name, latest_version, active_version, created_by, created_at, updated_at";

pub async fn get(conn: &mut sqlx::AnyConnection, kind: Kind, id: &str) -> anyhow::Result<Option<Head>> {
    let sql = format!("SELECT {HEAD} FROM {} WHERE id = $1", kind.table);
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(conn).await?;
    Ok(row.as_ref().map(head_of).transpose()?)
}

pub async fn by_name(
    conn: &mut sqlx::AnyConnection,
    kind: Kind,
    brand: &str,
    name: &str,
) -> anyhow::Result<Option<Head>> {
    let sql = format!("SELECT {HEAD} FROM {} WHERE brand_id = $1 AND name = $2", kind.table);
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(brand).bind(name).fetch_optional(conn).await?;
    Ok(row.as_ref().map(head_of).transpose()?)
}

/// One the actor may see (another brand's is "not found").
pub async fn visible(db: &Db, kind: Kind, actor: &Principal, id: &str) -> Result<Head, DefError> {
    let mut conn = db.pool.acquire().await?;
    get(&mut conn, kind, id).await?.filter(|h| actor.may_see_brand(&h.brand_id)).ok_or(DefError::NotFound)
}

pub async fn of_brand(conn: &mut sqlx::AnyConnection, kind: Kind, brand: &str) -> anyhow::Result<Vec<Head>> {
    let sql = format!("SELECT {HEAD} FROM {} WHERE brand_id = $1 ORDER BY name", kind.table);
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(brand).fetch_all(conn).await?;
    Ok(rows.iter().map(head_of).collect::<Result<_, _>>()?)
}

pub async fn version(
    conn: &mut sqlx::AnyConnection,
    kind: Kind,
    id: &str,
    version: i64,
) -> anyhow::Result<Option<Version>> {
    let sql = format!(
        "SELECT version, definition, marketing, sensitive, created_by, created_at, activated_by, activated_at
         FROM {} WHERE {} = $1 AND version = $2",
        kind.versions, kind.key
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(version).fetch_optional(conn).await?;
    row.as_ref().map(version_of).transpose()
}

pub async fn versions(conn: &mut sqlx::AnyConnection, kind: Kind, id: &str) -> anyhow::Result<Vec<Version>> {
    let sql = format!(
        "SELECT version, definition, marketing, sensitive, created_by, created_at, activated_by, activated_at
         FROM {} WHERE {} = $1 ORDER BY version DESC",
        kind.versions, kind.key
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_all(conn).await?;
    rows.iter().map(version_of).collect()
}

/// A definition in use: its id and active version, read.
#[derive(Debug, Clone)]
pub struct Active<T> {
    pub id: String,
    pub version: i64,
    pub def: T,
}

/// A brand's definitions of `kind` in their active versions, by name. One that no longer reads (it was
/// checked when saved) is passed over and logged: never a reason to stop a consumer or fail a request.
pub async fn active<T: serde::de::DeserializeOwned>(
    conn: &mut sqlx::AnyConnection,
    kind: Kind,
    brand: &str,
) -> anyhow::Result<Vec<Active<T>>> {
    let sql = format!(
        "SELECT t.id, v.version, v.definition FROM {} t
         JOIN {} v ON v.{} = t.id AND v.version = t.active_version
         WHERE t.brand_id = $1 ORDER BY t.name",
        kind.table, kind.versions, kind.key
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(brand).fetch_all(conn).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (id, version): (String, i64) = (r.try_get("id")?, r.try_get("version")?);
        match serde_json::from_str(&r.try_get::<String, _>("definition")?) {
            Ok(def) => out.push(Active { id, version, def }),
            Err(e) => {
                tracing::error!(kind = kind.noun, %id, version, error = %e, "a definition that does not read")
            }
        }
    }
    Ok(out)
}

/// Most triggers, and most journeys, a brand may have (each event runs every active trigger).
pub const MAX_PER_BRAND: i64 = 200;

/// Saves a definition: a new name (version 1) or the next version of `existing`. A version that does
/// not send marketing and is not sensitive is active at once; any other waits for `activate`.
pub async fn save(
    core: &crate::core::Core,
    kind: Kind,
    actor: &Principal,
    brand: &str,
    existing: Option<&Head>,
    (name, definition, traits): (&str, &Value, Traits),
) -> Result<(Head, i64), DefError> {
    if let Some(h) = existing
        && h.name != name
    {
        let noun = kind.noun;
        return Err(invalid("name", format!("a {noun}'s name does not change; create another {noun}")));
    }
    let (db, now) = (&core.db, core.clock().now_ms());
    let mut tx = db.begin_write().await?;
    let (id, version) = match existing.map(|h| h.id.as_str()) {
        None => {
            let sql = format!("SELECT COUNT(*) AS n FROM {} WHERE brand_id = $1", kind.table);
            let n: i64 =
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(brand).fetch_one(&mut *tx).await?.try_get("n")?;
            if n >= MAX_PER_BRAND {
                return Err(invalid("name", format!("a brand has at most {MAX_PER_BRAND} of them")));
            }
            let mut rnd = [0u8; 8];
            getrandom::fill(&mut rnd).map_err(|e| anyhow::anyhow!("{e}"))?;
            let id = format!("{}_{}", kind.prefix, hex::encode(rnd));
            let sql = format!(
                "INSERT INTO {} (id, brand_id, name, latest_version, active_version, created_by, created_at, updated_at)
                 VALUES ($1, $2, $3, 1, NULL, $4, $5, $5) ON CONFLICT (brand_id, name) DO NOTHING",
                kind.table
            );
            let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&id)
                .bind(brand)
                .bind(name)
                .bind(&actor.holder)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Err(DefError::Exists(kind.noun, name.to_string()));
            }
            (id, 1)
        }
        Some(id) => {
            let sql = format!(
                "UPDATE {} SET latest_version = latest_version + 1, updated_at = $2 WHERE id = $1",
                kind.table
            );
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(now).execute(&mut *tx).await?;
            let head = get(&mut tx, kind, id).await?.ok_or(DefError::NotFound)?;
            (id.to_string(), head.latest_version)
        }
    };
    let sql = format!(
        "INSERT INTO {} ({}, version, definition, marketing, sensitive, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        kind.versions, kind.key
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&id)
        .bind(version)
        .bind(definition.to_string())
        .bind(i64::from(traits.marketing))
        .bind(i64::from(traits.sensitive))
        .bind(&actor.holder)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let action = format!("{}.{}", kind.noun, if version == 1 { "create" } else { "update" });
    let detail = json!({"name": name, "version": version, "definition": definition,
                        "marketing": traits.marketing, "sensitive": traits.sensitive});
    audit::record(&mut tx, actor, &action, &id, &[brand.to_string()], detail).await?;
    if !traits.marketing && !traits.sensitive {
        set_active(&mut tx, kind, actor, (&id, brand), Some(version), now).await?;
    }
    tx.commit().await?;
    let mut conn = db.pool.acquire().await?;
    Ok((get(&mut conn, kind, &id).await?.ok_or(DefError::NotFound)?, version))
}

async fn set_active(
    tx: &mut crate::store::Tx,
    kind: Kind,
    actor: &Principal,
    (id, brand): (&str, &str),
    version: Option<i64>,
    now: i64,
) -> Result<(), DefError> {
    let sql = format!("UPDATE {} SET active_version = $2, updated_at = $3 WHERE id = $1", kind.table);
    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(version).bind(now).execute(&mut **tx).await?;
    if let Some(v) = version {
        let sql = format!(
            "UPDATE {} SET activated_by = $3, activated_at = $4 WHERE {} = $1 AND version = $2",
            kind.versions, kind.key
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(v)
            .bind(&actor.holder)
            .bind(now)
            .execute(&mut **tx)
            .await?;
    }
    let action = format!("{}.{}", kind.noun, if version.is_some() { "activate" } else { "deactivate" });
    audit::record(tx, actor, &action, id, &[brand.to_string()], json!({"version": version})).await?;
    Ok(())
}

/// Makes `version` the one that runs (none: stops it). A sensitive version needs a compliance officer
/// who did not write it.
pub async fn activate(
    db: &Db,
    kind: Kind,
    actor: &Principal,
    id: &str,
    version: Option<i64>,
    now: i64,
) -> Result<Head, DefError> {
    let head = visible(db, kind, actor, id).await?;
    if let Some(v) = version {
        let mut conn = db.pool.acquire().await?;
        let ver = self::version(&mut conn, kind, id, v)
            .await?
            .ok_or_else(|| invalid("version", format!("{} {id} has no version {v}", kind.noun)))?;
        if ver.sensitive && (actor.role != Role::Compliance || actor.holder == ver.created_by) {
            return Err(DefError::Forbidden(format!(
                "version {v} is sensitive: a compliance officer other than its author ({}) activates it",
                ver.created_by
            )));
        }
    }
    let mut tx = db.begin_write().await?;
    set_active(&mut tx, kind, actor, (id, &head.brand_id), version, now).await?;
    tx.commit().await?;
    let mut conn = db.pool.acquire().await?;
    get(&mut conn, kind, id).await?.ok_or(DefError::NotFound)
}
