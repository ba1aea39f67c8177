//! The store data of one decision and the host side of the plugin imports: one file per WIT interface,
//! plus the empty WASI context. Everything a plugin can observe is fixed by the decision: its clock, its
//! configuration, a seeded random stream. Nothing here may reach a file, the network, the environment or
//! the wall clock.

mod clock;
mod config;
mod log;
mod wasi;

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

pub use log::{LogEntry, LogLevel};

use super::bindings;
use super::limits::{Limits, MemoryLimiter};

/// Everything one decision's `Store` holds.
pub struct PluginState {
    pub(crate) limiter: MemoryLimiter,
    pub(crate) now_ms: i64,
    pub(crate) config: Arc<BTreeMap<String, String>>,
    pub(crate) log: log::LogBuffer,
    pub(crate) wasi: wasi::LazyWasi,
}

impl PluginState {
    pub fn new(limits: &Limits, now_ms: i64, config: Arc<BTreeMap<String, String>>) -> Self {
        PluginState {
            limiter: MemoryLimiter::new(limits.memory_bytes),
            now_ms,
            config,
            log: log::LogBuffer::new(limits.log_bytes),
            wasi: wasi::LazyWasi::new(now_ms),
        }
    }
}

/// Adds every import a plugin may have: the three host interfaces and an empty WASI.
pub fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    bindings::segment::Segment::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    Ok(())
}

impl bindings::wit::Host for PluginState {}
