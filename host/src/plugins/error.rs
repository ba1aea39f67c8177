//! How a plugin call can fail. Each failure has a stable `code` (API responses, decision records, the
//! CLI's JSON) and fails only the call it happened in.

use serde::Serialize;

use super::World;

/// A host-enforced limit, raised from inside the call (limiter, host import) as a trap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("linear memory limit of {limit_bytes} bytes exceeded")]
    Memory { limit_bytes: u64 },
    #[error("log limit of {limit_bytes} bytes exceeded")]
    Log { limit_bytes: u64 },
}

/// What the guest itself returned as `rule-error` (not a trap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum RuleError {
    InvalidInput(String),
    BadConfig(String),
    Failed(String),
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            RuleError::BadConfig(m) => write!(f, "bad configuration: {m}"),
            RuleError::Failed(m) => write!(f, "{m}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PluginError {
    // ---- loading ----
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error("the component does not export a supported Pitboss world (exports: {exports})")]
    UnknownWorld { exports: String },
    #[error("the component exports world `{found}`, expected `{expected}`")]
    WrongWorld { expected: World, found: World },
    #[error("the component's exports do not match world `{world}` of pitboss:rules@0.1.0: {message}")]
    BadExports { world: World, message: String },
    #[error("pitboss:rules@{version} is not supported by this host (supported: {supported})")]
    UnsupportedVersion { version: String, supported: String },
    #[error("the component imports `{import}`, which plugins may not use")]
    DisallowedImport { import: String },
    #[error("compilation failed: {0}")]
    Compile(String),
    // ---- one call ----
    #[error("input of {size} bytes is over the limit of {limit}")]
    InputTooLarge { size: u64, limit: u64 },
    #[error("could not instantiate the plugin: {0}")]
    Instantiate(String),
    #[error("out of fuel (limit {limit})")]
    OutOfFuel { limit: u64 },
    #[error("out of memory (limit {limit_bytes} bytes)")]
    OutOfMemory { limit_bytes: u64 },
    #[error("deadline of {limit_ms} ms exceeded")]
    Deadline { limit_ms: u64 },
    #[error("call stack exhausted")]
    StackOverflow,
    #[error("log limit of {limit_bytes} bytes exceeded")]
    LogLimit { limit_bytes: u64 },
    #[error("trap: {0}")]
    Trap(String),
    #[error("output of {size} bytes is over the limit of {limit}")]
    OutputTooLarge { size: u64, limit: u64 },
    #[error("invalid output: {0}")]
    InvalidOutput(String),
    #[error("the rule returned an error: {0}")]
    Rule(RuleError),
}

impl PluginError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            PluginError::NotAComponent(_) => "not_a_component",
            PluginError::UnknownWorld { .. } => "unknown_world",
            PluginError::WrongWorld { .. } => "wrong_world",
            PluginError::BadExports { .. } => "bad_exports",
            PluginError::UnsupportedVersion { .. } => "unsupported_version",
            PluginError::DisallowedImport { .. } => "disallowed_import",
            PluginError::Compile(_) => "compile_failed",
            PluginError::InputTooLarge { .. } => "input_too_large",
            PluginError::Instantiate(_) => "instantiate_failed",
            PluginError::OutOfFuel { .. } => "out_of_fuel",
            PluginError::OutOfMemory { .. } => "out_of_memory",
            PluginError::Deadline { .. } => "deadline_exceeded",
            PluginError::StackOverflow => "stack_overflow",
            PluginError::LogLimit { .. } => "log_limit",
            PluginError::Trap(_) => "trap",
            PluginError::OutputTooLarge { .. } => "output_too_large",
            PluginError::InvalidOutput(_) => "invalid_output",
            PluginError::Rule(_) => "rule_error",
        }
    }
}

impl Serialize for PluginError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("PluginError", 2)?;
        st.serialize_field("code", self.code())?;
        st.serialize_field("message", &self.to_string())?;
        st.end()
    }
}
