//! Jurisdiction policy packs, as data: what marketing and bonus offers may do in each jurisdiction, each
//! value with the legal source it comes from. The host ships one pack per market in `packs/*.toml`;
//! compliance changes a pack through the admin API as a new version that another person approves
//! (`store`). A pack carries its version, recorded with every decision it took part in.

use serde::{Deserialize, Serialize};

use crate::model::Channel;

/// One rule's value and where it comes from (a statute, a regulator's rule, or the operator's policy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sourced<T> {
    pub value: T,
    pub source: String,
}

/// A pack as compliance reads and writes it (`packs/*.toml`, `POST /admin/packs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackDocument {
    /// The pack's name, stable across its versions ("GB", "CA-ON").
    pub pack: String,
    pub version: String,
    /// The jurisdiction codes it applies to.
    pub jurisdictions: Vec<String>,
    pub regulator: String,
    /// The youngest age, in whole years on the day, that marketing may reach.
    pub min_age_marketing: Sourced<u8>,
    /// The youngest age bonus offers may reach.
    pub min_age_bonus_offers: Sourced<u8>,
    /// Channels marketing may not use at all.
    pub banned_channels: Sourced<Vec<Channel>>,
    /// Local time ["HH:MM", "HH:MM"] from which marketing waits, and until which; [] for none.
    pub quiet_hours: Sourced<Vec<String>>,
    pub max_marketing_per_day: Sourced<u32>,
    pub max_marketing_per_week: Sourced<u32>,
    /// Bonus law: the highest wagering multiple a bonus may carry (absent where the law sets none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wagering_multiple: Option<Sourced<u32>>,
    /// Bonus law: a bonus is about one product only (no mixed-product promotions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_product_per_bonus: Option<Sourced<bool>>,
}

impl PackDocument {
    /// Checks every value; the error names the field.
    pub fn check(&self) -> Result<(), (String, String)> {
        let err = |field: &str, m: String| Err((field.to_string(), m));
        let name_ok = |s: &str, most: usize| {
            (1..=most).contains(&s.len())
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        };
        if !name_ok(&self.pack, 16) {
            return err("pack", "1 to 16 letters, digits, `-` or `.`".into());
        }
        if !name_ok(&self.version, 32) {
            return err("version", "1 to 32 letters, digits, `-` or `.`".into());
        }
        if self.jurisdictions.is_empty()
            || !self.jurisdictions.iter().all(|j| crate::events::is_jurisdiction(j))
        {
            return err("jurisdictions", "one or more codes such as GB, DE, CA-ON".into());
        }
        if self.regulator.trim().is_empty() {
            return err("regulator", "is required".into());
        }
        for (field, age) in [
            ("min_age_marketing", self.min_age_marketing.value),
            ("min_age_bonus_offers", self.min_age_bonus_offers.value),
        ] {
            if !(16..=30).contains(&age) {
                return err(field, format!("{age} is not an age between 16 and 30"));
            }
        }
        if self.min_age_bonus_offers.value < self.min_age_marketing.value {
            return err("min_age_bonus_offers", "cannot be below min_age_marketing".into());
        }
        match self.quiet_hours.value.as_slice() {
            [] => {}
            [from, to]
                if super::gate::minute_of_day(from).is_some() && super::gate::minute_of_day(to).is_some() => {
            }
            _ => return err("quiet_hours", "[] or [\"HH:MM\", \"HH:MM\"]".into()),
        }
        if self.max_marketing_per_day.value == 0
            || self.max_marketing_per_week.value < self.max_marketing_per_day.value
        {
            return err(
                "max_marketing_per_week",
                "caps of at least 1 a day, and a week's at least a day's".into(),
            );
        }
        if let Some(w) = &self.max_wagering_multiple
            && !(1..=100).contains(&w.value)
        {
            return err("max_wagering_multiple", format!("{} is not a multiple between 1 and 100", w.value));
        }
        let bonus_sources = [
            self.max_wagering_multiple.as_ref().map(|w| ("max_wagering_multiple", &w.source)),
            self.one_product_per_bonus.as_ref().map(|o| ("one_product_per_bonus", &o.source)),
        ];
        for (field, source) in [
            ("min_age_marketing", &self.min_age_marketing.source),
            ("min_age_bonus_offers", &self.min_age_bonus_offers.source),
            ("banned_channels", &self.banned_channels.source),
            ("quiet_hours", &self.quiet_hours.source),
            ("max_marketing_per_day", &self.max_marketing_per_day.source),
            ("max_marketing_per_week", &self.max_marketing_per_week.source),
        ]
        .into_iter()
        .chain(bonus_sources.into_iter().flatten())
        {
            if source.trim().is_empty() || source.len() > 1000 {
                return err(
                    &format!("{field}.source"),
                    "every value names its source (1 to 1000 bytes)".into(),
                );
            }
        }
        Ok(())
    }

    /// The rules the gate applies.
    pub fn pack(&self) -> Pack {
        Pack {
            jurisdictions: self.jurisdictions.clone(),
            version: self.version.clone(),
            min_age_marketing: self.min_age_marketing.value,
            min_age_bonus_offers: self.min_age_bonus_offers.value,
            banned_channels: self.banned_channels.value.clone(),
            quiet_hours: match self.quiet_hours.value.as_slice() {
                [from, to] => Some((from.clone(), to.clone())),
                _ => None,
            },
            max_marketing_per_day: self.max_marketing_per_day.value,
            max_marketing_per_week: self.max_marketing_per_week.value,
            max_wagering_multiple: self.max_wagering_multiple.clone(),
            one_product_per_bonus: self.one_product_per_bonus.clone().filter(|o| o.value),
        }
    }
}

/// The rules of one pack version, as the gate applies them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pack {
    pub jurisdictions: Vec<String>,
    pub version: String,
    pub min_age_marketing: u8,
    pub min_age_bonus_offers: u8,
    pub banned_channels: Vec<Channel>,
    pub quiet_hours: Option<(String, String)>,
    pub max_marketing_per_day: u32,
    pub max_marketing_per_week: u32,
    /// Bonus law, with its source (named when a template or a bonus rule breaks it).
    pub max_wagering_multiple: Option<Sourced<u32>>,
    pub one_product_per_bonus: Option<Sourced<bool>>,
}

/// The pack files of the repository's `packs/`, built into the host.
const SHIPPED: [(&str, &str); 5] = [
    ("packs/GB.toml", include_str!("../../../packs/GB.toml")),
    ("packs/DE.toml", include_str!("../../../packs/DE.toml")),
    ("packs/NL.toml", include_str!("../../../packs/NL.toml")),
    ("packs/CA-ON.toml", include_str!("../../../packs/CA-ON.toml")),
    ("packs/MT.toml", include_str!("../../../packs/MT.toml")),
];

/// The packs the host ships, with the file each comes from.
pub fn shipped() -> Vec<(&'static str, PackDocument)> {
    SHIPPED
        .iter()
        .map(|(file, text)| {
            let doc: PackDocument = toml::from_str(text).unwrap_or_else(|e| panic!("{file}: {e}"));
            if let Err((field, m)) = doc.check() {
                panic!("{file}: {field}: {m}");
            }
            (*file, doc)
        })
        .collect()
}

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

/// The packs in force, by jurisdiction.
#[derive(Debug, Clone, Default)]
pub struct Packs(Vec<Pack>);

impl Packs {
    pub fn new(packs: Vec<Pack>) -> Packs {
        Packs(packs)
    }

    /// The shipped packs as they are (what a fresh host starts with).
    pub fn defaults() -> Packs {
        Packs(shipped().iter().map(|(_, d)| d.pack()).collect())
    }

    /// Every jurisdiction a pack covers.
    pub fn jurisdictions(&self) -> Vec<String> {
        self.0.iter().flat_map(|p| p.jurisdictions.iter().cloned()).collect()
    }

    pub fn for_jurisdiction(&self, jurisdiction: &str) -> Option<&Pack> {
        self.0.iter().find(|p| p.jurisdictions.iter().any(|j| j == jurisdiction))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_packs_read_and_name_their_sources() {
        let shipped = shipped();
        assert_eq!(shipped.len(), 5);
        let on = Packs::defaults();
        let on = on.for_jurisdiction("CA-ON").unwrap();
        assert_eq!((on.min_age_marketing, on.version.as_str()), (19, "ON-2026.2"));
        for (file, doc) in &shipped {
            assert!(file.ends_with(&format!("{}.toml", doc.pack)), "{file}");
        }
    }

    #[test]
    fn the_readme_shows_the_shipped_values() {
        let readme = include_str!("../../../README.md");
        for (_, d) in shipped() {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", d.pack)))
                .unwrap_or_else(|| panic!("README has no row for pack {}", d.pack));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let channels: Vec<String> =
                d.banned_channels.value.iter().map(|c| crate::model::wire_name(*c)).collect();
            let expected = [
                d.version.clone(),
                d.min_age_marketing.value.to_string(),
                d.min_age_bonus_offers.value.to_string(),
                if channels.is_empty() { "—".into() } else { channels.join(", ") },
                d.quiet_hours.value.join("–"),
                format!("{} / {}", d.max_marketing_per_day.value, d.max_marketing_per_week.value),
            ];
            assert_eq!(cells[2..8], expected, "README row of {}", d.pack);
        }
    }

    #[test]
    fn a_pack_without_a_source_or_with_a_bad_value_is_refused() {
        let (_, mut doc) = shipped().remove(0);
        doc.quiet_hours.source = " ".into();
        assert_eq!(doc.check().unwrap_err().0, "quiet_hours.source");
        let (_, mut doc) = shipped().remove(0);
        doc.min_age_marketing.value = 12;
        assert_eq!(doc.check().unwrap_err().0, "min_age_marketing");
        let (_, mut doc) = shipped().remove(0);
        doc.quiet_hours.value = vec!["25:00".into(), "08:00".into()];
        assert_eq!(doc.check().unwrap_err().0, "quiet_hours");
    }
}
