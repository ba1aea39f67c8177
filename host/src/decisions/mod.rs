//! The decision service: the plugin bound for the player's brand × jurisdiction × world decides, on the
//! host's profile of the player, in the runtime; the host checks the answer and records the decision with
//! its basis (version, binding, a hash of the input, output, fuel, duration). One path for every caller —
//! the HTTP API, bus consumers, sweeps, the CLI. A version that failed its integrity check at load fails
//! closed: no decision, an error, a record.

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::core::Core;
use crate::model as m;
use crate::plugins::registry::bindings::ActiveBinding;
use crate::plugins::{CallOptions, Usage, World};
use crate::profiles::ProfileError;
use crate::store::decisions::{self, NewDecision};

/// What a decision is asked about.
#[derive(Debug, Clone)]
pub struct DecisionRequest {
    pub brand: String,
    pub player_id: String,
    pub world: World,
    pub trace_id: Option<String>,
    /// segment (optional), bonus-rule (required): the event.
    pub event: Option<m::Event>,
    pub bonuses: Vec<m::BonusState>,
    pub candidates: Vec<m::OfferTemplate>,
    /// offer-scorer (required).
    pub context: Option<m::OfferContext>,
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

/// Runs and records one decision.
pub async fn decide(core: &Core, req: &DecisionRequest) -> Result<Decided, DecisionError> {
    let now = core.clock().now();
    let stored = core.profiles.current(&req.brand, &req.player_id).await?;
    let profile = stored.at(&req.brand, &req.player_id, now).profile;
    // One snapshot for the whole decision: a swap meanwhile does not change what runs.
    let snapshot = core.registry.snapshot();
    let binding = snapshot.resolve(&req.brand, &profile.jurisdiction, req.world).ok_or_else(|| {
        DecisionError::NoBinding {
            world: req.world,
            brand: req.brand.clone(),
            jurisdiction: profile.jurisdiction.clone(),
        }
    })?;
    let input = json!({"world": req.world, "profile": profile, "event": req.event, "bonuses": req.bonuses,
                       "candidates": req.candidates, "context": req.context});
    let recorder = Recorder {
        core,
        req,
        binding: &binding,
        input_hash: hex::encode(Sha256::digest(input.to_string().as_bytes())),
    };
    let plugin = match &binding.plugin {
        Ok(p) => p.clone(),
        Err(why) => {
            recorder.save(&json!({"error": why}), "integrity_failed", 0, 0).await?;
            return Err(DecisionError::IntegrityFailed {
                plugin_id: binding.plugin_id.clone(),
                why: why.clone(),
            });
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
    let plugin = Provenance {
        plugin_id: binding.plugin_id.clone(),
        name: binding.name.clone(),
        version: binding.version.clone(),
        sha256: binding.sha256.clone(),
        binding_id: binding.binding_id.clone(),
    };
    match outcome {
        Ok(decision) => {
            let decision_seq = recorder.save(&decision, "ok", usage.fuel, usage.duration_ns).await?;
            Ok(Decided { decision, plugin, usage, decision_seq })
        }
        Err(e) => {
            recorder.save(&json!({"error": e}), e.code(), usage.fuel, usage.duration_ns).await?;
            Err(DecisionError::Plugin {
                code: e.code(),
                message: format!("{} {}: {e}", binding.name, binding.version),
            })
        }
    }
}

/// What every record of one decision shares.
struct Recorder<'a> {
    core: &'a Core,
    req: &'a DecisionRequest,
    binding: &'a ActiveBinding,
    input_hash: String,
}

impl Recorder<'_> {
    async fn save(&self, output: &Value, outcome: &str, fuel: u64, duration_ns: u64) -> anyhow::Result<i64> {
        let d = NewDecision {
            brand_id: &self.req.brand,
            player_id: &self.req.player_id,
            world: self.req.world.name(),
            plugin_id: &self.binding.plugin_id,
            binding_id: &self.binding.binding_id,
            input_hash: &self.input_hash,
            output,
            outcome,
            fuel,
            duration_ns,
            trace_id: self.req.trace_id.as_deref(),
        };
        decisions::record(&self.core.db, &d).await
    }
}
