//! Segment `dormant-depositor`, the reference article's example: players in Germany (DE) with an active
//! e-mail opt-in who made no deposit in the last 30 days and were last seen more than 7 days ago.

use pitboss_sdk::prelude::*;

struct DormantDepositor;

impl SegmentRule for DormantDepositor {
    fn evaluate(p: Profile, _event: Option<Event>) -> Result<Membership, RuleError> {
        let f = &p.features;
        Ok(if p.jurisdiction != "DE" {
            Membership::out(format!("jurisdiction {} is not DE", p.jurisdiction))
        } else if !p.consents.channels.contains(ChannelConsents::EMAIL) {
            Membership::out("no e-mail consent")
        } else if f.dep_count_30d > 0 {
            Membership::out(format!("{} deposits in 30 days", f.dep_count_30d))
        } else if f.days_since_last_seen <= 7 {
            Membership::out(format!("last seen {} days ago", f.days_since_last_seen))
        } else {
            Membership::member(format!(
                "no deposit in 30 days, last seen {} days ago",
                f.days_since_last_seen
            ))
        })
    }
}

pitboss_sdk::export_segment!(DormantDepositor);
