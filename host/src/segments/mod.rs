//! Segments: a name per brand (`dormant-depositors`, `vip`, `churning`) whose members the segment rule
//! bound for each player's jurisdiction decides (the binding's slot is the segment's name, so DE and UK
//! players of one segment can follow different rules). Membership is kept current in two ways: the
//! `segments` bus consumer re-evaluates a player's segments when their events arrive, after the profile
//! took them; sweeps evaluate the whole population with the batch form, on each segment's schedule, on
//! demand and when its rule's bindings change (`sweep`).
//!
//! Memberships are spans (entered, left) with what decided each end: the plugin version and binding, the
//! event or sweep, the reason and score. Entering and leaving are events on the bus
//! (`segment.entered`, `segment.left`) written in the transaction of the change. The host keeps one rule
//! of its own, whatever a plugin answers: a player whose RG state blocks marketing (self-excluded,
//! cooling off, a harm marker, a limit hit today) is in no marketing segment.
//!
//! This module owns the tables `segments`, `segment_members` and `segment_sweeps`.

pub mod consumer;
pub mod sweep;

pub use crate::store::segments::{
    Change, Membership, Target, Verdict, apply, counts, link_decision, members, of_player,
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;

use crate::audit;
use crate::auth::Principal;
use crate::model as m;
use crate::store::Db;

/// The bus consumer's name (its offset's key).
pub const CONSUMER: &str = "segments";

/// The capability's bus consumers: the real-time one follows the profiles.
pub fn consumers(core: &std::sync::Arc<crate::core::Core>) -> Vec<crate::bus::Consumer> {
    let updater = consumer::SegmentUpdater::new(core.clone());
    // A segment's rule decides on the player's activity; the host's own events are not re-evaluated.
    vec![crate::bus::Consumer::new(CONSUMER, updater).after(crate::profiles::CONSUMER).platform_events_only()]
}

/// Sweep intervals a segment may have, in minutes.
pub const SWEEP_MINUTES: std::ops::RangeInclusive<i64> = 5..=60;

#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    pub id: String,
    pub brand_id: String,
    pub name: String,
    pub description: String,
    /// Players whose RG state blocks marketing are never members.
    pub marketing: bool,
    pub sweep_minutes: i64,
    pub next_sweep_at: i64,
    /// The rule's bindings the last sweep was started for (a change starts a sweep).
    #[serde(skip)]
    pub binding_mark: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What `POST /admin/segments` and `PATCH /admin/segments/{id}` carry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSpec {
    pub brand_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub marketing: Option<bool>,
    pub sweep_minutes: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    #[error("segment not found")]
    NotFound,
    #[error("the brand already has a segment `{0}`")]
    Exists(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for SegmentError {
    fn from(e: sqlx::Error) -> Self {
        SegmentError::Internal(e.into())
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> SegmentError {
    SegmentError::Invalid { field, message: message.into() }
}

const COLUMNS: &str = "id, brand_id, name, description, marketing, sweep_minutes, next_sweep_at, binding_mark, created_by, created_at, updated_at";

impl Segment {
    /// The segment as its membership table names it.
    pub fn target(&self) -> Target<'_> {
        Target { id: &self.id, brand_id: &self.brand_id, name: &self.name }
    }
}

fn row_to_segment(r: &sqlx::any::AnyRow) -> Result<Segment, sqlx::Error> {
    Ok(Segment {
        id: r.try_get("id")?,
        brand_id: r.try_get("brand_id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        marketing: r.try_get::<i64, _>("marketing")? != 0,
        sweep_minutes: r.try_get("sweep_minutes")?,
        next_sweep_at: r.try_get("next_sweep_at")?,
        binding_mark: r.try_get("binding_mark")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// A segment's or rule's name: 1–64 of `a-z 0-9 - _`, starting with a letter (it names a binding slot).
pub fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Checks a segment's name.
fn check_name(name: &str) -> Result<(), SegmentError> {
    if is_name(name) {
        Ok(())
    } else {
        Err(invalid("name", "1–64 characters of a-z, 0-9, '-' and '_', starting with a letter"))
    }
}

fn check_spec(spec: &SegmentSpec) -> Result<(), SegmentError> {
    if let Some(d) = &spec.description
        && d.chars().count() > 500
    {
        return Err(invalid("description", "at most 500 characters"));
    }
    if let Some(n) = spec.sweep_minutes
        && !SWEEP_MINUTES.contains(&n)
    {
        return Err(invalid(
            "sweep_minutes",
            format!("between {} and {} minutes", SWEEP_MINUTES.start(), SWEEP_MINUTES.end()),
        ));
    }
    Ok(())
}

/// Creates a segment of `brand` (audited); its first sweep is due at once.
pub async fn create(
    db: &Db,
    actor: &Principal,
    brand: &str,
    spec: &SegmentSpec,
    now: i64,
) -> Result<Segment, SegmentError> {
    let name = spec.name.as_deref().ok_or_else(|| invalid("name", "required"))?;
    check_name(name)?;
    check_spec(spec)?;
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = format!("sg_{}", hex::encode(rnd));
    let mut tx = db.begin_write().await?;
    let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO segments ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, '', $8, $9, $9)
         ON CONFLICT (brand_id, name) DO NOTHING"
    )))
    .bind(&id)
    .bind(brand)
    .bind(name)
    .bind(spec.description.clone().unwrap_or_default())
    .bind(i64::from(spec.marketing.unwrap_or(true)))
    .bind(spec.sweep_minutes.unwrap_or(15))
    .bind(now)
    .bind(&actor.holder)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(SegmentError::Exists(name.to_string()));
    }
    audit::record(&mut tx, actor, "segment.create", &id, &[brand.to_string()], json!(spec_json(spec)))
        .await?;
    tx.commit().await?;
    get(db, &id).await?.ok_or(SegmentError::NotFound)
}

fn spec_json(spec: &SegmentSpec) -> Value {
    json!({"name": spec.name, "description": spec.description, "marketing": spec.marketing,
           "sweep_minutes": spec.sweep_minutes})
}

/// Changes a segment's description, marketing flag or schedule (audited); its name and brand stay.
pub async fn update(
    db: &Db,
    actor: &Principal,
    id: &str,
    spec: &SegmentSpec,
    now: i64,
) -> Result<Segment, SegmentError> {
    if spec.name.is_some() || spec.brand_id.is_some() {
        let field = if spec.name.is_some() { "name" } else { "brand_id" };
        return Err(invalid(field, "a segment's name and brand do not change; create another segment"));
    }
    check_spec(spec)?;
    let seg = visible(db, actor, id).await?;
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "UPDATE segments SET description = $2, marketing = $3, sweep_minutes = $4, updated_at = $5,
             next_sweep_at = CASE WHEN $4 <> sweep_minutes THEN $5 ELSE next_sweep_at END
         WHERE id = $1",
    )
    .bind(id)
    .bind(spec.description.clone().unwrap_or(seg.description.clone()))
    .bind(i64::from(spec.marketing.unwrap_or(seg.marketing)))
    .bind(spec.sweep_minutes.unwrap_or(seg.sweep_minutes))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    audit::record(&mut tx, actor, "segment.update", id, std::slice::from_ref(&seg.brand_id), spec_json(spec))
        .await?;
    tx.commit().await?;
    get(db, id).await?.ok_or(SegmentError::NotFound)
}

pub async fn get(db: &Db, id: &str) -> Result<Option<Segment>, SegmentError> {
    let sql = format!("SELECT {COLUMNS} FROM segments WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&db.pool).await?;
    Ok(row.as_ref().map(row_to_segment).transpose()?)
}

/// A segment the actor may see (another brand's is "not found").
pub async fn visible(db: &Db, actor: &Principal, id: &str) -> Result<Segment, SegmentError> {
    get(db, id).await?.filter(|s| actor.may_see_brand(&s.brand_id)).ok_or(SegmentError::NotFound)
}

pub async fn by_name(db: &Db, brand: &str, name: &str) -> anyhow::Result<Option<Segment>> {
    let sql = format!("SELECT {COLUMNS} FROM segments WHERE brand_id = $1 AND name = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(brand).bind(name).fetch_optional(&db.pool).await?;
    Ok(row.as_ref().map(row_to_segment).transpose()?)
}

/// Every segment of a brand, by name.
pub async fn of_brand(conn: &mut sqlx::AnyConnection, brand: &str) -> anyhow::Result<Vec<Segment>> {
    let sql = format!("SELECT {COLUMNS} FROM segments WHERE brand_id = $1 ORDER BY name");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(brand).fetch_all(conn).await?;
    Ok(rows.iter().map(row_to_segment).collect::<Result<_, _>>()?)
}

/// Every segment of every brand (the scheduler's list).
pub async fn all(db: &Db) -> anyhow::Result<Vec<Segment>> {
    let sql = format!("SELECT {COLUMNS} FROM segments ORDER BY brand_id, name");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&db.pool).await?;
    Ok(rows.iter().map(row_to_segment).collect::<Result<_, _>>()?)
}

/// What decided a player's membership in one segment: a verdict (and the plugin's decision behind it,
/// to be recorded if it changes something), or a plugin that failed (membership unchanged).
pub enum Decision {
    Verdict(Verdict, Option<crate::decisions::Evaluated>),
    Failed(crate::decisions::Evaluated),
}

/// A membership to decide: the segment, the player, their profile and the event that asks.
pub type Ask<'a> = (&'a Segment, &'a str, m::Profile, Option<m::Event>);

/// Decides players' memberships on their profiles at `now`, in the order asked: the host's rule first,
/// then the rule bound for the segment and the player's jurisdiction (none bound: out), through the
/// decision service (the plugin calls of the whole list run together).
pub async fn decide_many(
    core: &crate::core::Core,
    asks: Vec<Ask<'_>>,
    now: jiff::Timestamp,
) -> Vec<anyhow::Result<Decision>> {
    use crate::decisions::{DecisionError, DecisionRequest, evaluate_many};
    let mut out: Vec<Option<anyhow::Result<Decision>>> = Vec::with_capacity(asks.len());
    let (mut calls, mut called) = (Vec::new(), Vec::new());
    for (i, (segment, player, profile, event)) in asks.into_iter().enumerate() {
        if let Some(reason) = host_rule(segment, &profile) {
            out.push(Some(Ok(Decision::Verdict(Verdict::host_out(reason), None))));
            continue;
        }
        out.push(None);
        called.push((i, profile.jurisdiction.clone()));
        let mut req = DecisionRequest::new(&segment.brand_id, player, crate::plugins::World::Segment);
        req.segment = Some(segment.name.clone());
        req.event = event;
        calls.push((req, profile));
    }
    let evaluated = evaluate_many(core, calls, now).await;
    for ((i, jurisdiction), evaluated) in called.into_iter().zip(evaluated) {
        out[i] = Some(match evaluated {
            Ok(e) => decision_of(e),
            Err(DecisionError::NoBinding { .. }) => {
                Ok(Decision::Verdict(Verdict::host_out(no_rule(&jurisdiction)), None))
            }
            Err(e) => Err(anyhow::Error::new(e)),
        });
    }
    out.into_iter().map(|d| d.expect("every ask answered")).collect()
}

/// What a segment rule's answer makes of the membership.
fn decision_of(evaluated: crate::decisions::Evaluated) -> anyhow::Result<Decision> {
    let Ok(output) = &evaluated.outcome else { return Ok(Decision::Failed(evaluated)) };
    let m: m::Membership = serde_json::from_value(output.clone())?;
    let verdict = Verdict {
        member: m.member,
        reason: m.reason,
        score: m.score,
        plugin_id: evaluated.binding.plugin_id.clone(),
        binding_id: evaluated.binding.binding_id.clone(),
    };
    Ok(Decision::Verdict(verdict, Some(evaluated)))
}

/// Why a player is out when no rule is bound for their jurisdiction.
pub fn no_rule(jurisdiction: &str) -> String {
    format!("host: no rule of this segment is bound for jurisdiction {jurisdiction} or the brand default")
}

/// The host's rule over every plugin: a player whose RG state blocks marketing is in no marketing
/// segment. The reason, when it applies.
pub fn host_rule(segment: &Segment, profile: &m::Profile) -> Option<String> {
    if !segment.marketing {
        return None;
    }
    crate::policy::gate::rg_codes(profile).map(|codes| format!("host: RG blocks marketing ({codes})"))
}

/// Decides `profiles` with the batch form of `plugin`, in parts spread over the cores; a part that fails
/// is decided again one profile at a time, so that a failure is one player's, with its own error. The
/// fuel spent in all.
pub async fn batch(
    runtime: &std::sync::Arc<crate::plugins::Runtime>,
    plugin: &std::sync::Arc<crate::plugins::Plugin>,
    opts: &crate::plugins::CallOptions,
    profiles: Vec<std::sync::Arc<m::Profile>>,
) -> anyhow::Result<(Vec<Result<m::Membership, crate::plugins::PluginError>>, u64)> {
    let (runtime, plugin, opts) = (runtime.clone(), plugin.clone(), opts.clone());
    // The parts hold the caller's profiles (shared, never copied: copying and freeing their strings
    // cost a fifth of the evaluation).
    let decide = move |part: Vec<std::sync::Arc<m::Profile>>| {
        let run = runtime.segment_batch(&plugin, &opts, &part);
        let mut fuel = run.usage.fuel;
        let out: Vec<_> = match run.outcome {
            Ok(ms) => ms.into_iter().map(Ok).collect(),
            Err(_) => part
                .iter()
                .map(|p| {
                    let one = runtime.segment(&plugin, &opts, p.as_ref(), None);
                    fuel += one.usage.fuel;
                    one.outcome
                })
                .collect(),
        };
        (out, fuel)
    };
    let (mut all, mut fuel) = (Vec::with_capacity(profiles.len()), 0);
    for (_, part) in crate::plugins::across_cores(profiles, decide).await {
        let (out, f) = part.map_err(|_| anyhow::anyhow!("a batch worker panicked"))?;
        all.extend(out);
        fuel += f;
    }
    Ok((all, fuel))
}
