//! The decision service: the plugin bound for the player's brand × jurisdiction × world decides, on the
//! host's profile of the player, in the runtime; the host checks the answer and records the decision with
//! its basis (version, binding, a hash of the input, output, fuel, duration). One path for every caller —
//! the HTTP API, bus consumers, sweeps, the CLI. A version that failed its integrity check at load fails
//! closed: no decision, an error, a record.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::core::Core;
use crate::model as m;
use crate::plugins::registry::bindings::ActiveBinding;
use crate::plugins::{CallOptions, PluginError, Usage, World};
use crate::profiles::ProfileError;
use crate::store::decisions::{self, NewDecision};

/// What a decision is asked about.
#[derive(Debug, Clone)]
pub struct DecisionRequest {
    pub brand: String,
    pub player_id: String,
    pub world: World,
    /// segment: the segment whose rule decides (its binding slot); none for the world's general binding.
    pub segment: Option<String>,
    pub trace_id: Option<String>,
    /// segment (optional), bonus-rule (required): the event.
    pub event: Option<m::Event>,
    pub bonuses: Vec<m::BonusState>,
    pub candidates: Vec<m::OfferTemplate>,
    /// offer-scorer (required).
    pub context: Option<m::OfferContext>,
}

impl DecisionRequest {
    /// A request about a player with nothing else given (the caller sets what its world needs).
    pub fn new(brand: &str, player: &str, world: World) -> DecisionRequest {
        DecisionRequest {
            brand: brand.to_string(),
            player_id: player.to_string(),
            world,
            segment: None,
            trace_id: None,
            event: None,
            bonuses: Vec::new(),
            candidates: Vec::new(),
            context: None,
        }
    }
}

/// Which version decided, and through which binding.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub plugin_id: String,
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub binding_id: String,
}

/// A decision taken and recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Decided {
    pub decision: Value,
    pub plugin: Provenance,
    pub usage: Usage,
    pub decision_seq: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("{0}")]
    Invalid(String),
    #[error("no {world} plugin is bound for brand {brand}, jurisdiction {jurisdiction} or the brand default")]
    NoBinding { world: World, brand: String, jurisdiction: String },
    #[error("plugin version {plugin_id} may not run: {why}")]
    IntegrityFailed { plugin_id: String, why: String },
    /// The plugin failed (recorded): `code` is the runtime's.
    #[error("{message}")]
    Plugin { code: &'static str, message: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Runs and records one decision, on the player's current profile.
pub async fn decide(core: &Core, req: &DecisionRequest) -> Result<Decided, DecisionError> {
    let now = core.clock().now();
    let stored = core.profiles.current(&req.brand, &req.player_id).await?;
    let profile = stored.at(&req.brand, &req.player_id, now).profile;
    let evaluated = evaluate(core, req, profile, now).await?;
    let mut tx = core.db.begin_write().await.map_err(anyhow::Error::from)?;
    let recorded = evaluated.record_in(&mut tx).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    recorded.into_result()
}

/// Plugin calls a bus consumer makes for its batch at most at once.
const SIDE_BY_SIDE: usize = 4;

/// Runs a batch's plugin calls side by side, a few at once, and answers in the order given. Each call
/// waits for a blocking thread and the guest; one after the other, a consumer spent most of its batch
/// waiting for them on one core. Only for calls that read and write nothing the others depend on.
pub async fn side_by_side<F: Future>(calls: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    use futures_util::StreamExt;
    futures_util::stream::iter(calls).buffered(SIDE_BY_SIDE).collect().await
}

/// A decision taken and not recorded yet: a caller that writes in its own transaction (a bus consumer,
/// a sweep) records it there, or not at all when nothing changed.
pub struct Evaluated {
    req: DecisionRequest,
    pub binding: Arc<ActiveBinding>,
    input_hash: String,
    pub outcome: Result<Value, PluginError>,
    pub usage: Usage,
}

/// The binding that decides for `req` on this profile: one snapshot for the whole decision, so a swap
/// meanwhile does not change what runs.
fn binding_for(
    core: &Core,
    req: &DecisionRequest,
    jurisdiction: &str,
) -> Result<Arc<ActiveBinding>, DecisionError> {
    let slot = req.segment.as_deref().unwrap_or_default();
    core.registry.snapshot().resolve(&req.brand, jurisdiction, req.world, slot).ok_or_else(|| {
        DecisionError::NoBinding {
            world: req.world,
            brand: req.brand.clone(),
            jurisdiction: jurisdiction.to_string(),
        }
    })
}

/// Runs the plugin bound for the request on `profile` (the host's profile of the player at `now`).
pub async fn evaluate(
    core: &Core,
    req: &DecisionRequest,
    profile: m::Profile,
    now: jiff::Timestamp,
) -> Result<Evaluated, DecisionError> {
    let binding = binding_for(core, req, &profile.jurisdiction)?;
    let input = json!({"world": req.world, "segment": req.segment, "profile": profile, "event": req.event,
                       "bonuses": req.bonuses, "candidates": req.candidates, "context": req.context});
    let input_hash = hex::encode(Sha256::digest(input.to_string().as_bytes()));
    let plugin = match &binding.plugin {
        Ok(p) => p.clone(),
        Err(why) => {
            let outcome = Err(PluginError::Instantiate(format!("integrity check failed: {why}")));
            return Ok(Evaluated { req: req.clone(), binding, input_hash, outcome, usage: Usage::default() });
        }
    };
    let opts = CallOptions { limits: binding.limits, now, config: binding.config.clone() };
    let runtime = core.registry.runtime().clone();
    let call = req.clone();
    // The call runs to its end on a blocking thread (it is bounded by its own limits).
    let (outcome, usage) = tokio::task::spawn_blocking(move || -> Result<_, DecisionError> {
        Ok(match call.world {
            World::Segment => {
                let r = runtime.segment(&plugin, &opts, &profile, call.event.as_ref());
                (r.outcome.map(|v| json!(v)), r.usage)
            }
            World::BonusRule => {
                let event = call
                    .event
                    .ok_or_else(|| DecisionError::Invalid("a bonus-rule decision needs `event`".into()))?;
                let r = runtime.bonus_rule(&plugin, &opts, &event, &profile, &call.bonuses);
                (r.outcome.map(|v| json!(v)), r.usage)
            }
            World::OfferScorer => {
                let context = call.context.ok_or_else(|| {
                    DecisionError::Invalid("an offer-scorer decision needs `context`".into())
                })?;
                let r = runtime.offer_scorer(&plugin, &opts, &profile, &call.candidates, &context);
                (r.outcome.map(|v| json!(v)), r.usage)
            }
        })
    })
    .await
    .map_err(|e| DecisionError::Internal(e.into()))??;
    Ok(Evaluated { req: req.clone(), binding, input_hash, outcome, usage })
}

/// A recorded decision: what the plugin answered, or why it did not.
pub struct Recorded {
    pub seq: i64,
    evaluated: Evaluated,
}

impl Recorded {
    /// The decision, or its failure as the error callers answer with.
    pub fn into_result(self) -> Result<Decided, DecisionError> {
        let e = self.evaluated;
        let b = &e.binding;
        let plugin = Provenance {
            plugin_id: b.plugin_id.clone(),
            name: b.name.clone(),
            version: b.version.clone(),
            sha256: b.sha256.clone(),
            binding_id: b.binding_id.clone(),
        };
        match (e.outcome, &b.plugin) {
            (Ok(decision), _) => Ok(Decided { decision, plugin, usage: e.usage, decision_seq: self.seq }),
            (Err(_), Err(why)) => {
                Err(DecisionError::IntegrityFailed { plugin_id: b.plugin_id.clone(), why: why.clone() })
            }
            (Err(err), Ok(_)) => Err(DecisionError::Plugin {
                code: err.code(),
                message: format!("{} {}: {err}", b.name, b.version),
            }),
        }
    }
}

impl Evaluated {
    /// Records the decision with its basis in the caller's connection (or transaction).
    pub async fn record_in(self, conn: &mut sqlx::AnyConnection) -> anyhow::Result<Recorded> {
        let (output, outcome) = match (&self.outcome, &self.binding.plugin) {
            (Ok(v), _) => (v.clone(), "ok"),
            (Err(_), Err(why)) => (json!({"error": why}), "integrity_failed"),
            (Err(e), Ok(_)) => (json!({"error": e}), e.code()),
        };
        let d = NewDecision {
            brand_id: &self.req.brand,
            player_id: &self.req.player_id,
            world: self.req.world.name(),
            plugin_id: &self.binding.plugin_id,
            binding_id: &self.binding.binding_id,
            input_hash: &self.input_hash,
            output: &output,
            outcome,
            fuel: self.usage.fuel,
            duration_ns: self.usage.duration_ns,
            trace_id: self.req.trace_id.as_deref(),
        };
        let seq = decisions::record_in(conn, &d).await?;
        Ok(Recorded { seq, evaluated: self })
    }
}
