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
