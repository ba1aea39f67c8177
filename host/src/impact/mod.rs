//! Impact reports: what a candidate version (uploaded, not approved yet) would change, measured before a
//! compliance officer approves it. For a segment rule, the candidate runs beside the rule bound today
//! for the segment over the brand's population in the candidate's jurisdictions (both with the batch
//! form, the host's own rule applied to both): members gained and lost, by jurisdiction and with a
//! sample of players showing both decisions; failures by player and code; fuel and peak memory per
//! decision (p50/p99/max, measured with the single form on a sample) against the candidate's limits.
//!
//! Offer scorers and bonus rules have reports of their own (`rules`).
//!
//! The report runs in the background and is stored with the version (`impact_reports`, owned here);
//! its sha256, over the stored text, is part of what an approval signs (`registry::manifest`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::auth::Principal;
use crate::core::Core;
use crate::model as m;
use crate::plugins::{CallOptions, World};
use crate::store::now_ms;

mod rules;

/// The sha256 an approval signs: over the report's compact JSON text, as stored.
pub fn sha256_of(report: &Value) -> String {
    hex::encode(Sha256::digest(report.to_string().as_bytes()))
}

/// Players shown with both decisions, per side (gained, lost, failed).
const SAMPLE: usize = 20;
/// Players whose decisions are measured one at a time for fuel and memory.
const MEASURED: usize = 1000;
/// A running report whose host stopped moving it for this long may be asked for again.
const STALE_MS: i64 = 60_000;

/// What `POST /admin/plugins/{id}/impact` carries.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImpactRequest {
    /// The brand whose population is replayed (default: the key's, or the manifest's only brand).
    pub brand_id: Option<String>,
    /// Segment rules: the segment whose rule the candidate would replace.
    pub segment: Option<String>,
    /// Bonus rules: how many days of events are replayed (1–90, default 30).
    pub days: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImpactError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ImpactError {
    fn from(e: sqlx::Error) -> Self {
        ImpactError::Internal(e.into())
    }
}

impl From<crate::plugins::registry::RegistryError> for ImpactError {
    fn from(e: crate::plugins::registry::RegistryError) -> Self {
        ImpactError::Internal(anyhow::anyhow!("{e}"))
    }
}

/// A stored report, as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stored {
    pub plugin_id: String,
    pub request: Value,
    pub requested_by: String,
    /// `running`, `done`, `failed`.
    pub state: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub sha256: Option<String>,
    pub report: Option<Value>,
    pub error: Option<String>,
}

pub async fn get(core: &Core, actor: &Principal, plugin_id: &str) -> Result<Stored, ImpactError> {
    visible(core, actor, plugin_id).await?;
    let row = sqlx::query(
        "SELECT plugin_id, request, requested_by, state, started_at, finished_at, sha256, report, error
         FROM impact_reports WHERE plugin_id = $1",
    )
    .bind(plugin_id)
    .fetch_optional(&core.db.pool)
    .await?
    .ok_or(ImpactError::NotFound("impact report"))?;
    let json = |c: &str| -> Result<Option<Value>, sqlx::Error> {
        Ok(row.try_get::<Option<String>, _>(c)?.and_then(|t| serde_json::from_str(&t).ok()))
    };
    Ok(Stored {
        plugin_id: row.try_get("plugin_id")?,
        request: json("request")?.unwrap_or(Value::Null),
        requested_by: row.try_get("requested_by")?,
        state: row.try_get("state")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        sha256: row.try_get("sha256")?,
        report: json("report")?,
        error: row.try_get("error")?,
    })
}

async fn visible(
    core: &Core,
    actor: &Principal,
    plugin_id: &str,
) -> Result<crate::plugins::registry::VersionView, ImpactError> {
    core.registry
        .get(plugin_id)
        .await?
        .filter(|v| actor.covers(&v.manifest.brands))
        .ok_or(ImpactError::NotFound("plugin version"))
}

/// Starts a report for a candidate version, in the background; the report's row (state `running`).
pub async fn request(
    core: &Arc<Core>,
    actor: &Principal,
    plugin_id: &str,
    req: &ImpactRequest,
) -> Result<Stored, ImpactError> {
    let version = visible(core, actor, plugin_id).await?;
    if version.approvals.iter().any(|a| a.revoked_at.is_none()) {
        return Err(ImpactError::Conflict(
            "the version has an approval in force: it keeps the report it was approved with".into(),
        ));
    }
    let m = &version.manifest;
    let brand = match (&req.brand_id, m.brands.as_slice()) {
        (Some(b), _) if m.brands.contains(b) && actor.may_see_brand(b) => b.clone(),
        (Some(_), _) => return Err(ImpactError::NotFound("brand")),
        (None, [only]) => only.clone(),
        (None, _) => {
            return Err(ImpactError::Invalid {
                field: "brand_id",
                message: "the version is for several brands: name one".into(),
            });
        }
    };
    let kind = match m.world {
        World::Segment => {
            let name = req.segment.as_deref().ok_or_else(|| ImpactError::Invalid {
                field: "segment",
                message: "the segment whose rule the candidate would replace".into(),
            })?;
            let segment = crate::segments::by_name(&core.db, &brand, name)
                .await?
                .ok_or(ImpactError::NotFound("segment"))?;
            Kind::Segment(segment)
        }
        World::OfferScorer => Kind::Offers,
        World::BonusRule => {
            let days = req.days.unwrap_or(30);
            if !(1..=90).contains(&days) {
                return Err(ImpactError::Invalid { field: "days", message: "from 1 to 90".into() });
            }
            Kind::Bonuses(days)
        }
    };
    let request = match &kind {
        Kind::Segment(segment) => json!({"brand_id": brand, "segment": segment.name}),
        Kind::Offers => json!({"brand_id": brand}),
        Kind::Bonuses(days) => json!({"brand_id": brand, "days": days}),
    };
    let now = now_ms();
    // A report still running on a live host is not started twice.
    let start = sqlx::query(
        "INSERT INTO impact_reports (plugin_id, request, requested_by, state, started_at, heartbeat_at)
         VALUES ($1, $2, $3, 'running', $4, $4)
         ON CONFLICT (plugin_id) DO UPDATE SET request = excluded.request, requested_by = excluded.requested_by,
             state = 'running', started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
             finished_at = NULL, report = NULL, sha256 = NULL, error = NULL
         WHERE impact_reports.state <> 'running' OR impact_reports.heartbeat_at < $5",
    )
    .bind(plugin_id)
    .bind(request.to_string())
    .bind(&actor.holder)
    .bind(now)
    .bind(now - STALE_MS);
    let started = core.db.execute(start).await?;
    if started.rows_affected() == 0 {
        return Err(ImpactError::Conflict("a report of this version is running".into()));
    }
    let (core2, id) = (core.clone(), plugin_id.to_string());
    tokio::spawn(async move {
        let outcome = match kind {
            Kind::Segment(segment) => segment_report(&core2, &id, &segment).await,
            Kind::Offers => rules::offer_report(&core2, &id, &brand).await,
            Kind::Bonuses(days) => rules::bonus_report(&core2, &id, &brand, days).await,
        };
        let (state, report, error) = match outcome {
            Ok(r) => ("done", Some(r), None),
            Err(e) => ("failed", None, Some(format!("{e:#}"))),
        };
        let sha = report.as_ref().map(sha256_of);
        let text = report.as_ref().map(Value::to_string);
        let update = sqlx::query(
            "UPDATE impact_reports SET state = $2, finished_at = $3, report = $4, sha256 = $5, error = $6 WHERE plugin_id = $1",
        )
        .bind(&id)
        .bind(state)
        .bind(now_ms())
        .bind(text)
        .bind(sha)
        .bind(error);
        let saved = core2.db.execute(update).await;
        if let Err(e) = saved {
            tracing::error!(plugin_id = %id, error = %e, "storing an impact report");
        }
    });
    get(core, actor, plugin_id).await
}

/// What a report is about.
enum Kind {
    Segment(crate::segments::Segment),
    Offers,
    Bonuses(u32),
}

/// The brand's population as profiles at `now`, page by page (read ahead while a page is compared).
fn profiles_at(
    core: &Core,
    brand: &str,
    now: jiff::Timestamp,
) -> crate::profiles::Population<Vec<(String, Arc<m::Profile>)>> {
    let b = brand.to_string();
    crate::profiles::Population::read(
        core.db.clone(),
        core.contacts_key.clone(),
        brand.to_string(),
        crate::segments::sweep::PAGE,
        move |page| {
            page.profiles
                .into_iter()
                .map(|(p, s)| {
                    let v = s.at(&b, &p, now).profile;
                    (p, Arc::new(v))
                })
                .collect()
        },
    )
}

/// Says the report's host is alive (a report whose host stopped may be asked for again).
async fn heartbeat(core: &Core, plugin_id: &str) -> anyhow::Result<()> {
    core.db
        .execute(
            sqlx::query("UPDATE impact_reports SET heartbeat_at = $2 WHERE plugin_id = $1")
                .bind(plugin_id)
                .bind(now_ms()),
        )
        .await?;
    Ok(())
}

/// The candidate version as a report runs it: its component, manifest and limits, the runtime, and
/// the options of its calls (no configuration, at the report's time).
struct Candidate {
    plugin: Arc<crate::plugins::Plugin>,
    manifest: crate::plugins::registry::manifest::Manifest,
    limits: crate::plugins::Limits,
    runtime: Arc<crate::plugins::Runtime>,
    now: jiff::Timestamp,
    opts: CallOptions,
}

impl Candidate {
    async fn load(core: &Core, plugin_id: &str) -> anyhow::Result<Candidate> {
        let (plugin, manifest, limits) =
            core.registry.candidate(plugin_id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let now = core.clock().now();
        let opts = CallOptions { limits, now, config: Default::default() };
        Ok(Candidate { plugin, manifest, limits, runtime: core.registry.runtime().clone(), now, opts })
    }
}

/// Whether a version's jurisdictions cover `j`.
fn covers(manifest: &crate::plugins::registry::manifest::Manifest, j: &str) -> bool {
    manifest.jurisdictions.iter().any(|c| c == "*" || c == j)
}

/// One side's decision about a player, as the report shows it.
fn shown(d: &Result<m::Membership, String>) -> Value {
    match d {
        Ok(ms) => json!({"member": ms.member, "reason": ms.reason, "score": ms.score}),
        Err(e) => json!({"error": e}),
    }
}

#[derive(Default)]
struct Side {
    total: u64,
    by_jurisdiction: BTreeMap<String, u64>,
    sample: Vec<Value>,
}

impl Side {
    fn add(&mut self, jurisdiction: &str, entry: impl FnOnce() -> Value) {
        self.total += 1;
        *self.by_jurisdiction.entry(jurisdiction.to_string()).or_default() += 1;
        if self.sample.len() < SAMPLE {
            self.sample.push(entry());
        }
    }

    fn json(&self) -> Value {
        json!({"total": self.total, "by_jurisdiction": self.by_jurisdiction, "sample": self.sample})
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The candidate beside the rule bound today for `segment`, over the brand's population.
async fn segment_report(
    core: &Core,
    plugin_id: &str,
    segment: &crate::segments::Segment,
) -> anyhow::Result<Value> {
    let Candidate { plugin: candidate, manifest, limits, runtime, now, opts: candidate_opts } =
        Candidate::load(core, plugin_id).await?;
    let brand = segment.brand_id.as_str();
    let in_scope = |j: &str| covers(&manifest, j);

    let (mut gained, mut lost, mut failed, mut current_failed) =
        (Side::default(), Side::default(), Side::default(), Side::default());
    let (mut population, mut members_before, mut members_after, mut host_out) = (0u64, 0u64, 0u64, 0u64);
    let mut failures_by_code: BTreeMap<String, u64> = BTreeMap::new();
    let (mut fuel, mut memory): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    let mut current_versions: BTreeMap<String, Value> = BTreeMap::new();
    let mut pages = profiles_at(core, brand, now);
    while let Some(page) = pages.next().await? {
        heartbeat(core, plugin_id).await?;
        let profiles: Vec<(String, Arc<m::Profile>)> =
            page.into_iter().filter(|(_, p)| in_scope(&p.jurisdiction)).collect();
        // The host's rule decides both sides alike: those players cannot change.
        let (blocked, decided): (Vec<_>, Vec<_>) =
            profiles.into_iter().partition(|(_, p)| crate::segments::host_rule(segment, p).is_some());
        population += (blocked.len() + decided.len()) as u64;
        host_out += blocked.len() as u64;
        // Today: each player's jurisdiction's rule (none bound: out), as a sweep decides.
        let (bound, _) = crate::segments::sweep::decide_bound(core, segment, &decided, now).await?;
        let mut today: Vec<Result<m::Membership, String>> = Vec::with_capacity(bound.len());
        for b in bound {
            if let Some(binding) = &b.binding {
                current_versions.entry(binding.plugin_id.clone()).or_insert_with(|| {
                    json!({"plugin_id": binding.plugin_id, "name": binding.name, "version": binding.version})
                });
            }
            today.push(
                b.outcome
                    .map(|v| m::Membership { member: v.member, score: v.score, reason: v.reason })
                    .map_err(|(code, _)| code.to_string()),
            );
        }
        // The candidate, over everyone in its jurisdictions.
        let input: Vec<_> = decided.iter().map(|(_, p)| p.clone()).collect();
        let (outcomes, _) = crate::segments::batch(&runtime, &candidate, &candidate_opts, input).await?;
        // Fuel and memory per decision, with the single form, on the first players.
        let measure: Vec<std::sync::Arc<m::Profile>> =
            decided.iter().take(MEASURED.saturating_sub(fuel.len())).map(|(_, p)| p.clone()).collect();
        if !measure.is_empty() {
            let (rt, plugin, opts) = (runtime.clone(), candidate.clone(), candidate_opts.clone());
            let usage = tokio::task::spawn_blocking(move || {
                measure.iter().map(|p| rt.segment(&plugin, &opts, p, None).usage).collect::<Vec<_>>()
            })
            .await?;
            fuel.extend(usage.iter().map(|u| u.fuel));
            memory.extend(usage.iter().map(|u| u.peak_memory_bytes));
        }
        for (((player, p), before), after) in decided.iter().zip(&today).zip(outcomes) {
            let after = after.map_err(|e| e.code().to_string());
            let entry = || json!({"player_id": player, "jurisdiction": p.jurisdiction, "current": shown(before), "candidate": shown(&after)});
            if before.is_err() {
                current_failed.add(&p.jurisdiction, entry);
            }
            let was = matches!(before, Ok(ms) if ms.member);
            members_before += u64::from(was);
            match &after {
                Err(code) => {
                    *failures_by_code.entry(code.clone()).or_default() += 1;
                    failed.add(&p.jurisdiction, entry);
                    // A failed decision leaves the membership as it was.
                    members_after += u64::from(was);
                }
                Ok(ms) => {
                    members_after += u64::from(ms.member);
                    match (was, ms.member) {
                        (false, true) => gained.add(&p.jurisdiction, entry),
                        (true, false) => lost.add(&p.jurisdiction, entry),
                        _ => {}
                    }
                }
            }
        }
    }
    fuel.sort_unstable();
    memory.sort_unstable();
    Ok(json!({
        "kind": "segment",
        "candidate": {"plugin_id": plugin_id, "name": manifest.name, "version": manifest.version,
                      "jurisdictions": manifest.jurisdictions},
        "current": current_versions.into_values().collect::<Vec<_>>(),
        "brand_id": brand,
        "segment": {"id": segment.id, "name": segment.name, "marketing": segment.marketing},
        "decided_at": now.to_string(),
        "population": population,
        "host_out": host_out,
        "members": {"current": members_before, "candidate": members_after},
        "gained": gained.json(),
        "lost": lost.json(),
        "failures": {
            "candidate": {"players": failed.total, "by_code": failures_by_code, "by_jurisdiction": failed.by_jurisdiction,
                          "sample": failed.sample},
            "current": {"players": current_failed.total, "sample": current_failed.sample},
        },
        "limits": {
            "measured_decisions": fuel.len(),
            "fuel": {"p50": percentile(&fuel, 0.50), "p99": percentile(&fuel, 0.99), "max": fuel.last().copied().unwrap_or(0),
                     "limit": limits.fuel},
            "peak_memory_bytes": {"p50": percentile(&memory, 0.50), "p99": percentile(&memory, 0.99),
                                  "max": memory.last().copied().unwrap_or(0), "limit": limits.memory_bytes},
        },
    }))
}
