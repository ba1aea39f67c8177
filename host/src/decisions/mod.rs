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

/// A decision taken and not recorded yet: a caller that writes in its own transaction (a bus consumer,
/// a sweep) records it there, or not at all when nothing changed.
pub struct Evaluated {
    req: DecisionRequest,
    pub binding: Arc<ActiveBinding>,
    /// The input's profile, hashed into the record only if the decision is recorded: most of a
    /// consumer's decisions change nothing and are not.
    profile: m::Profile,
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

/// A decision ready to run: its binding and its input fixed.
struct Call {
    req: DecisionRequest,
    binding: Arc<ActiveBinding>,
    profile: m::Profile,
}

impl Call {
    fn new(core: &Core, req: DecisionRequest, profile: m::Profile) -> Result<Call, DecisionError> {
        let binding = binding_for(core, &req, &profile.jurisdiction)?;
        Ok(Call { req, binding, profile })
    }

    /// Runs the plugin on this thread, to its end (it is bounded by its own limits).
    fn run(
        self,
        runtime: &crate::plugins::Runtime,
        now: jiff::Timestamp,
    ) -> Result<Evaluated, DecisionError> {
        let Call { req, binding, profile } = self;
        let plugin = match &binding.plugin {
            Ok(p) => p.clone(),
            Err(why) => {
                let outcome = Err(PluginError::Instantiate(format!("integrity check failed: {why}")));
                return Ok(Evaluated { req, binding, profile, outcome, usage: Usage::default() });
            }
        };
        let opts = CallOptions { limits: binding.limits, now, config: binding.config.clone() };
        let (outcome, usage) = match req.world {
            World::Segment => {
                let r = runtime.segment(&plugin, &opts, &profile, req.event.as_ref());
                (r.outcome.map(|v| json!(v)), r.usage)
            }
            World::BonusRule => {
                let event = req
                    .event
                    .as_ref()
                    .ok_or_else(|| DecisionError::Invalid("a bonus-rule decision needs `event`".into()))?;
                let r = runtime.bonus_rule(&plugin, &opts, event, &profile, &req.bonuses);
                (r.outcome.map(|v| json!(v)), r.usage)
            }
            World::OfferScorer => {
                let context = req.context.as_ref().ok_or_else(|| {
                    DecisionError::Invalid("an offer-scorer decision needs `context`".into())
                })?;
                let r = runtime.offer_scorer(&plugin, &opts, &profile, &req.candidates, context);
                (r.outcome.map(|v| json!(v)), r.usage)
            }
        };
        Ok(Evaluated { req, binding, profile, outcome, usage })
    }
}

/// Runs the plugin bound for the request on `profile` (the host's profile of the player at `now`).
pub async fn evaluate(
    core: &Core,
    req: &DecisionRequest,
    profile: m::Profile,
    now: jiff::Timestamp,
) -> Result<Evaluated, DecisionError> {
    let call = Call::new(core, req.clone(), profile)?;
    let runtime = core.registry.runtime().clone();
    tokio::task::spawn_blocking(move || call.run(&runtime, now))
        .await
        .map_err(|e| DecisionError::Internal(e.into()))?
}

/// `evaluate` for a bus consumer's batch, answered in the order given: each decision is its own call
/// (its own instance, limits and fuel: one that traps fails alone) and its own record, but the calls go
/// to the blocking threads in one run per core instead of one hop each — the hop cost a small rule
/// twice its call. Only for calls that read and write nothing the others depend on.
pub async fn evaluate_many(
    core: &Core,
    asks: Vec<(DecisionRequest, m::Profile)>,
    now: jiff::Timestamp,
) -> Vec<Result<Evaluated, DecisionError>> {
    let mut out: Vec<Option<Result<Evaluated, DecisionError>>> = Vec::with_capacity(asks.len());
    let (mut calls, mut indices) = (Vec::with_capacity(asks.len()), Vec::with_capacity(asks.len()));
    for (i, (req, profile)) in asks.into_iter().enumerate() {
        match Call::new(core, req, profile) {
            Ok(call) => {
                calls.push(call);
                indices.push(i);
                out.push(None);
            }
            Err(e) => out.push(Some(Err(e))),
        }
    }
    let runtime = core.registry.runtime().clone();
    let run = move |part: Vec<Call>| part.into_iter().map(|c| c.run(&runtime, now)).collect::<Vec<_>>();
    let mut indices = indices.into_iter();
    for (len, part) in crate::plugins::across_cores(calls, run).await {
        let slots = indices.by_ref().take(len);
        match part {
            Ok(results) => {
                for (i, r) in slots.zip(results) {
                    out[i] = Some(r);
                }
            }
            Err(e) => {
                let why = format!("a plugin run ended: {e}");
                for i in slots {
                    out[i] = Some(Err(DecisionError::Internal(anyhow::anyhow!(why.clone()))));
                }
            }
        }
    }
    out.into_iter().map(|r| r.expect("every call answered")).collect()
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
    /// The sha256 of everything the plugin was given.
    fn input_hash(&self) -> String {
        let r = &self.req;
        let input = json!({"world": r.world, "segment": r.segment, "profile": self.profile, "event": r.event,
                           "bonuses": r.bonuses, "candidates": r.candidates, "context": r.context});
        hex::encode(Sha256::digest(input.to_string().as_bytes()))
    }

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
            input_hash: &self.input_hash(),
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
