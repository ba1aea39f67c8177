//! Segment `churn-risk`: churn score above a threshold (0.7, or the binding's `threshold`) and last seen
//! more than 14 days ago. The score is the churn score.

use pitboss_sdk::prelude::*;

struct ChurnRisk;

impl SegmentRule for ChurnRisk {
    fn evaluate(p: Profile, _event: Option<Event>) -> Result<Membership, RuleError> {
        let threshold = match config("threshold") {
            None => 0.7,
            Some(v) => v
                .parse::<f64>()
                .map_err(|_| RuleError::BadConfig(format!("threshold `{v}` is not a number")))?,
        };
        let f = &p.features;
        let m = if f.churn_score <= threshold {
            Membership::out(format!("churn score {:.2} not above {threshold}", f.churn_score))
        } else if f.days_since_last_seen <= 14 {
            Membership::out(format!("last seen {} days ago", f.days_since_last_seen))
        } else {
            Membership::member(format!(
                "churn score {:.2} above {threshold}, last seen {} days ago",
                f.churn_score, f.days_since_last_seen
            ))
        };
        Ok(m.with_score(f.churn_score))
    }
}

pitboss_sdk::export_segment!(ChurnRisk);
