//! `POST /v1/decisions/{world}`: the platform asks the plugin bound for the player's brand and
//! jurisdiction to decide. The host supplies the profile; the decision is recorded with the version and
//! binding that made it (`GET /admin/decisions?player_id=…`). A version that failed its integrity check
//! at load fails closed: no decision, an error, a record.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::extract::roles::{ADMIN, ANALYST, COMPLIANCE, OPERATOR, PLATFORM};
use super::extract::{Authorized, Path, Query};
use super::players::{BrandQuery, brand_of, stored_profile};
use super::{ApiError, AppState};
use crate::model as m;
use crate::plugins::{CallOptions, World};
use crate::store::decisions::{self, NewDecision};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/decisions/{world}", post(decide)).route("/admin/decisions", get(list))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionRequest {
    player_id: String,
    brand_id: Option<String>,
    trace_id: Option<String>,
    /// segment (optional), bonus-rule (required): the event, in the model's shape.
    event: Option<m::Event>,
    #[serde(default)]
    bonuses: Vec<m::BonusState>,
    #[serde(default)]
    candidates: Vec<m::OfferTemplate>,
    context: Option<m::OfferContext>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_decision_request", message)
}

async fn decide(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ PLATFORM }>,
    Path(world): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let world: World =
        serde_json::from_value(Value::String(world)).map_err(|_| ApiError::not_found("world"))?;
    let req: DecisionRequest = serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
    let brand = brand_of(&principal, &BrandQuery { brand_id: req.brand_id.clone() })?;
    let now = jiff::Timestamp::now();
    let stored = stored_profile(&state, &brand, &req.player_id).await?;
    let profile = stored.at(&brand, &req.player_id, now).profile;
    // One snapshot for the whole decision: a swap meanwhile does not change what runs.
    let snapshot = state.registry.snapshot.load_full();
    let binding = snapshot.resolve(&brand, &profile.jurisdiction, world).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_binding",
            format!(
                "no {world} plugin is bound for brand {brand}, jurisdiction {} or the brand default",
                profile.jurisdiction
            ),
        )
    })?;
    let input = json!({"world": world, "profile": profile, "event": req.event, "bonuses": req.bonuses,
                       "candidates": req.candidates, "context": req.context});
    let input_hash = hex::encode(Sha256::digest(input.to_string().as_bytes()));
    let recorder = Recorder {
        state: &state,
        brand: &brand,
        req: &req,
        world,
        binding: &binding,
        input_hash: &input_hash,
    };
    let plugin = match &binding.plugin {
        Ok(p) => p.clone(),
        Err(why) => {
            let out = json!({"error": why});
            recorder.save(&out, "integrity_failed", 0, 0).await?;
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "integrity_failed",
                format!("plugin version {} may not run: {why}", binding.plugin_id),
            ));
        }
    };
    let opts = CallOptions { limits: binding.limits, now, config: binding.config.clone() };
    let runtime = state.registry.runtime.clone();
    let event = req.event.clone();
    let (bonuses, candidates, context) = (req.bonuses.clone(), req.candidates.clone(), req.context.clone());
    let profile_for_call = profile.clone();
    let run = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        Ok(match world {
            World::Segment => {
                let r = runtime.segment(&plugin, &opts, &profile_for_call, event.as_ref());
                (r.outcome.map(|v| json!(v)), r.usage)
            }
            World::BonusRule => {
                let event = event.ok_or_else(|| invalid("a bonus-rule decision needs `event`"))?;
                let r = runtime.bonus_rule(&plugin, &opts, &event, &profile_for_call, &bonuses);
                (r.outcome.map(|v| json!(v)), r.usage)
            }
            World::OfferScorer => {
                let context = context.ok_or_else(|| invalid("an offer-scorer decision needs `context`"))?;
                let r = runtime.offer_scorer(&plugin, &opts, &profile_for_call, &candidates, &context);
                (r.outcome.map(|v| json!(v)), r.usage)
            }
        })
    })
    .await
    .map_err(ApiError::internal)??;
    let (outcome, usage) = run;
    let provenance = json!({"plugin_id": binding.plugin_id, "name": binding.name, "version": binding.version,
                            "sha256": binding.sha256, "binding_id": binding.binding_id});
    match outcome {
        Ok(decision) => {
            let seq = recorder.save(&decision, "ok", usage.fuel, usage.duration_ns).await?;
            Ok(Json(json!({"decision": decision, "plugin": provenance, "usage": usage, "decision_seq": seq})))
        }
        Err(e) => {
            let out = json!({"error": e});
            recorder.save(&out, e.code(), usage.fuel, usage.duration_ns).await?;
            // The runtime's own code is the error's code: one list, documented once.
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                e.code(),
                format!("{} {}: {e}", binding.name, binding.version),
            ))
        }
    }
}

/// What every record of one decision shares.
struct Recorder<'a> {
    state: &'a AppState,
    brand: &'a str,
    req: &'a DecisionRequest,
    world: World,
    binding: &'a crate::plugins::registry::bindings::ActiveBinding,
    input_hash: &'a str,
}

impl Recorder<'_> {
    async fn save(
        &self,
        output: &Value,
        outcome: &str,
        fuel: u64,
        duration_ns: u64,
    ) -> Result<i64, ApiError> {
        let d = NewDecision {
            brand_id: self.brand,
            player_id: &self.req.player_id,
            world: self.world.name(),
            plugin_id: &self.binding.plugin_id,
            binding_id: &self.binding.binding_id,
            input_hash: self.input_hash,
            output,
            outcome,
            fuel,
            duration_ns,
            trace_id: self.req.trace_id.as_deref(),
        };
        decisions::record(&self.state.db, &d).await.map_err(|e| ApiError::internal(format!("{e:#}")))
    }
}

#[derive(Debug, Deserialize)]
struct DecisionQuery {
    player_id: String,
    brand_id: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    Authorized(principal): Authorized<{ OPERATOR | COMPLIANCE | ANALYST | ADMIN }>,
    Query(q): Query<DecisionQuery>,
) -> Result<Json<Value>, ApiError> {
    let brand = brand_of(&principal, &BrandQuery { brand_id: q.brand_id.clone() })?;
    let records =
        decisions::for_player(&state.db, &brand, &q.player_id, q.limit.unwrap_or(100).clamp(1, 1000))
            .await
            .map_err(ApiError::internal)?;
    Ok(Json(json!({"player_id": q.player_id, "decisions": records})))
}
