//! How the server is configured: flags with environment fallbacks, laptop defaults (a SQLite file in the
//! working directory, 127.0.0.1:8080), and an optional TOML file (`--config`) for what is data rather
//! than a switch: brands' licences and senders, the SMTP relay, push and SMS providers, frequency
//! policies, retry settings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use serde::Deserialize;

use crate::clock::Clock;
use crate::policy::FrequencyPolicy;

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// `sqlite://FILE` (created and migrated on first start) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://pitboss.db")]
    pub database_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PITBOSS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub db: DbArgs,
    /// AES-256 key for contacts at rest, 64 hex characters. Required unless --dev.
    #[arg(long, env = "PITBOSS_CONTACTS_KEY", hide_env_values = true)]
    pub contacts_key: Option<String>,
    /// Development mode: without a contacts key, use (or make) a development key kept in
    /// DATA_DIR/dev-contacts.key, so that a restart reads the contacts again. Not for production.
    #[arg(long)]
    pub dev: bool,
    #[command(flatten)]
    pub options: ServeOptions,
}

/// What the server keeps besides the database, and policy settings.
#[derive(Debug, Clone, Args)]
pub struct ServeOptions {
    /// Directory for plugin components (content-addressed) and their compiled code.
    #[arg(long, env = "PITBOSS_DATA_DIR", default_value = "pitboss-data")]
    pub data_dir: PathBuf,
    /// Directory of compiled plugin code (default: DATA_DIR/code-cache). Several hosts may share one.
    #[arg(long, env = "PITBOSS_CODE_CACHE")]
    pub code_cache: Option<PathBuf>,
    /// Jurisdictions whose plugin versions need two distinct approvers (comma-separated).
    #[arg(long, env = "PITBOSS_DUAL_APPROVAL", value_delimiter = ',')]
    pub dual_approval: Vec<String>,
    /// Jurisdictions whose plugin versions need an impact report before approval (comma-separated).
    #[arg(long, env = "PITBOSS_REQUIRE_IMPACT", value_delimiter = ',')]
    pub require_impact: Vec<String>,
    /// A TOML file: brands (licences, sender, unsubscribe link), SMTP relay, push and SMS providers,
    /// frequency policies, delivery retries. Without it no brand is licensed anywhere, so no marketing
    /// goes out.
    #[arg(long, env = "PITBOSS_CONFIG")]
    pub config: Option<PathBuf>,
    /// What the config file says (read by `serve`; tests set it directly).
    #[arg(skip)]
    pub settings: Settings,
    #[arg(skip)]
    pub clock: Clock,
}

impl ServeOptions {
    /// Who must approve plugin versions, and after what.
    pub fn approval_policy(&self) -> crate::plugins::registry::ApprovalPolicy {
        crate::plugins::registry::ApprovalPolicy {
            dual: self.dual_approval.clone(),
            require_impact: self.require_impact.clone(),
        }
    }
}

/// The config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub brands: BTreeMap<String, BrandSettings>,
    pub smtp: Option<SmtpSettings>,
    #[serde(default)]
    pub providers: ProviderSettings,
    /// Added to the shipped policies (`fp_default`, `fp_light`); the same id replaces a shipped one.
    #[serde(default)]
    pub frequency_policies: Vec<FrequencyPolicy>,
    #[serde(default)]
    pub delivery: DeliverySettings,
    /// The casino platform's wallet: where bonus grants, releases and forfeits are posted.
    pub platform: Option<PlatformSettings>,
}

/// The platform's bonus webhook: a JSON POST with an `Idempotency-Key`, signed like a provider call
/// (X-Pitboss-Signature over "{X-Pitboss-Timestamp}.{body}" under `secret`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformSettings {
    pub url: String,
    pub secret: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrandSettings {
    /// Jurisdictions the brand holds a licence for ("GB", "CA-ON"); marketing elsewhere is refused.
    #[serde(default)]
    pub licences: Vec<String>,
    /// The From of the brand's e-mail ("Brand <crm@brand.example>").
    pub email_from: Option<String>,
    /// The one-click unsubscribe link of List-Unsubscribe; `{delivery_id}` is replaced.
    pub unsubscribe_url: Option<String>,
    /// A mailto: address for List-Unsubscribe.
    pub unsubscribe_mailto: Option<String>,
    /// Above this worth in minor units (a trigger's cashback, an offer), activation needs a compliance
    /// officer other than the author (default 10000).
    pub high_value_minor: Option<i64>,
    /// Most the offers made to one player may cost in a day (UTC), in minor units (default 10000).
    pub offer_player_daily_minor: Option<i64>,
    /// Most the brand's offers may cost in a day (UTC), in minor units (default 1000000).
    pub offer_budget_daily_minor: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// host:port of the relay (plain SMTP; the relay is local or on a private network).
    pub relay: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// Tried in order; the next one on an error or a timeout.
    #[serde(default)]
    pub push: Vec<HttpProvider>,
    #[serde(default)]
    pub sms: Vec<HttpProvider>,
}

/// An HTTP provider: a JSON POST signed with HMAC-SHA256 of "{timestamp}.{body}" under `secret`; its
/// webhooks (`POST /v1/webhooks/{name}`) are signed the same way.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProvider {
    pub name: String,
    pub url: String,
    pub secret: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    /// The first retry waits this long, each next one twice as long, up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Per provider call. For SMTP: connecting, the greeting and authentication; the message itself is
    /// waited for, so a relay slow to confirm it is never sent it twice (past the lease, the next
    /// worker finds the e-mail in doubt).
    pub provider_timeout_ms: u64,
    /// How long a worker owns a claimed delivery; a worker that died lets it go after this. Must exceed
    /// a whole attempt (every provider of a channel timing out).
    pub lease_ms: u64,
    /// How often idle workers look for due deliveries (a send wakes them at once).
    pub poll_ms: u64,
    /// Provider calls at once per host. A worker keeps up to four times as many deliveries in hand: a
    /// turn spends most of its time waiting for its claim and its writes, not at the provider.
    pub concurrency: usize,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            max_attempts: 6,
            backoff_initial_ms: 2_000,
            backoff_max_ms: 600_000,
            provider_timeout_ms: 10_000,
            lease_ms: 120_000,
            poll_ms: 500,
            concurrency: 16,
        }
    }
}

impl Settings {
    /// The brand's high-value threshold in minor units.
    pub fn high_value_minor(&self, brand: &str) -> i64 {
        self.brands.get(brand).and_then(|b| b.high_value_minor).unwrap_or(10_000)
    }

    /// The brand's economy caps on offers: (per player per day, brand per day), in minor units.
    pub fn offer_caps(&self, brand: &str) -> (i64, i64) {
        let b = self.brands.get(brand);
        (
            b.and_then(|b| b.offer_player_daily_minor).unwrap_or(10_000),
            b.and_then(|b| b.offer_budget_daily_minor).unwrap_or(1_000_000),
        )
    }

    /// The longest a delivery attempt can take: every provider of the channel with the most timing out.
    pub fn longest_attempt_ms(&self) -> u64 {
        let most = self.providers.push.len().max(self.providers.sms.len()).max(1) as u64;
        self.delivery.provider_timeout_ms.saturating_mul(most)
    }

    pub fn load(path: &Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Settings::from_toml(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn from_toml(text: &str) -> anyhow::Result<Settings> {
        let settings: Settings = toml::from_str(text)?;
        settings.check()?;
        Ok(settings)
    }

    /// What a file can get wrong beyond its syntax.
    pub fn check(&self) -> anyhow::Result<()> {
        let d = &self.delivery;
        anyhow::ensure!(d.max_attempts >= 1, "delivery.max_attempts must be at least 1");
        anyhow::ensure!(d.concurrency >= 1, "delivery.concurrency must be at least 1");
        let attempt = self.longest_attempt_ms();
        anyhow::ensure!(
            d.lease_ms > attempt,
            "delivery.lease_ms ({}) must exceed provider_timeout_ms × providers of a channel ({attempt})",
            d.lease_ms
        );
        let mut names = std::collections::BTreeSet::new();
        for p in self.providers.push.iter().chain(&self.providers.sms) {
            // Webhooks name their provider: a name must say which one.
            anyhow::ensure!(names.insert(&p.name), "two providers are named {}", p.name);
            anyhow::ensure!(!p.secret.is_empty(), "provider {}: an empty secret", p.name);
            reqwest::Url::parse(&p.url).with_context(|| format!("provider {}: url", p.name))?;
        }
        if let Some(p) = &self.platform {
            anyhow::ensure!(!p.secret.is_empty(), "platform: an empty secret");
            reqwest::Url::parse(&p.url).context("platform: url")?;
        }
        for (brand, b) in &self.brands {
            for (name, v) in [
                ("high_value_minor", b.high_value_minor),
                ("offer_player_daily_minor", b.offer_player_daily_minor),
                ("offer_budget_daily_minor", b.offer_budget_daily_minor),
            ] {
                anyhow::ensure!(
                    v.is_none_or(|v| (0..=1_000_000_000_000).contains(&v)),
                    "brands.{brand}.{name}: an amount from 0 to 10^12 minor units"
                );
            }
        }
        Ok(())
    }

    /// The frequency policies in force: the shipped ones, then the file's.
    pub fn frequency_policies(&self) -> Vec<FrequencyPolicy> {
        let mut all = crate::policy::packs::default_frequency_policies();
        for p in &self.frequency_policies {
            all.retain(|q| q.id != p.id);
            all.push(p.clone());
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_valid() {
        let s = Settings::from_toml(include_str!("../../examples/pitboss.toml")).unwrap();
        assert_eq!(s.brands["A"].licences.len(), 5);
        assert_eq!(s.providers.push.len(), 2);
        assert!(s.frequency_policies().iter().any(|p| p.id == "fp_vip"));
        assert!(s.frequency_policies().iter().any(|p| p.id == "fp_default"));
    }

    #[test]
    fn a_lease_shorter_than_an_attempt_is_refused() {
        let text = "[delivery]\nprovider_timeout_ms = 5000\nlease_ms = 4000\n";
        assert!(Settings::from_toml(text).unwrap_err().to_string().contains("lease_ms"));
        assert!(
            Settings::from_toml("[brands.A]\nlicense = [\"GB\"]\n").is_err(),
            "unknown fields are errors"
        );
        let twice = "[[providers.push]]\nname = \"p\"\nurl = \"http://a/\"\nsecret = \"s\"\n\
                     [[providers.sms]]\nname = \"p\"\nurl = \"http://b/\"\nsecret = \"t\"\n";
        assert!(Settings::from_toml(twice).unwrap_err().to_string().contains("two providers"));
    }
}
