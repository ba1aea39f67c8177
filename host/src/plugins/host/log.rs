//! `pitboss:rules/log`: a bounded structured log kept with the decision. Going over the decision's log
//! budget fails the decision (`log_limit`) rather than silently dropping entries, so a flood is visible.

use serde::Serialize;

use super::PluginState;
use crate::plugins::bindings::log;
use crate::plugins::error::LimitExceeded;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    pub level: LogLevel,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
}

pub(crate) struct LogBuffer {
    pub(crate) entries: Vec<LogEntry>,
    pub(crate) bytes: u64,
    limit: u64,
}

impl LogBuffer {
    pub(crate) fn new(limit: u64) -> Self {
        LogBuffer { entries: Vec::new(), bytes: 0, limit }
    }
}

impl log::Host for PluginState {
    fn write(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let size = message.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        let buf = &mut self.log;
        buf.bytes = buf.bytes.saturating_add(size as u64);
        if buf.bytes > buf.limit {
            return Err(LimitExceeded::Log { limit_bytes: buf.limit }.into());
        }
        let level = match level {
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        buf.entries.push(LogEntry { level, message, fields });
        Ok(())
    }
}
