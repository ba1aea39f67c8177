//! The engine, the compiled-component caches and the call path. One `Engine` per process; a plugin is
//! compiled once per sha256 of its bytes (kept in memory, bounded, and on disk across restarts); every
//! decision gets a fresh `Store` and instance from the pooling allocator, so nothing a plugin does in
//! one decision can be seen by the next.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use super::bindings::{bonus::BonusRulePre, offer::OfferScorerPre, segment::SegmentPre, wit};
use super::cache::{DiskCache, Lookup};
use super::convert::{self, WireSize};
use super::error::{LimitExceeded, PluginError};
use super::host::{self, LogEntry, PluginState};
use super::limits::Limits;
use super::{Digest, SUPPORTED_WIT_VERSION, World};
use crate::model as m;

/// Granularity of the wall-clock deadline.
const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Fuel between two points where a running guest hands control back to the runtime, which then checks
/// the wall-clock deadline; at those points the fuel consumed is on record, so a call stopped by its
/// deadline reports what it really burnt (to within this much).
const YIELD_FUEL: u64 = 1_000_000;

/// Profiles per call of the segment batch form; each chunk runs in its own instance under the limits.
pub const BATCH_CHUNK: usize = 1024;

/// WASI interfaces a guest may import; they are linked with a context that grants nothing.
const WASI_IMPORTS: [&str; 6] =
    ["wasi:cli/", "wasi:clocks/", "wasi:filesystem/", "wasi:io/", "wasi:random/", "wasi:sockets/"];

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled code is kept across restarts; `None` keeps it in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Bytes of compiled plugin versions kept in memory (estimated as 3× the component's size, which is
    /// what compiled code takes here); the least used go first.
    pub compiled_capacity_bytes: u64,
    /// Instances that may exist at once (the pooling allocator's size); more concurrent calls fail with
    /// `instantiate_failed` rather than exhaust the host.
    pub max_instances: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { cache_dir: None, compiled_capacity_bytes: 1 << 30, max_instances: 128 }
    }
}

/// Counters that say what the caches did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Components compiled from their bytes.
    pub compiled: u64,
    /// Components loaded from the disk cache.
    pub disk_hits: u64,
    /// Disk cache files found and refused (then rebuilt).
    pub disk_rejected: u64,
    /// Loads answered from memory.
    pub memory_hits: u64,
}

#[derive(Default)]
struct Counters {
    compiled: AtomicU64,
    disk_hits: AtomicU64,
    disk_rejected: AtomicU64,
    memory_hits: AtomicU64,
}

/// A plugin version ready to run: compiled, its world checked, its imports linked.
pub struct Plugin {
    pub digest: Digest,
    pub world: World,
    pub wit_version: String,
    pub size_bytes: usize,
    pre: Pre,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("sha256", &hex::encode(self.digest))
            .field("world", &self.world)
            .field("wit_version", &self.wit_version)
            .finish()
    }
}

enum Pre {
    /// With the index of its batch form's export.
    Segment(SegmentPre<PluginState>, wasmtime::component::ComponentExportIndex),
    BonusRule(BonusRulePre<PluginState>),
    OfferScorer(OfferScorerPre<PluginState>),
}

/// The decision's context: its limits, its clock and the plugin's configuration.
#[derive(Debug, Clone)]
pub struct CallOptions {
    pub limits: Limits,
    pub now: jiff::Timestamp,
    pub config: Arc<BTreeMap<String, String>>,
}

impl CallOptions {
    pub fn new(world: World, now: jiff::Timestamp) -> Self {
        CallOptions { limits: Limits::default_for(world), now, config: Arc::default() }
    }
}

/// What one call cost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub fuel: u64,
    pub peak_memory_bytes: u64,
    pub duration_ns: u64,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub log_bytes: u64,
    /// Instances created (1, or one per chunk for the batch form).
    pub instances: u32,
}

/// The result of a call with what it cost and what the plugin logged, also when it failed.
#[derive(Debug)]
pub struct Run<T> {
    pub outcome: Result<T, PluginError>,
    pub usage: Usage,
    pub logs: Vec<LogEntry>,
}

impl<T> Run<T> {
    fn failed(error: PluginError, usage: Usage) -> Self {
        Run { outcome: Err(error), usage, logs: Vec::new() }
    }
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<PluginState>,
    compiled: moka::sync::Cache<Digest, Arc<Plugin>>,
    disk: Option<DiskCache>,
    counters: Counters,
    _ticker: EpochTicker,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let engine = Engine::new(&engine_config(config.max_instances))
            .map_err(|e| anyhow::anyhow!("wasmtime engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker).map_err(|e| anyhow::anyhow!("linking host imports: {e}"))?;
        let disk = config.cache_dir.as_deref().map(|d| DiskCache::open(d, &engine)).transpose()?;
        Ok(Runtime {
            _ticker: EpochTicker::start(engine.clone()),
            engine,
            linker,
            compiled: moka::sync::Cache::builder()
                .weigher(|_, p: &Arc<Plugin>| {
                    u32::try_from(p.size_bytes.div_ceil(1024) * 3).unwrap_or(u32::MAX)
                })
                .max_capacity(config.compiled_capacity_bytes / 1024)
                .build(),
            disk,
            counters: Counters::default(),
        })
    }

    pub fn cache_stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            compiled: c.compiled.load(Ordering::Relaxed),
            disk_hits: c.disk_hits.load(Ordering::Relaxed),
            disk_rejected: c.disk_rejected.load(Ordering::Relaxed),
            memory_hits: c.memory_hits.load(Ordering::Relaxed),
        }
    }

    /// Loads a plugin from its component bytes: from memory, from the disk cache, or compiled. Checks
    /// that it is a component exporting one Pitboss world of a supported version and importing nothing
    /// else than the host interfaces and WASI.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<Plugin>, PluginError> {
        let digest: Digest = Sha256::digest(bytes).into();
        if let Some(p) = self.compiled.get(&digest) {
            self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(p);
        }
        // Concurrent loads of the same bytes compile once.
        self.compiled
            .try_get_with(digest, || self.prepare(digest, bytes).map(Arc::new))
            .map_err(|e| (*e).clone())
    }

    /// The component itself, for inspection (`pitboss plugin inspect`), through the same caches.
    pub fn component(&self, bytes: &[u8]) -> Result<Component, PluginError> {
        self.component_for(Sha256::digest(bytes).into(), bytes)
    }

    fn component_for(&self, digest: Digest, bytes: &[u8]) -> Result<Component, PluginError> {
        if let Some(disk) = &self.disk {
            match disk.load(&self.engine, &digest) {
                Lookup::Hit(c) => {
                    self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(c);
                }
                Lookup::Miss => {}
                Lookup::Rejected(why) => {
                    self.counters.disk_rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(sha256 = %hex::encode(digest), %why, "code cache entry refused; recompiling");
                }
            }
        }
        if !wasmparser::Parser::is_component(bytes) {
            return Err(PluginError::NotAComponent(if wasmparser::Parser::is_core_wasm(bytes) {
                "a core module; build for wasm32-wasip2 or wrap it with `wasm-tools component new`".into()
            } else {
                "no WebAssembly header".into()
            }));
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| PluginError::Compile(format!("{e:#}")))?;
        self.counters.compiled.fetch_add(1, Ordering::Relaxed);
        if let Some(disk) = &self.disk
            && let Err(e) = disk.store(&digest, &component)
        {
            tracing::warn!(sha256 = %hex::encode(digest), error = %e, "could not write the code cache");
        }
        Ok(component)
    }

    /// The world, imports and exports of a component.
    pub fn shape(&self, component: &Component) -> super::inspect::Shape {
        super::inspect::shape(&self.engine, component)
    }

    fn prepare(&self, digest: Digest, bytes: &[u8]) -> Result<Plugin, PluginError> {
        let component = self.component_for(digest, bytes)?;
        let shape = self.shape(&component);
        let (world, version) = shape
            .world
            .clone()
            .ok_or_else(|| PluginError::UnknownWorld { exports: shape.exports.join(", ") })?;
        if version != SUPPORTED_WIT_VERSION {
            return Err(PluginError::UnsupportedVersion { version, supported: SUPPORTED_WIT_VERSION.into() });
        }
        if let Some(import) = shape.imports.iter().find(|i| !import_allowed(i)) {
            return Err(PluginError::DisallowedImport { import: import.clone() });
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Compile(format!("linking: {e:#}")))?;
        let bad = |e: wasmtime::Error| PluginError::BadExports { world, message: format!("{e:#}") };
        let pre = match world {
            World::Segment => {
                let interface = format!("pitboss:rules/segmentation@{SUPPORTED_WIT_VERSION}");
                let batch = component
                    .get_export_index(None, &interface)
                    .and_then(|i| component.get_export_index(Some(&i), "evaluate-batch"));
                let pre = SegmentPre::new(pre).map_err(bad)?;
                Pre::Segment(pre, batch.ok_or_else(|| bad(wasmtime::format_err!("no evaluate-batch")))?)
            }
            World::BonusRule => Pre::BonusRule(BonusRulePre::new(pre).map_err(bad)?),
            World::OfferScorer => Pre::OfferScorer(OfferScorerPre::new(pre).map_err(bad)?),
        };
        Ok(Plugin { digest, world, wit_version: version, size_bytes: bytes.len(), pre })
    }

    /// Segment world: is this player in the segment?
    pub fn segment(
        &self,
        plugin: &Plugin,
        opts: &CallOptions,
        profile: &m::Profile,
        event: Option<&m::Event>,
    ) -> Run<m::Membership> {
        let Pre::Segment(pre, _) = &plugin.pre else {
            return Run::failed(wrong_world(World::Segment, plugin), Usage::default());
        };
        let lent = convert::profile_ref(profile);
        let event = event.and_then(convert::event);
        let input = lent.wire_size() + event.wire_size();
        let profile = lent.owned();
        self.execute(opts, input, async |store| {
            let guest = pre.instantiate_async(&mut *store).await?;
            let answer = guest
                .pitboss_rules_segmentation()
                .call_evaluate(&mut *store, &profile, event.as_ref())
                .await?;
            Ok(answer.map(convert::membership))
        })
        .and_then(|m| check_membership(&m).map(|()| m))
    }

    /// Segment world, batch form: one membership per profile, in order. The population is cut into
    /// chunks of `BATCH_CHUNK`, each evaluated in a fresh instance under `opts.limits`, except its fuel
    /// and deadline: a chunk of n profiles is n decisions and has n decisions' fuel and time (up to the
    /// ceilings). With one decision's fuel a chunk of a Python rule ran out every time and was decided
    /// again one profile at a time, some fifty times slower; one of JavaScript takes most of one
    /// decision's deadline.
    pub fn segment_batch<P: std::borrow::Borrow<m::Profile>>(
        &self,
        plugin: &Plugin,
        opts: &CallOptions,
        profiles: &[P],
    ) -> Run<Vec<m::Membership>> {
        let Pre::Segment(pre, evaluate_batch) = &plugin.pre else {
            return Run::failed(wrong_world(World::Segment, plugin), Usage::default());
        };
        let mut total = Run {
            outcome: Ok(Vec::with_capacity(profiles.len())),
            usage: Usage::default(),
            logs: Vec::new(),
        };
        for chunk in profiles.chunks(BATCH_CHUNK) {
            let input: Vec<convert::ProfileRef> =
                chunk.iter().map(|p| convert::profile_ref(p.borrow())).collect();
            let size = input.wire_size();
            let n = chunk.len() as u64;
            let limits = Limits {
                fuel: opts.limits.fuel.saturating_mul(n),
                deadline_ms: opts.limits.deadline_ms.saturating_mul(n),
                ..opts.limits
            };
            let chunk_opts = CallOptions { limits, ..opts.clone() };
            let run = self
                .execute(&chunk_opts, size, async |store| {
                    // Called through its export rather than the generated binding, which would take
                    // copies of the profiles (`ProfileRef`).
                    let instance = pre.instance_pre().instantiate_async(&mut *store).await?;
                    let evaluate = instance.get_typed_func::<
                        (&[convert::ProfileRef],),
                        (Result<Vec<wit::Membership>, wit::RuleError>,),
                    >(&mut *store, evaluate_batch)?;
                    let (answer,) = evaluate.call_async(&mut *store, (&input,)).await?;
                    Ok(answer.map(|v| v.into_iter().map(convert::membership).collect::<Vec<_>>()))
                })
                .and_then(|ms: Vec<m::Membership>| {
                    if ms.len() != chunk.len() {
                        return Err(PluginError::InvalidOutput(format!(
                            "{} memberships for {} profiles",
                            ms.len(),
                            chunk.len()
                        )));
                    }
                    ms.iter().try_for_each(check_membership)?;
                    Ok(ms)
                });
            let u = &mut total.usage;
            u.fuel += run.usage.fuel;
            u.peak_memory_bytes = u.peak_memory_bytes.max(run.usage.peak_memory_bytes);
            u.duration_ns += run.usage.duration_ns;
            u.input_bytes += run.usage.input_bytes;
            u.output_bytes += run.usage.output_bytes;
            u.log_bytes += run.usage.log_bytes;
            u.instances += run.usage.instances;
            total.logs.extend(run.logs);
            match run.outcome {
                Ok(ms) => {
                    if let Ok(all) = &mut total.outcome {
                        all.extend(ms);
                    }
                }
                Err(e) => {
                    total.outcome = Err(e);
                    break;
                }
            }
        }
        total
    }

    /// Bonus-rule world: what happens to the player's bonuses on this event.
    pub fn bonus_rule(
        &self,
        plugin: &Plugin,
        opts: &CallOptions,
        event: &m::Event,
        profile: &m::Profile,
        bonuses: &[m::BonusState],
    ) -> Run<Vec<m::BonusAction>> {
        let Pre::BonusRule(pre) = &plugin.pre else {
            return Run::failed(wrong_world(World::BonusRule, plugin), Usage::default());
        };
        let Some(w_event) = convert::event(event) else {
            let why = format!(
                "{} is emitted by the host; bonus rules do not see it",
                m::wire_name(event.event_type)
            );
            return Run::failed(
                PluginError::Rule(super::error::RuleError::InvalidInput(why)),
                Usage::default(),
            );
        };
        let lent = convert::profile_ref(profile);
        let w_bonuses: Vec<wit::BonusState> = bonuses.iter().map(convert::bonus_state).collect();
        let input = w_event.wire_size() + lent.wire_size() + w_bonuses.wire_size();
        let w_profile = lent.owned();
        self.execute(opts, input, async |store| {
            let guest = pre.instantiate_async(&mut *store).await?;
            let answer = guest
                .pitboss_rules_bonus_rules()
                .call_evaluate(&mut *store, &w_event, &w_profile, &w_bonuses)
                .await?;
            Ok(answer)
        })
        .and_then(|actions| {
            let actions = actions
                .into_iter()
                .map(convert::bonus_action)
                .collect::<Result<Vec<_>, _>>()
                .map_err(PluginError::InvalidOutput)?;
            super::validate::bonus_actions(&actions, bonuses)?;
            Ok(actions)
        })
    }

    /// Offer-scorer world: ranked offers with parameters, each within its template's bounds.
    pub fn offer_scorer(
        &self,
        plugin: &Plugin,
        opts: &CallOptions,
        profile: &m::Profile,
        candidates: &[m::OfferTemplate],
        context: &m::OfferContext,
    ) -> Run<Vec<m::RankedOffer>> {
        let Pre::OfferScorer(pre) = &plugin.pre else {
            return Run::failed(wrong_world(World::OfferScorer, plugin), Usage::default());
        };
        let lent = convert::profile_ref(profile);
        let w_candidates: Vec<wit::OfferTemplate> = candidates.iter().map(convert::offer_template).collect();
        let w_context = convert::offer_context(context);
        let input = lent.wire_size() + w_candidates.wire_size() + w_context.wire_size();
        let w_profile = lent.owned();
        self.execute(opts, input, async |store| {
            let guest = pre.instantiate_async(&mut *store).await?;
            let answer = guest
                .pitboss_rules_offer_scoring()
                .call_score(&mut *store, &w_profile, &w_candidates, &w_context)
                .await?;
            Ok(answer.map(|v| v.into_iter().map(convert::ranked_offer).collect::<Vec<_>>()))
        })
        .and_then(|offers| {
            super::validate::ranked_offers(&offers, candidates, context)?;
            Ok(offers)
        })
    }

    /// Runs one call in a fresh store under `opts`: sets fuel, deadline and memory cap, measures what
    /// it used, and turns every way it can fail into a `PluginError`.
    fn execute<T: WireSizeOut>(
        &self,
        opts: &CallOptions,
        input_bytes: u64,
        call: impl AsyncFnOnce(&mut Store<PluginState>) -> wasmtime::Result<Result<T, wit::RuleError>>,
    ) -> Run<T> {
        let limits = opts.limits.clamped();
        let mut usage = Usage { input_bytes, ..Usage::default() };
        if input_bytes > limits.input_bytes {
            return Run::failed(
                PluginError::InputTooLarge { size: input_bytes, limit: limits.input_bytes },
                usage,
            );
        }
        let started = Instant::now();
        let mut store = self.store(&limits, opts);
        let deadline = started + Duration::from_millis(limits.deadline_ms);
        let result =
            drive(call(&mut store), deadline).unwrap_or_else(|| Err(wasmtime::Error::from(Trap::Interrupt)));
        usage.duration_ns = started.elapsed().as_nanos() as u64;
        usage.fuel = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        usage.instances = 1;
        let state = store.into_data();
        usage.peak_memory_bytes = state.limiter.peak;
        usage.log_bytes = state.log.bytes;
        let outcome = match result {
            Ok(Ok(value)) => {
                usage.output_bytes = value.wire_size_out();
                if usage.output_bytes > limits.output_bytes {
                    Err(PluginError::OutputTooLarge { size: usage.output_bytes, limit: limits.output_bytes })
                } else {
                    Ok(value)
                }
            }
            Ok(Err(rule)) => Err(PluginError::Rule(convert::rule_error(rule))),
            Err(e) => Err(classify(e, &limits, state.wasi.stderr())),
        };
        Run { outcome, usage, logs: state.log.entries }
    }
}

impl Runtime {
    /// A fresh store for one call, with its fuel, deadline and memory cap set.
    fn store(&self, limits: &Limits, opts: &CallOptions) -> Store<PluginState> {
        let state = PluginState::new(limits, opts.now.as_millisecond(), opts.config.clone());
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Fuel and async are enabled on the engine, so these cannot fail.
        let _ = store.set_fuel(limits.fuel);
        let _ = store.fuel_async_yield_interval(Some(YIELD_FUEL));
        // The deadline is kept by `drive` at each yield; the epoch is the backstop for a guest that burns
        // no fuel (stuck in one long instruction), a few ticks later.
        store.set_epoch_deadline(limits.deadline_ms.div_ceil(EPOCH_TICK.as_millis() as u64) + 5);
        store
    }

    /// Creates a fresh store and instance of `plugin` and drops them without calling it: the fixed cost
    /// of isolation, which benchmarks compare with a whole decision.
    #[doc(hidden)]
    pub fn instantiate_only(&self, plugin: &Plugin, opts: &CallOptions) -> Result<(), PluginError> {
        let limits = opts.limits.clamped();
        let mut store = self.store(&limits, opts);
        let deadline = Instant::now() + Duration::from_millis(limits.deadline_ms);
        let result = drive(
            async {
                match &plugin.pre {
                    Pre::Segment(pre, _) => pre.instantiate_async(&mut store).await.map(drop),
                    Pre::BonusRule(pre) => pre.instantiate_async(&mut store).await.map(drop),
                    Pre::OfferScorer(pre) => pre.instantiate_async(&mut store).await.map(drop),
                }
            },
            deadline,
        )
        .unwrap_or_else(|| Err(wasmtime::Error::from(Trap::Interrupt)));
        result.map_err(|e| classify(e, &limits, None))
    }
}

impl<T> Run<T> {
    /// Applies a check or conversion to a successful outcome.
    fn and_then<U>(self, f: impl FnOnce(T) -> Result<U, PluginError>) -> Run<U> {
        Run { outcome: self.outcome.and_then(f), usage: self.usage, logs: self.logs }
    }
}

/// Output size of the raw answer, before conversion.
trait WireSizeOut {
    fn wire_size_out(&self) -> u64;
}

impl WireSizeOut for m::Membership {
    fn wire_size_out(&self) -> u64 {
        self.wire_size()
    }
}

impl WireSizeOut for Vec<m::Membership> {
    fn wire_size_out(&self) -> u64 {
        self.wire_size()
    }
}

impl WireSizeOut for Vec<wit::BonusAction> {
    fn wire_size_out(&self) -> u64 {
        // Converted after the size check; measure the converted form's strings the same way.
        self.iter()
            .map(|a| match a {
                wit::BonusAction::Grant(g) => {
                    48 + g.template.wire_size() + g.reason.wire_size() + g.amount.currency.wire_size()
                }
                wit::BonusAction::Progress(p) => 48 + p.bonus_id.wire_size() + p.category.wire_size(),
                wit::BonusAction::Complete(c) | wit::BonusAction::Forfeit(c) => {
                    48 + c.bonus_id.wire_size() + c.reason.wire_size()
                }
                wit::BonusAction::RejectBet(r) => {
                    48 + r.bonus_id.wire_size() + r.bet_id.wire_size() + r.reason.wire_size()
                }
            })
            .sum::<u64>()
            + 8
    }
}

impl WireSizeOut for Vec<m::RankedOffer> {
    fn wire_size_out(&self) -> u64 {
        self.wire_size()
    }
}

fn wrong_world(expected: World, plugin: &Plugin) -> PluginError {
    PluginError::WrongWorld { expected, found: plugin.world }
}

fn check_membership(m: &m::Membership) -> Result<(), PluginError> {
    match m.score {
        Some(s) if !s.is_finite() => Err(PluginError::InvalidOutput(format!("score {s} is not finite"))),
        _ => Ok(()),
    }
}

fn import_allowed(name: &str) -> bool {
    let ours = ["types", "log", "clock", "config"]
        .iter()
        .any(|i| name == format!("pitboss:rules/{i}@{SUPPORTED_WIT_VERSION}"));
    ours || WASI_IMPORTS.iter().any(|p| name.starts_with(p))
}

/// Runs a guest call to its end on this thread, checking the deadline each time the guest yields (every
/// `YIELD_FUEL`): past it, the call is dropped — wasmtime unwinds the guest — and `None` says so. Nothing
/// else ever makes a call wait (no host import is asynchronous), so there is no executor to wake.
fn drive<F: Future>(call: F, deadline: Instant) -> Option<F::Output> {
    let mut call = std::pin::pin!(call);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        match call.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => return Some(out),
            std::task::Poll::Pending if Instant::now() >= deadline => return None,
            std::task::Poll::Pending => {}
        }
    }
}

/// Turns a wasmtime error from instantiation or a call into the typed failure it stands for.
fn classify(e: wasmtime::Error, limits: &Limits, stderr: Option<String>) -> PluginError {
    for cause in e.chain() {
        if let Some(limit) = cause.downcast_ref::<LimitExceeded>() {
            return match limit {
                LimitExceeded::Memory { limit_bytes } => {
                    PluginError::OutOfMemory { limit_bytes: *limit_bytes }
                }
                LimitExceeded::Log { limit_bytes } => PluginError::LogLimit { limit_bytes: *limit_bytes },
            };
        }
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PluginError::OutOfFuel { limit: limits.fuel },
        Some(Trap::Interrupt) => PluginError::Deadline { limit_ms: limits.deadline_ms },
        Some(Trap::StackOverflow) => PluginError::StackOverflow,
        Some(trap) => {
            let mut message = trap.to_string();
            if let Some(stderr) = stderr {
                // A guest's panic message, when its toolchain wrote one.
                let tail: String =
                    stderr.chars().rev().take(2048).collect::<Vec<_>>().into_iter().rev().collect();
                message = format!("{message}; guest stderr: {}", tail.trim());
            }
            PluginError::Trap(message)
        }
        None => PluginError::Instantiate(format!("{e:#}")),
    }
}

fn engine_config(max_instances: u32) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances * 8)
        .total_memories(max_instances * 2)
        .total_tables(max_instances * 8)
        .max_core_instances_per_component(64)
        .max_memories_per_component(4)
        .max_tables_per_component(16)
        .max_memory_size(Limits::CEILING.memory_bytes as usize)
        // Reset freed slots with memset and keep them mapped: instantiation otherwise spends most of
        // its time in page faults (FIELD-NOTES: ~24 µs → ~12 µs per fresh instance).
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(1 << 20)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Advances the engine's epoch every `EPOCH_TICK`, which is what enforces wall-clock deadlines.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("pitboss-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop, handle: Some(handle) }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
