//! `pitboss:rules/clock`: the decision's time, fixed before the call.

use super::PluginState;
use crate::plugins::bindings::clock;

impl clock::Host for PluginState {
    fn now(&mut self) -> wasmtime::Result<i64> {
        Ok(self.now_ms)
    }
}
