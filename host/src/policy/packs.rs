//! Jurisdiction policy packs, as data: what marketing and bonus offers may do in each jurisdiction. A pack
//! carries its own version, recorded with every decision it took part in. Figures here are the operator's
//! compliance settings for each market (the host ships these defaults; they are data, not code).

use serde::{Deserialize, Serialize};

use crate::model::Channel;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pack {
    /// The jurisdiction codes the pack applies to ("GB", "CA-ON").
    pub jurisdictions: Vec<String>,
    pub version: String,
    /// The youngest age, in whole years on the day, that marketing may reach (CA-ON: 19).
    pub min_age_marketing: u8,
    /// The youngest age bonus offers may reach (NL: 24).
    pub min_age_bonus_offers: u8,
    /// Channels marketing may not use at all.
    #[serde(default)]
    pub banned_channels: Vec<Channel>,
    /// Local time ("HH:MM") from which marketing waits, and until which.
    pub quiet_hours: Option<(String, String)>,
    pub max_marketing_per_day: u32,
    pub max_marketing_per_week: u32,
}

/// The packs the host ships: GB (UKGC), DE (GlüStV), NL (KSA), CA-ON (AGCO/iGO), MT (MGA).
pub const DEFAULT_PACKS: &str = r#"[
  {"jurisdictions": ["GB"], "version": "GB-2026.1", "min_age_marketing": 18, "min_age_bonus_offers": 18,
   "banned_channels": [], "quiet_hours": ["21:00", "09:00"], "max_marketing_per_day": 2, "max_marketing_per_week": 7},
  {"jurisdictions": ["DE"], "version": "DE-2026.1", "min_age_marketing": 18, "min_age_bonus_offers": 18,
   "banned_channels": ["phone"], "quiet_hours": ["22:00", "08:00"], "max_marketing_per_day": 1, "max_marketing_per_week": 5},
  {"jurisdictions": ["NL"], "version": "NL-2026.1", "min_age_marketing": 24, "min_age_bonus_offers": 24,
   "banned_channels": ["phone", "sms"], "quiet_hours": ["21:00", "09:00"], "max_marketing_per_day": 1, "max_marketing_per_week": 3},
  {"jurisdictions": ["CA-ON"], "version": "ON-2026.1", "min_age_marketing": 19, "min_age_bonus_offers": 19,
   "banned_channels": [], "quiet_hours": ["21:00", "08:00"], "max_marketing_per_day": 2, "max_marketing_per_week": 6},
  {"jurisdictions": ["MT"], "version": "MT-2026.1", "min_age_marketing": 18, "min_age_bonus_offers": 18,
   "banned_channels": [], "quiet_hours": ["22:00", "08:00"], "max_marketing_per_day": 3, "max_marketing_per_week": 10}
]"#;

/// The frequency policies the host ships; a config file adds its own or replaces these by id.
pub fn default_frequency_policies() -> Vec<super::FrequencyPolicy> {
    use super::Caps;
    vec![
        super::FrequencyPolicy {
            id: "fp_default".into(),
            normal: Caps { channel_per_day: 1, channel_per_week: 3, global_per_day: 2, global_per_week: 5 },
            high: Caps { channel_per_day: 2, channel_per_week: 5, global_per_day: 3, global_per_week: 7 },
            dedup_window_minutes: 24 * 60,
            campaign_cooldown_minutes: 72 * 60,
        },
        super::FrequencyPolicy {
            id: "fp_light".into(),
            normal: Caps { channel_per_day: 1, channel_per_week: 1, global_per_day: 1, global_per_week: 2 },
            high: Caps { channel_per_day: 1, channel_per_week: 2, global_per_day: 2, global_per_week: 3 },
            dedup_window_minutes: 7 * 24 * 60,
            campaign_cooldown_minutes: 7 * 24 * 60,
        },
    ]
}

/// Packs by jurisdiction.
#[derive(Debug, Clone)]
pub struct Packs(Vec<Pack>);

impl Packs {
    pub fn parse(json: &str) -> anyhow::Result<Packs> {
        let packs: Vec<Pack> = serde_json::from_str(json)?;
        for p in &packs {
            if let Some((from, to)) = &p.quiet_hours {
                super::gate::minute_of_day(from)
                    .ok_or_else(|| anyhow::anyhow!("{}: quiet hours `{from}`", p.version))?;
                super::gate::minute_of_day(to)
                    .ok_or_else(|| anyhow::anyhow!("{}: quiet hours `{to}`", p.version))?;
            }
        }
        Ok(Packs(packs))
    }

    pub fn defaults() -> Packs {
        Packs::parse(DEFAULT_PACKS).expect("the shipped packs parse")
    }

    /// Every jurisdiction a pack covers.
    pub fn jurisdictions(&self) -> Vec<String> {
        self.0.iter().flat_map(|p| p.jurisdictions.iter().cloned()).collect()
    }

    pub fn for_jurisdiction(&self, jurisdiction: &str) -> Option<&Pack> {
        self.0.iter().find(|p| p.jurisdictions.iter().any(|j| j == jurisdiction))
    }
}
