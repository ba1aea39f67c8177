//! Plugin inputs as JSON documents (what `pitboss plugin run` reads) and decision tables: cases of
//! (input → expected decision or error) run against a plugin in the real runtime (`pitboss plugin test`
//! and the reference plugins' tests).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{CallOptions, Limits, Plugin, Run, Runtime, World};
use crate::model as m;

/// One call's input. Which fields are needed depends on the world:
/// segment `profile` (+ `event`) or `profiles` (the batch form); bonus-rule `event`, `profile`,
/// `bonuses`; offer-scorer `profile`, `candidates`, `context`. `now` defaults to the event's time;
/// `config` is the plugin's configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub profile: Option<m::Profile>,
    pub profiles: Option<Vec<m::Profile>>,
    pub event: Option<m::Event>,
    #[serde(default)]
    pub bonuses: Vec<m::BonusState>,
    #[serde(default)]
    pub candidates: Vec<m::OfferTemplate>,
    pub context: Option<m::OfferContext>,
    pub now: Option<jiff::Timestamp>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// Why an input could not be run at all.
#[derive(Debug, thiserror::Error)]
#[error("input for world `{world}`: {message}")]
pub struct InputError {
    pub world: World,
    pub message: String,
}

/// Runs `input` through `plugin` and gives the decision as JSON.
pub fn run(rt: &Runtime, plugin: &Plugin, input: &Input, limits: Limits) -> Result<Run<Value>, InputError> {
    let world = plugin.world;
    let missing = |what: &str| InputError { world, message: format!("`{what}` is required") };
    let now = input.now.or(input.event.as_ref().map(|e| e.occurred_at)).unwrap_or_else(jiff::Timestamp::now);
    let opts = CallOptions { limits, now, config: input.config.clone().into() };
    Ok(match world {
        World::Segment => match (&input.profile, &input.profiles) {
            (Some(p), None) => json(rt.segment(plugin, &opts, p, input.event.as_ref())),
            (None, Some(ps)) => json(rt.segment_batch(plugin, &opts, ps)),
            _ => return Err(InputError { world, message: "give either `profile` or `profiles`".into() }),
        },
        World::BonusRule => {
            let event = input.event.as_ref().ok_or_else(|| missing("event"))?;
            let profile = input.profile.as_ref().ok_or_else(|| missing("profile"))?;
            json(rt.bonus_rule(plugin, &opts, event, profile, &input.bonuses))
        }
        World::OfferScorer => {
            let profile = input.profile.as_ref().ok_or_else(|| missing("profile"))?;
            let context = input.context.as_ref().ok_or_else(|| missing("context"))?;
            json(rt.offer_scorer(plugin, &opts, profile, &input.candidates, context))
        }
    })
}

fn json<T: Serialize>(run: Run<T>) -> Run<Value> {
    Run {
        outcome: run.outcome.map(|v| serde_json::to_value(v).expect("decisions serialise")),
        usage: run.usage,
        logs: run.logs,
    }
}

/// One row of a decision table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub input: Input,
    /// The decision expected; objects match on the keys given, arrays element by element.
    pub expect: Option<Value>,
    /// The error code expected instead of a decision (`rule_error`, `out_of_fuel`…).
    pub expect_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub passed: bool,
    /// What differed, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<String>,
}

/// Runs every case; a case passes when its outcome matches what it expects.
pub fn run_table(rt: &Runtime, plugin: &Plugin, cases: &[Case], limits: Limits) -> Vec<CaseResult> {
    cases
        .iter()
        .map(|case| {
            let mismatch = check_case(rt, plugin, case, limits).err();
            CaseResult { name: case.name.clone(), passed: mismatch.is_none(), mismatch }
        })
        .collect()
}

fn check_case(rt: &Runtime, plugin: &Plugin, case: &Case, limits: Limits) -> Result<(), String> {
    let run = run(rt, plugin, &case.input, limits).map_err(|e| e.to_string())?;
    match (&case.expect, &case.expect_error, run.outcome) {
        (Some(expected), None, Ok(actual)) => matches(expected, &actual, "decision"),
        (None, Some(code), Err(e)) if e.code() == code => Ok(()),
        (None, Some(code), Err(e)) => Err(format!("expected error `{code}`, got `{}`: {e}", e.code())),
        (None, Some(code), Ok(actual)) => Err(format!("expected error `{code}`, got decision {actual}")),
        (Some(_), None, Err(e)) => Err(format!("expected a decision, got `{}`: {e}", e.code())),
        _ => Err("a case needs exactly one of `expect` and `expect_error`".into()),
    }
}

/// `expected` is a pattern: an object matches when each of its keys matches, an array when it has the
/// same length and each element matches, anything else when equal (numbers as numbers).
pub fn matches(expected: &Value, actual: &Value, path: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().try_for_each(|(k, ev)| match a.get(k) {
            Some(av) => matches(ev, av, &format!("{path}.{k}")),
            None => Err(format!("{path}.{k}: missing, expected {ev}")),
        }),
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            e.iter().zip(a).enumerate().try_for_each(|(i, (ev, av))| matches(ev, av, &format!("{path}[{i}]")))
        }
        (Value::Number(e), Value::Number(a)) if e.as_f64() == a.as_f64() => Ok(()),
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{path}: expected {e}, got {a}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patterns_match_subsets_and_fail_on_differences() {
        let actual = json!({"member": true, "score": 0.8, "reason": "x", "list": [{"a": 1, "b": 2}]});
        assert!(matches(&json!({"member": true}), &actual, "d").is_ok());
        assert!(matches(&json!({"list": [{"a": 1}]}), &actual, "d").is_ok());
        assert!(matches(&json!({"score": 0.8}), &actual, "d").is_ok());
        assert_eq!(
            matches(&json!({"member": false}), &actual, "d").unwrap_err(),
            "d.member: expected false, got true"
        );
        assert!(matches(&json!({"list": []}), &actual, "d").is_err());
        assert!(matches(&json!({"nope": 1}), &actual, "d").is_err());
    }
}
