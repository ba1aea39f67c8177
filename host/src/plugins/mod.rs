//! Rule plugins: Wasm components compiled against `wit/` (pitboss:rules), run isolated and bounded.
//!
//! This module owns the runtime (one engine, compiled-code caches, one fresh instance per decision,
//! limits on fuel, memory, time, input, output and logs) and the checks on what plugins answer. It must
//! never let a plugin reach anything the decision does not hand it, nor let one call's failure touch the
//! host or another call.

mod bindings;
mod cache;
mod convert;
pub mod error;
mod host;
pub mod inspect;
pub mod limits;
pub mod registry;
mod runtime;
pub mod table;
mod validate;

use serde::{Deserialize, Serialize};

pub use error::{PluginError, RuleError};
pub use host::{LogEntry, LogLevel};
pub use limits::Limits;
pub use runtime::{BATCH_CHUNK, CacheStats, CallOptions, Plugin, Run, Runtime, RuntimeConfig, Usage};

/// Runs `f` over `items` cut into one part per core, in their order, each part on a blocking thread
/// (plugin calls run to their end, bounded by their own limits): each part's length and what `f` made
/// of it, or the error of a thread that panicked.
pub async fn across_cores<T, P, F>(mut items: Vec<T>, f: F) -> Vec<(usize, Result<P, tokio::task::JoinError>)>
where
    T: Send + 'static,
    P: Send + 'static,
    F: Fn(Vec<T>) -> P + Send + Sync + 'static,
{
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let per_part = items.len().div_ceil(cores).max(1);
    let f = std::sync::Arc::new(f);
    let mut parts = Vec::new();
    while !items.is_empty() {
        // The last part first (where it starts), so that nothing is moved twice; put in order below.
        let part = items.split_off((items.len() - 1) / per_part * per_part);
        let f = f.clone();
        parts.push((part.len(), tokio::task::spawn_blocking(move || f(part))));
    }
    parts.reverse();
    let mut out = Vec::with_capacity(parts.len());
    for (len, task) in parts {
        out.push((len, task.await));
    }
    out
}

/// sha256 of a component's bytes: the identity of a plugin version.
pub type Digest = [u8; 32];

/// The version of pitboss:rules this host runs.
pub const SUPPORTED_WIT_VERSION: &str = "0.1.0";

/// The kinds of rule plugin, one per WIT world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    Segment,
    BonusRule,
    OfferScorer,
}

impl World {
    pub const ALL: [World; 3] = [World::Segment, World::BonusRule, World::OfferScorer];

    /// The WIT world's name.
    pub fn name(self) -> &'static str {
        match self {
            World::Segment => "segment",
            World::BonusRule => "bonus-rule",
            World::OfferScorer => "offer-scorer",
        }
    }

    /// The interface a component of this world exports.
    pub fn export_interface(self) -> &'static str {
        match self {
            World::Segment => "segmentation",
            World::BonusRule => "bonus-rules",
            World::OfferScorer => "offer-scoring",
        }
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn across_cores_keeps_every_item_in_order() {
        for n in [0usize, 1, 2, 7, 10, 1001] {
            let parts = super::across_cores((0..n).collect(), |part: Vec<usize>| part).await;
            let lens: usize = parts.iter().map(|(len, _)| len).sum();
            let all: Vec<usize> = parts.into_iter().flat_map(|(_, p)| p.unwrap()).collect();
            assert_eq!((lens, all), (n, (0..n).collect::<Vec<_>>()));
        }
    }
}
