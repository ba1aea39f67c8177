//! Every integration test of the `pitboss` crate in one binary, so that wasmtime and the host link once
//! rather than once per file: one module per area, named by behaviour; helpers in `support/`.

#[macro_use]
mod support;

mod admin_keys_and_audit;
mod architecture;
mod bindings_and_decisions;
mod cli;
mod code_cache;
mod compliance;
mod consents_and_erasure;
mod engage;
mod event_log;
mod guest_languages;
mod hostile_http;
mod hostile_plugins;
mod ingestion;
mod messaging;
mod offers;
mod plugin_registry;
mod policy_gate;
mod reference_plugins;
mod restart;
mod segments;
mod templates;
