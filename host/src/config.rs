//! How the server is configured: flags with environment fallbacks, laptop defaults (a SQLite file in the
//! working directory, 127.0.0.1:8080).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// `sqlite://FILE` (created and migrated on first start) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://pitboss.db")]
    pub database_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PITBOSS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub db: DbArgs,
    /// AES-256 key for contacts at rest, 64 hex characters. Required unless --dev.
    #[arg(long, env = "PITBOSS_CONTACTS_KEY", hide_env_values = true)]
    pub contacts_key: Option<String>,
    /// Development mode: without a contacts key, generate a throw-away one (contacts written with it are
    /// unreadable after a restart).
    #[arg(long)]
    pub dev: bool,
    #[command(flatten)]
    pub options: ServeOptions,
}

/// What the server keeps besides the database, and policy settings.
#[derive(Debug, Clone, Args)]
pub struct ServeOptions {
    /// Directory for plugin components (content-addressed) and their compiled code.
    #[arg(long, env = "PITBOSS_DATA_DIR", default_value = "pitboss-data")]
    pub data_dir: PathBuf,
    /// Directory of compiled plugin code (default: DATA_DIR/code-cache). Several hosts may share one.
    #[arg(long, env = "PITBOSS_CODE_CACHE")]
    pub code_cache: Option<PathBuf>,
    /// Jurisdictions whose plugin versions need two distinct approvers (comma-separated).
    #[arg(long, env = "PITBOSS_DUAL_APPROVAL", value_delimiter = ',')]
    pub dual_approval: Vec<String>,
}
