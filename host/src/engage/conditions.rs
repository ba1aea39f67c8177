//! Simple conditions of triggers and journeys: a fact of the event or of the player's profile compared
//! with a value (`{"fact": "event.reason_code", "op": "in", "value": ["3ds_failed", "avs_failed"]}`).
//! What needs more than a comparison belongs in a segment plugin (`rule`). The facts are a fixed list
//! (`FACTS`), checked when a definition is saved.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::{self as m, EventPayload};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Number,
    Text,
    Bool,
}

/// Every fact a condition may name, with its kind.
pub const FACTS: &[(&str, Kind)] = &[
    ("event.type", Kind::Text),
    ("event.stake_minor", Kind::Number),
    ("event.win_minor", Kind::Number),
    ("event.loss_minor", Kind::Number),
    ("event.category", Kind::Text),
    ("event.provider", Kind::Text),
    ("event.game_id", Kind::Text),
    ("event.in_bonus", Kind::Bool),
    ("event.amount_minor", Kind::Number),
    ("event.currency", Kind::Text),
    ("event.reference", Kind::Text),
    ("event.reason_code", Kind::Text),
    ("event.method", Kind::Text),
    ("event.segment", Kind::Text),
    ("event.score", Kind::Number),
    ("event.channel", Kind::Text),
    ("profile.jurisdiction", Kind::Text),
    ("profile.locale", Kind::Text),
    ("profile.age_band", Kind::Text),
    ("profile.kyc", Kind::Text),
    ("profile.tenure_days", Kind::Number),
    ("profile.dep_count_30d", Kind::Number),
    ("profile.net_loss_today_minor", Kind::Number),
    ("profile.days_since_last_deposit", Kind::Number),
    ("profile.days_since_last_seen", Kind::Number),
    ("profile.churn_score", Kind::Number),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    NotIn,
    Exists,
    Absent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub fact: String,
    pub op: Op,
    #[serde(default)]
    pub value: Value,
}

/// Most conditions in one list, items in one `in` list, characters in one text value.
pub const MAX_CONDITIONS: usize = 20;
const MAX_ITEMS: usize = 50;
const MAX_TEXT: usize = 200;

pub fn kind_of(fact: &str) -> Option<Kind> {
    FACTS.iter().find(|(f, _)| *f == fact).map(|(_, k)| *k)
}

/// Checks a list of conditions as saved; the message names the condition.
pub fn check(conditions: &[Condition]) -> Result<(), String> {
    if conditions.len() > MAX_CONDITIONS {
        return Err(format!("at most {MAX_CONDITIONS} conditions"));
    }
    for (i, c) in conditions.iter().enumerate() {
        let kind = kind_of(&c.fact).ok_or_else(|| {
            let names: Vec<&str> = FACTS.iter().map(|(f, _)| *f).collect();
            format!("condition {i}: unknown fact `{}` (known: {})", c.fact, names.join(", "))
        })?;
        let scalar_ok = |v: &Value| match (kind, v) {
            (Kind::Number, Value::Number(_)) | (Kind::Bool, Value::Bool(_)) => true,
            (Kind::Text, Value::String(s)) => s.chars().count() <= MAX_TEXT,
            _ => false,
        };
        let ok = match c.op {
            Op::Exists | Op::Absent => c.value.is_null(),
            Op::Eq | Op::Ne => scalar_ok(&c.value),
            Op::Gt | Op::Gte | Op::Lt | Op::Lte => kind == Kind::Number && c.value.is_number(),
            Op::In | Op::NotIn => c
                .value
                .as_array()
                .is_some_and(|a| !a.is_empty() && a.len() <= MAX_ITEMS && a.iter().all(scalar_ok)),
        };
        if !ok {
            let want = match c.op {
                Op::Exists | Op::Absent => "no value".to_string(),
                Op::In | Op::NotIn => format!("a list of 1–{MAX_ITEMS} values of the fact's kind"),
                Op::Gt | Op::Gte | Op::Lt | Op::Lte => "a number (and a numeric fact)".to_string(),
                _ => "a value of the fact's kind".to_string(),
            };
            return Err(format!("condition {i} ({} {:?}): wants {want}", c.fact, c.op));
        }
    }
    Ok(())
}

/// The facts of one evaluation: the event (if any) and the player's profile.
pub struct Facts {
    values: serde_json::Map<String, Value>,
}

impl Facts {
    pub fn new(event: Option<&m::Event>, profile: &m::Profile) -> Facts {
        let mut v = serde_json::Map::new();
        let mut put = |k: &str, x: Value| {
            if !x.is_null() {
                v.insert(k.to_string(), x);
            }
        };
        if let Some(e) = event {
            put("event.type", json!(m::wire_name(e.event_type)));
            match &e.payload {
                EventPayload::Bet(b) => {
                    put("event.stake_minor", json!(b.stake.amount_minor));
                    put("event.currency", json!(b.stake.currency));
                    put("event.win_minor", json!(b.win_minor));
                    if let Some(win) = b.win_minor {
                        put("event.loss_minor", json!(b.stake.amount_minor.saturating_sub(win).max(0)));
                    }
                    put("event.category", json!(b.category));
                    put("event.provider", json!(b.provider));
                    put("event.game_id", json!(b.game_id));
                    put("event.in_bonus", json!(b.in_bonus));
                    put("event.reference", json!(b.bet_id));
                }
                EventPayload::Money(mv) => {
                    put("event.amount_minor", json!(mv.amount.amount_minor));
                    put("event.currency", json!(mv.amount.currency));
                    put("event.reference", json!(mv.reference));
                    put("event.reason_code", json!(mv.reason_code));
                    put("event.method", json!(mv.detail));
                }
                EventPayload::Segment(s) => {
                    put("event.segment", json!(s.segment));
                    put("event.score", json!(s.score));
                }
                EventPayload::Crm(c) => put("event.channel", json!(c.channel)),
                EventPayload::Bonus(b) => {
                    put("event.amount_minor", json!(b.granted.amount_minor));
                    put("event.currency", json!(b.granted.currency));
                    put("event.reference", json!(b.bonus_id));
                }
                _ => {}
            }
        }
        let f = &profile.features;
        put("profile.jurisdiction", json!(profile.jurisdiction));
        put("profile.locale", json!(profile.locale));
        put("profile.age_band", json!(m::wire_name(profile.age_band)));
        put("profile.kyc", json!(m::wire_name(profile.kyc)));
        put("profile.tenure_days", json!(f.tenure_days));
        put("profile.dep_count_30d", json!(f.dep_count_30d));
        put("profile.net_loss_today_minor", json!(f.net_loss_today_minor));
        put("profile.days_since_last_deposit", json!(f.days_since_last_deposit));
        put("profile.days_since_last_seen", json!(f.days_since_last_seen));
        put("profile.churn_score", json!(f.churn_score));
        Facts { values: v }
    }

    pub fn get(&self, fact: &str) -> Option<&Value> {
        self.values.get(fact)
    }

    /// A fact as text (dedup values, personalization).
    pub fn text(&self, fact: &str) -> Option<String> {
        self.get(fact).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// Whether every condition holds; the first that does not, described.
    pub fn all(&self, conditions: &[Condition]) -> Result<(), String> {
        for c in conditions {
            if !self.holds(c) {
                let actual = self.get(&c.fact).map_or("absent".to_string(), Value::to_string);
                return Err(format!("{} {:?} {} is false ({} is {actual})", c.fact, c.op, c.value, c.fact));
            }
        }
        Ok(())
    }

    fn holds(&self, c: &Condition) -> bool {
        let actual = self.get(&c.fact);
        let num = |v: &Value| v.as_f64();
        let cmp = |f: fn(f64, f64) -> bool| match (actual.and_then(num), num(&c.value)) {
            (Some(a), Some(b)) => f(a, b),
            _ => false,
        };
        let eq = |a: &Value, b: &Value| match (num(a), num(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        };
        match c.op {
            Op::Exists => actual.is_some(),
            Op::Absent => actual.is_none(),
            Op::Eq => actual.is_some_and(|a| eq(a, &c.value)),
            Op::Ne => actual.is_none_or(|a| !eq(a, &c.value)),
            Op::Gt => cmp(|a, b| a > b),
            Op::Gte => cmp(|a, b| a >= b),
            Op::Lt => cmp(|a, b| a < b),
            Op::Lte => cmp(|a, b| a <= b),
            Op::In => actual.is_some_and(|a| c.value.as_array().is_some_and(|l| l.iter().any(|x| eq(a, x)))),
            Op::NotIn => {
                actual.is_none_or(|a| c.value.as_array().is_none_or(|l| !l.iter().any(|x| eq(a, x))))
            }
        }
    }
}

/// Personalization with facts filled in: a value that is exactly `$<fact>` takes the fact's text (empty
/// when absent); any other value is kept as written.
pub fn personalize(
    values: &std::collections::BTreeMap<String, String>,
    facts: &Facts,
) -> std::collections::BTreeMap<String, String> {
    values
        .iter()
        .map(|(k, v)| {
            let filled = match v.strip_prefix('$') {
                Some(fact) if kind_of(fact).is_some() => facts.text(fact).unwrap_or_default(),
                _ => v.clone(),
            };
            (k.clone(), filled)
        })
        .collect()
}

/// Checks personalization values that name facts.
pub fn check_personalization(values: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in values {
        if let Some(fact) = v.strip_prefix('$')
            && kind_of(fact).is_none()
        {
            return Err(format!("personalization `{k}`: unknown fact `{fact}`"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(fact: &str, op: Op, value: Value) -> Condition {
        Condition { fact: fact.into(), op, value }
    }

    #[test]
    fn conditions_are_checked_when_saved() {
        assert!(check(&[c("event.reason_code", Op::In, json!(["3ds_failed"]))]).is_ok());
        assert!(check(&[c("event.nope", Op::Eq, json!(1))]).unwrap_err().contains("unknown fact"));
        assert!(check(&[c("event.reason_code", Op::Gt, json!(1))]).is_err());
        assert!(check(&[c("event.amount_minor", Op::Eq, json!("x"))]).is_err());
        assert!(check(&[c("event.amount_minor", Op::In, json!([]))]).is_err());
        assert!(check(&vec![c("event.type", Op::Exists, Value::Null); 21]).is_err());
    }
}
