//! Pitboss: a WebAssembly-plugin host for the rules of an iGaming CRM.
pub mod model;
pub mod plugins;
