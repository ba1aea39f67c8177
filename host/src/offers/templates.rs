//! Offer templates: what the operator is willing to give, per brand — the kind, the bounds a scorer's
//! parameters must stay within, what it costs, the terms of the bonus it becomes, where it may be
//! offered and with what it conflicts. Versioned and audited (`crate::defs`); a version is in use at
//! once. A template that breaks the bonus law of a jurisdiction it may be offered in is refused at
//! save, naming the pack's rule and its source.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::core::Core;
use crate::defs::{self, DefError, Head, Kind, Traits, invalid};
use crate::model::{self as m, OfferKind, Product};
use crate::policy::Packs;

pub const OFFER_TEMPLATES: Kind = Kind {
    table: "offer_templates",
    versions: "offer_template_versions",
    key: "template_id",
    noun: "offer_template",
    prefix: "ot",
};

/// The largest amount a template may name, in minor units (ten million in major units).
pub const MAX_MINOR: i64 = 1_000_000_000;

/// The bounds of a scorer's parameters: an answer outside them is refused, never clamped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    #[serde(default)]
    pub max_percent: u32,
    #[serde(default)]
    pub max_cap_minor: i64,
    pub max_wager_multiplier: u32,
    pub max_validity_hours: u32,
    #[serde(default)]
    pub max_spins: u32,
}

/// What an offer costs the operator: its value (a cap, or spins at their value), times the share
/// the operator expects to pay out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostModel {
    /// The value of one free spin, in minor units (free spins only).
    #[serde(default)]
    pub spin_value_minor: i64,
    /// Of the value, the percentage counted as cost (default 100).
    #[serde(default = "hundred")]
    pub cost_percent: u32,
}

fn hundred() -> u32 {
    100
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel { spin_value_minor: 0, cost_percent: 100 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Breach {
    /// The bonus is forfeited.
    Forfeit,
    /// The bet is flagged on the bonus, which goes on.
    #[default]
    Flag,
}

/// The terms of the bonus an accepted offer becomes: what the player sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Terms {
    /// Largest stake while the bonus is active.
    #[serde(default)]
    pub max_bet_minor: Option<i64>,
    #[serde(default)]
    pub max_bet_breach: Breach,
    /// Most the player may cash out of the bonus once wagering is met.
    #[serde(default)]
    pub max_cashout_minor: Option<i64>,
    /// Percent of a stake that counts towards wagering, by game category; a bonus rule may count less,
    /// never more. Empty: the bonus rule's own table.
    #[serde(default)]
    pub contributions: BTreeMap<String, u32>,
    /// A withdrawal request forfeits the bonus (otherwise it is locked until the withdrawal ends).
    #[serde(default)]
    pub forfeit_on_withdrawal: bool,
    /// Days from the grant to the wagering deadline.
    #[serde(default = "thirty")]
    pub bonus_validity_days: u32,
}

fn thirty() -> u32 {
    30
}

impl Default for Terms {
    fn default() -> Self {
        Terms {
            max_bet_minor: None,
            max_bet_breach: Breach::Flag,
            max_cashout_minor: None,
            contributions: BTreeMap::new(),
            forfeit_on_withdrawal: false,
            bonus_validity_days: 30,
        }
    }
}

/// A template as marketing writes it (`POST /admin/offer-templates`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateDef {
    /// The template's name, what a scorer and an offer call it ("bonus_cashback").
    pub name: String,
    #[serde(default, skip_serializing)]
    pub brand_id: Option<String>,
    pub kind: OfferKind,
    /// Products the offer is about.
    pub products: Vec<Product>,
    /// Where it may be offered: jurisdiction codes, or ["*"] for every one the brand is licensed in.
    pub jurisdictions: Vec<String>,
    pub bounds: Bounds,
    #[serde(default)]
    pub cost: CostModel,
    #[serde(default)]
    pub terms: Terms,
    /// No second active bonus of the same group.
    #[serde(default)]
    pub conflict_group: Option<String>,
    /// Most this template may cost in a day (UTC), across players.
    #[serde(default)]
    pub budget_daily_minor: Option<i64>,
    /// Providers the offer is about (free spins on a provider's games).
    #[serde(default)]
    pub providers: Vec<String>,
}

impl TemplateDef {
    pub fn applies_in(&self, jurisdiction: &str) -> bool {
        self.jurisdictions.iter().any(|j| j == "*" || j == jurisdiction)
    }

    /// The value of an offer with these parameters (what the player may get), in minor units.
    pub fn value_minor(&self, p: &m::OfferParams) -> i64 {
        match self.kind {
            OfferKind::FreeSpins => i64::from(p.spins).saturating_mul(self.cost.spin_value_minor),
            _ => p.cap_minor,
        }
    }

    /// What the offer costs the operator.
    pub fn cost_minor(&self, p: &m::OfferParams) -> i64 {
        self.value_minor(p).saturating_mul(i64::from(self.cost.cost_percent)) / 100
    }

    /// As a scorer sees it.
    pub fn candidate(&self) -> m::OfferTemplate {
        let b = &self.bounds;
        m::OfferTemplate {
            template_id: self.name.clone(),
            kind: self.kind,
            max_percent: b.max_percent,
            max_cap_minor: b.max_cap_minor,
            max_wager_multiplier: b.max_wager_multiplier,
            max_validity_hours: b.max_validity_hours,
            max_spins: b.max_spins,
            providers: self.providers.clone(),
        }
    }

    /// Every value in range; the error names the field.
    pub fn check(&self) -> Result<(), DefError> {
        defs::check_name("name", &self.name)?;
        let b = &self.bounds;
        if self.products.is_empty() || self.products.len() > 4 {
            return Err(invalid("products", "one to four of casino, sports, poker, bingo"));
        }
        if self.jurisdictions.is_empty()
            || self.jurisdictions.len() > 20
            || !self.jurisdictions.iter().all(|j| j == "*" || crate::events::is_jurisdiction(j))
        {
            return Err(invalid("jurisdictions", "one or more codes such as GB, DE, CA-ON, or [\"*\"]"));
        }
        let money = |field: &str, v: i64| {
            if (0..=MAX_MINOR).contains(&v) {
                Ok(())
            } else {
                Err(invalid(field, format!("{v} is not an amount from 0 to {MAX_MINOR} minor units")))
            }
        };
        money("bounds.max_cap_minor", b.max_cap_minor)?;
        money("cost.spin_value_minor", self.cost.spin_value_minor)?;
        for (field, v) in [
            ("terms.max_bet_minor", self.terms.max_bet_minor),
            ("terms.max_cashout_minor", self.terms.max_cashout_minor),
            ("budget_daily_minor", self.budget_daily_minor),
        ] {
            if let Some(v) = v {
                money(field, v)?;
            }
        }
        let ranges: [(&str, u32, u32, u32); 7] = [
            ("bounds.max_percent", b.max_percent, 0, 1000),
            ("bounds.max_wager_multiplier", b.max_wager_multiplier, 0, 100),
            ("bounds.max_validity_hours", b.max_validity_hours, 1, 24 * 90),
            ("bounds.max_spins", b.max_spins, 0, 10_000),
            ("cost.cost_percent", self.cost.cost_percent, 1, 100),
            ("terms.bonus_validity_days", self.terms.bonus_validity_days, 1, 90),
            ("terms.contributions", self.terms.contributions.len() as u32, 0, 20),
        ];
        for (field, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                return Err(invalid(field, format!("{v} is outside {lo}..={hi}")));
            }
        }
        for (category, percent) in &self.terms.contributions {
            if !crate::segments::is_name(category) || *percent > 100 {
                return Err(invalid(
                    "terms.contributions",
                    format!("`{category}`: {percent}: a category name and a percentage up to 100"),
                ));
            }
        }
        match self.kind {
            OfferKind::FreeSpins if b.max_spins == 0 || self.cost.spin_value_minor == 0 => {
                return Err(invalid(
                    "bounds.max_spins",
                    "free spins need max_spins and cost.spin_value_minor",
                ));
            }
            OfferKind::FreeSpins => {}
            _ if b.max_cap_minor == 0 => {
                return Err(invalid("bounds.max_cap_minor", "the offer needs a cap above 0"));
            }
            _ => {}
        }
        if let Some(g) = &self.conflict_group {
            defs::check_name("conflict_group", g)?;
        }
        if self.providers.len() > 20 || self.providers.iter().any(|p| p.is_empty() || p.len() > 64) {
            return Err(invalid("providers", "at most 20 names of 1 to 64 bytes"));
        }
        Ok(())
    }

    /// The bonus law of every pack the template may be offered under: the rule it breaks, if any.
    pub fn lawful(&self, packs: &Packs, licensed: &[String]) -> Result<(), DefError> {
        let wildcard = self.jurisdictions.iter().any(|j| j == "*");
        let mut covered: Vec<&String> =
            if wildcard { licensed.iter().collect() } else { self.jurisdictions.iter().collect() };
        covered.sort();
        covered.dedup();
        for j in covered {
            let Some(pack) = packs.for_jurisdiction(j) else { continue };
            if let Some(broken) = bonus_law(pack, self.bounds.max_wager_multiplier, &self.products) {
                return Err(invalid(broken.field, format!("{j}: {}", broken.detail)));
            }
        }
        Ok(())
    }
}

/// A pack's bonus rule that an offer breaks.
#[derive(Debug, Clone, Serialize)]
pub struct Broken {
    /// The template's field the rule is about.
    #[serde(skip)]
    pub field: &'static str,
    pub rule: &'static str,
    pub detail: String,
}

/// The pack's bonus law against a wagering multiple and the products of an offer.
pub fn bonus_law(pack: &crate::policy::Pack, wager_multiplier: u32, products: &[Product]) -> Option<Broken> {
    if let Some(max) = &pack.max_wagering_multiple
        && wager_multiplier > max.value
    {
        return Some(Broken {
            field: "bounds.max_wager_multiplier",
            rule: "max_wagering_multiple",
            detail: format!(
                "wagering {wager_multiplier}× is above {}× ({}: {})",
                max.value, pack.version, max.source
            ),
        });
    }
    if let Some(one) = &pack.one_product_per_bonus
        && products.len() > 1
    {
        return Some(Broken {
            field: "products",
            rule: "one_product_per_bonus",
            detail: format!("{} products in one bonus ({}: {})", products.len(), pack.version, one.source),
        });
    }
    None
}

/// Checks and saves a template (a new one, or the next version of `existing`), in use at once.
pub async fn save(
    core: &Core,
    actor: &Principal,
    brand: &str,
    existing: Option<&Head>,
    def: &TemplateDef,
) -> Result<(Head, i64), DefError> {
    def.check()?;
    def.lawful(&core.policies.packs.current(), core.policies.licences(brand))?;
    let definition = serde_json::to_value(def).map_err(anyhow::Error::from)?;
    let traits = Traits { marketing: false, sensitive: false };
    defs::save(core, OFFER_TEMPLATES, actor, brand, existing, (&def.name, &definition, traits)).await
}

/// A template in use: its id and version with its definition.
pub type Active = defs::Active<TemplateDef>;

/// The brand's templates in use, by name.
pub async fn active(conn: &mut sqlx::AnyConnection, brand: &str) -> anyhow::Result<Vec<Active>> {
    defs::active(conn, OFFER_TEMPLATES, brand).await
}

/// One version of a template.
pub async fn version(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    version: i64,
) -> anyhow::Result<Option<TemplateDef>> {
    defs::version(conn, OFFER_TEMPLATES, id, version)
        .await?
        .map(|v| Ok(serde_json::from_value(v.definition)?))
        .transpose()
}
