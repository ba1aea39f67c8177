//! The core: what every way into the host shares — the database, the event log and its bus, profiles,
//! the plugin registry, delivery with its clock and jurisdiction packs. HTTP handlers, bus consumers,
//! the CLI and tests reach the use cases through it — `decisions::decide`, `messaging::send`,
//! `Profiles::current` — the same way, without a socket. It knows nothing of HTTP.

use std::sync::Arc;

use crate::bus::{Bus, Consumer, EmbeddedBus};
use crate::config::{Clock, ServeOptions};
use crate::delivery;
use crate::events::ValidEvent;
use crate::plugins::registry::{BlobStore, Registry};
use crate::plugins::{Runtime, RuntimeConfig};
use crate::policy::PackStore;
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
    /// The jurisdiction packs in force, and their versions (the gate reads them; compliance changes them).
    pub packs: Arc<PackStore>,
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
        let registry =
            Arc::new(Registry::open(db.clone(), blobs, runtime, options.dual_approval.clone()).await?);
        let packs = Arc::new(PackStore::open(db.clone()).await?);
        let delivery =
            Arc::new(delivery::Context::new(options.settings.clone(), options.clock.clone(), packs.clone()));
        Ok(Core {
            profiles: Profiles::new(db.clone(), contacts_key.clone(), bus.clone()),
            appender: Appender::spawn(db.clone(), contacts_key.clone()),
            db,
            contacts_key,
            bus,
            registry,
            packs,
            delivery,
        })
    }

    /// The host's one clock: decisions, profiles, the gate and the workers read it (a test moves it).
    pub fn clock(&self) -> &Clock {
        &self.delivery.clock
    }

    /// Stores events durably (all or none) and wakes the consumers: the one way into the log.
    pub async fn append(&self, events: Vec<ValidEvent>) -> Result<Vec<Stored>, AppendError> {
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
            ("events", store::events::erasure_step),
        ]
    }

    /// Erases a player: every part's step, in one transaction; false if the brand never had them.
    pub async fn erase(&self, brand: &str, player: &str) -> anyhow::Result<bool> {
        crate::store::erasure::erase(&self.db, brand, player, &self.erasure_steps()).await
    }

    /// Every bus consumer of every capability, by name; the server runs them all.
    pub fn consumers(&self) -> Vec<Consumer> {
        vec![Consumer::new(crate::profiles::CONSUMER, self.profile_updater())]
    }
}
