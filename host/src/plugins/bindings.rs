//! The generated bindings of `pitboss:rules@0.1.0`, one module per world. The segment world owns the shared
//! types and host interfaces; the other worlds reuse them so that a profile is one Rust type whatever the
//! world. Host imports are trappable: a plugin that breaks a limit inside a host call (log flood) fails.
//! Exports are async: the runtime drives each call itself, so that fuel can be counted to the end (see
//! `runtime::drive`).

pub mod segment {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "segment",
        imports: { default: trappable },
        exports: { default: async },
    });
}

pub mod bonus {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "bonus-rule",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "pitboss:rules/types": super::segment::pitboss::rules::types,
            "pitboss:rules/log": super::segment::pitboss::rules::log,
            "pitboss:rules/clock": super::segment::pitboss::rules::clock,
            "pitboss:rules/config": super::segment::pitboss::rules::config,
        },
    });
}

pub mod offer {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "offer-scorer",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "pitboss:rules/types": super::segment::pitboss::rules::types,
            "pitboss:rules/log": super::segment::pitboss::rules::log,
            "pitboss:rules/clock": super::segment::pitboss::rules::clock,
            "pitboss:rules/config": super::segment::pitboss::rules::config,
        },
    });
}

pub use segment::pitboss::rules::types as wit;
pub use segment::pitboss::rules::{clock, config, log};
