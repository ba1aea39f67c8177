//! Pitboss: a WebAssembly-plugin host for the rules of an iGaming CRM. The host owns what must never be
//! wrong (events, profiles, consent and responsible-gambling enforcement, delivery, audit); per-brand
//! rules run as sandboxed Wasm components (`plugins`).

pub mod api;
pub mod audit;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod core;
pub mod decisions;
pub mod defs;
pub mod delivery;
pub mod engage;
pub mod events;
pub mod impact;
pub mod messaging;
pub mod model;
pub mod offers;
pub mod plugins;
pub mod policy;
pub mod profiles;
pub mod remote;
pub mod segments;
pub mod server;
pub mod store;
pub mod telemetry;
