//! The core: what every way into the host shares — the database, the event log and its bus, profiles,
//! the plugin registry, delivery with its clock and jurisdiction packs. HTTP handlers, bus consumers,
//! the CLI and tests reach the use cases through it — `decisions::decide`, `messaging::send`,
//! `Profiles::current` — the same way, without a socket. It knows nothing of HTTP.

use std::sync::Arc;

use crate::bus::{Bus, Consumer, EmbeddedBus};
use crate::clock::Clock;
use crate::config::ServeOptions;
use crate::delivery;
use crate::events::{FieldError, ValidEvent};
use crate::plugins::registry::{BlobStore, Registry};
use crate::plugins::{Runtime, RuntimeConfig};
use crate::policy::{PackStore, Policies};
use crate::profiles::{ProfileUpdater, Profiles};
use crate::store::Db;
use crate::store::contacts::ContactsKey;
use crate::store::events::{AppendError, Appender, Stored};

pub struct Core {
    pub db: Db,
    pub contacts_key: ContactsKey,
    pub bus: Arc<EmbeddedBus>,
    pub profiles: Profiles,
    appender: Appender,
    pub registry: Arc<Registry>,
    /// The gate's rules: the jurisdiction packs (and their versions), frequency policies, licences.
    pub policies: Arc<Policies>,
    pub delivery: Arc<delivery::Context>,
}

impl Core {
    /// Opens everything on `db`: the registry (verifying what is bound), the packs in force, the event
    /// appender. Starts nothing in the background: `server::run` does that.
    pub async fn open(db: Db, contacts_key: ContactsKey, options: &ServeOptions) -> anyhow::Result<Core> {
        options.settings.check()?;
        let bus = Arc::new(EmbeddedBus::new(db.clone()));
        let runtime = Arc::new(Runtime::new(RuntimeConfig {
            cache_dir: Some(
                options.code_cache.clone().unwrap_or_else(|| options.data_dir.join("code-cache")),
            ),
            ..RuntimeConfig::default()
        })?);
        let blobs = BlobStore::open(&options.data_dir.join("plugins"))?;
        let registry = Arc::new(Registry::open(db.clone(), blobs, runtime, options.approval_policy()).await?);
        let packs = Arc::new(PackStore::open(db.clone()).await?);
        let licences = options.settings.brands.iter().map(|(b, s)| (b.clone(), s.licences.clone())).collect();
        let policies = Arc::new(Policies::new(packs, options.settings.frequency_policies(), licences));
        let delivery = Arc::new(delivery::Context::new(
            options.settings.clone(),
            options.clock.clone(),
            policies.clone(),
        ));
        Ok(Core {
            profiles: Profiles::new(db.clone(), contacts_key.clone(), bus.clone()),
            appender: Appender::spawn(db.clone(), contacts_key.clone()),
            db,
            contacts_key,
            bus,
            registry,
            policies,
            delivery,
        })
    }

    /// The host's one clock: decisions, profiles, the gate and the workers read it (a test moves it).
    pub fn clock(&self) -> &Clock {
        &self.delivery.clock
    }

    /// What the host refuses of an event that is valid on its own: a jurisdiction no policy pack covers
    /// could never be decided for.
    pub fn admissible(&self, e: &ValidEvent) -> Result<(), FieldError> {
        let packs = self.policies.packs.current();
        match &e.event.payload {
            crate::model::EventPayload::Player(p)
                if p.jurisdiction.as_ref().is_some_and(|j| packs.for_jurisdiction(j).is_none()) =>
            {
                let j = p.jurisdiction.as_deref().unwrap_or_default();
                Err(FieldError {
                    code: "invalid_event",
                    field: "payload.jurisdiction".into(),
                    message: format!(
                        "no policy pack covers `{j}` (known: {})",
                        packs.jurisdictions().join(", ")
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// Stores events durably (all or none) and wakes the consumers: the one way into the log. Every
    /// event must be admissible (`admissible`; callers check first, to answer per event).
    pub async fn append(&self, events: Vec<ValidEvent>) -> Result<Vec<Stored>, AppendError> {
        if let Some((index, refused)) =
            events.iter().enumerate().find_map(|(i, e)| self.admissible(e).err().map(|r| (i, r)))
        {
            return Err(AppendError::Refused { index, error: refused });
        }
        let stored = self.appender.append(events).await?;
        self.bus.notify();
        Ok(stored)
    }

    /// The consumer that keeps the profiles.
    pub fn profile_updater(&self) -> ProfileUpdater {
        self.profiles.updater(self.clock().clone())
    }

    /// Every part's step in the erasure of a player, in order (contacts first, events last).
    pub fn erasure_steps(&self) -> Vec<(&'static str, crate::store::erasure::Step)> {
        use crate::store;
        vec![
            ("contacts", store::contacts::erasure_step),
            ("deliveries", store::deliveries::erasure_step),
            ("profiles", crate::profiles::erasure_step),
            ("consents", store::consents::erasure_step),
            ("decisions", store::decisions::erasure_step),
            ("segments", store::segments::erasure_step),
            ("engage", store::engage::erasure_step),
            ("offers", store::offers::erasure_step),
            ("events", store::events::erasure_step),
        ]
    }

    /// Erases a player: every part's step, in one transaction; false if the brand never had them.
    pub async fn erase(&self, brand: &str, player: &str) -> anyhow::Result<bool> {
        crate::store::erasure::erase(&self.db, brand, player, &self.erasure_steps()).await
    }

    /// Every bus consumer of every capability, by name; the server runs them all.
    pub fn consumers(&self) -> Vec<Consumer> {
        // What the host itself writes to the log (segment changes, bonus outcomes) says nothing about
        // the player's activity.
        vec![Consumer::new(crate::profiles::CONSUMER, self.profile_updater()).platform_events_only()]
    }
}
