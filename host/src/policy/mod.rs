//! The policy gate: the one place that decides whether anything reaches a player — responsible gambling,
//! consent in force per channel and product, jurisdiction packs (licence, banned channels, age, quiet
//! hours, caps), frequency caps, dedup and cooldowns. It never lets marketing through when in doubt: a
//! missing pack, consent or licence is a refusal with its reason.

pub mod gate;
pub mod ledger;
pub mod packs;
pub mod store;

pub use gate::{
    Basis, Caps, Decision, FrequencyPolicy, MessageClass, Priority, Reason, Request, Sent, decide,
};
pub use packs::{Pack, PackDocument, Packs};
pub use store::{PackError, PackStore};
