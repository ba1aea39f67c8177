//! The `pitboss` command line. `plugin run`, `plugin test` and `plugin inspect` are the local tools a
//! brand team uses before uploading a plugin.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::plugins::{self, Limits, Runtime, RuntimeConfig, World};

#[derive(Debug, Parser)]
#[command(
    name = "pitboss",
    version,
    about = "Pitboss: a WebAssembly-plugin host for the rules of an iGaming CRM"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host: the HTTP API, the bus consumers, on SQLite (default) or PostgreSQL.
    Serve(Box<crate::config::ServeArgs>),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Make an ed25519 key pair for signing plugin approvals: the private key goes to --out (mode 0600),
    /// the public key is printed (an admin registers it for you).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Work with rule plugins locally.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Segments on a running host: define, list, members, sweeps.
    #[command(subcommand)]
    Segment(crate::remote::SegmentCommand),
    /// Triggers and journeys on a running host: load bundles, activate versions, figures.
    #[command(subcommand)]
    Engage(crate::remote::EngageCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print it (once: only its hash is stored).
    Create {
        /// platform, operator, compliance, marketing, analyst or admin.
        #[arg(long)]
        role: crate::auth::Role,
        /// A brand the key may act for (repeat for several).
        #[arg(long = "brand", required = true)]
        brands: Vec<String>,
        /// Who the key is for (a person or a system); four-eyes checks compare holders.
        #[arg(long, default_value = "")]
        holder: String,
        #[command(flatten)]
        db: crate::config::DbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chain; exit code 1 if an entry was edited or deleted.
    Verify {
        #[command(flatten)]
        db: crate::config::DbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Run a plugin once on a JSON input and print the decision with fuel, peak memory and duration.
    Run(RunArgs),
    /// Run a plugin against a decision table (a JSON array of cases) and report each case.
    Test(TestArgs),
    /// Sign a plugin version for approval: the canonical manifest plus the sha256 of the component.
    Sign {
        /// Private key file from `pitboss keygen`.
        #[arg(long)]
        key: PathBuf,
        /// The manifest uploaded with the version (JSON).
        #[arg(long)]
        manifest: PathBuf,
        /// The component (.wasm) you reviewed.
        #[arg(long)]
        wasm: PathBuf,
        /// The impact report you reviewed (`pitboss plugin impact --id … > report.json`), when the
        /// version has one: the approval signs its sha256 too.
        #[arg(long)]
        impact: Option<PathBuf>,
    },
    #[command(flatten)]
    Remote(crate::remote::RemoteCommand),
    /// Print the world a component exports, its WIT package version and its imports.
    Inspect {
        /// The component (.wasm).
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The component (.wasm).
    #[arg(long)]
    pub wasm: PathBuf,
    /// The world the plugin must export.
    #[arg(long, value_enum)]
    pub world: World,
    /// The input document (JSON): see README, "Plugin inputs".
    #[arg(long)]
    pub input: PathBuf,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The component (.wasm).
    #[arg(long)]
    pub wasm: PathBuf,
    /// The world the plugin must export.
    #[arg(long, value_enum)]
    pub world: World,
    /// The decision table (JSON array of `{name, input, expect | expect_error}`).
    #[arg(long)]
    pub table: PathBuf,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Overrides of the world's default limits, each capped by the hard ceiling.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Fuel (Wasm instructions) per call.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Linear memory per call, in MiB.
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// Wall-clock deadline per call, in milliseconds.
    #[arg(long)]
    pub deadline_ms: Option<u64>,
    /// Directory of the compiled-code cache (default: none, compile every time).
    #[arg(long, env = "PITBOSS_CODE_CACHE")]
    pub code_cache: Option<PathBuf>,
}

impl LimitArgs {
    fn limits(&self, world: World) -> Limits {
        let mut l = Limits::default_for(world);
        if let Some(f) = self.fuel {
            l.fuel = f;
        }
        if let Some(m) = self.memory_mib {
            l.memory_bytes = m << 20;
        }
        if let Some(d) = self.deadline_ms {
            l.deadline_ms = d;
        }
        l.clamped()
    }

    fn runtime(&self) -> anyhow::Result<Runtime> {
        Runtime::new(RuntimeConfig { cache_dir: self.code_cache.clone(), ..RuntimeConfig::default() })
    }
}

/// Runs a command; the exit code is 0 on success, 1 when the plugin or the input failed, 2 on usage or
/// I/O errors.
pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => tokio_main(crate::server::serve(*args)).map(|()| ExitCode::SUCCESS),
        Command::Audit(AuditCommand::Verify { db }) => tokio_main(async move {
            let db = crate::store::Db::open(&db.database_url).await?;
            let verdict = crate::audit::verify(&db).await?;
            println!("{}", serde_json::to_string_pretty(&verdict)?);
            Ok(match verdict.broken_at {
                None => {
                    eprintln!("audit log intact: {} entries, head {}", verdict.entries, verdict.head);
                    ExitCode::SUCCESS
                }
                Some((seq, why)) => {
                    eprintln!("audit log BROKEN at entry {seq}: {why}");
                    ExitCode::from(1)
                }
            })
        }),
        Command::Keys(KeysCommand::Create { role, brands, holder, db }) => tokio_main(async move {
            let db = crate::store::Db::open(&db.database_url).await?;
            let actor = crate::auth::keys::cli_actor();
            let (id, key) = crate::auth::keys::create(&db, &actor, role, &brands, &holder).await?;
            eprintln!(
                "created {id} (role {}, brands {}); the key is shown once:",
                role.as_str(),
                brands.join(", ")
            );
            println!("{key}");
            Ok(())
        })
        .map(|()| ExitCode::SUCCESS),
        Command::Plugin(PluginCommand::Run(args)) => plugin_run(&args),
        Command::Plugin(PluginCommand::Test(args)) => plugin_test(&args),
        Command::Plugin(PluginCommand::Inspect { file }) => plugin_inspect(&file),
        Command::Plugin(PluginCommand::Sign { key, manifest, wasm, impact }) => {
            plugin_sign(&key, &manifest, &wasm, impact.as_deref())
        }
        Command::Plugin(PluginCommand::Remote(cmd)) => tokio_main(crate::remote::run(cmd)),
        Command::Segment(cmd) => tokio_main(crate::remote::run_segment(cmd)),
        Command::Engage(cmd) => tokio_main(crate::remote::run_engage(cmd)),
        Command::Keygen { out } => keygen(&out),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn tokio_main<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(f)
}

fn print(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON"));
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Loads the plugin and checks its world; prints the error as JSON when that fails.
fn load(
    rt: &Runtime,
    wasm: &Path,
    world: World,
) -> anyhow::Result<Result<std::sync::Arc<plugins::Plugin>, ExitCode>> {
    let bytes = read(wasm)?;
    Ok(match rt.load(&bytes) {
        Ok(p) if p.world == world => Ok(p),
        Ok(p) => Err(fail(&plugins::PluginError::WrongWorld { expected: world, found: p.world })),
        Err(e) => Err(fail(&e)),
    })
}

fn fail(e: &plugins::PluginError) -> ExitCode {
    print(&json!({ "error": e }));
    eprintln!("error: {e}");
    ExitCode::from(1)
}

fn plugin_run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let rt = args.limits.runtime()?;
    let plugin = match load(&rt, &args.wasm, args.world)? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let input: plugins::table::Input = serde_json::from_slice(&read(&args.input)?)
        .with_context(|| format!("parsing {}", args.input.display()))?;
    let run = plugins::table::run(&rt, &plugin, &input, args.limits.limits(args.world))?;
    let plugin_info = json!({ "sha256": hex::encode(plugin.digest), "world": plugin.world, "wit_version": plugin.wit_version });
    match run.outcome {
        Ok(decision) => {
            print(
                &json!({ "plugin": plugin_info, "decision": decision, "usage": run.usage, "logs": run.logs }),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            print(&json!({ "plugin": plugin_info, "error": e, "usage": run.usage, "logs": run.logs }));
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn plugin_test(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let rt = args.limits.runtime()?;
    let plugin = match load(&rt, &args.wasm, args.world)? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let cases: Vec<plugins::table::Case> = serde_json::from_slice(&read(&args.table)?)
        .with_context(|| format!("parsing {}", args.table.display()))?;
    let results = plugins::table::run_table(&rt, &plugin, &cases, args.limits.limits(args.world));
    let failed = results.iter().filter(|r| !r.passed).count();
    for r in &results {
        match &r.mismatch {
            None => eprintln!("ok    {}", r.name),
            Some(m) => eprintln!("FAIL  {}: {m}", r.name),
        }
    }
    eprintln!("{} cases, {} passed, {failed} failed", results.len(), results.len() - failed);
    print(&json!({ "cases": results.len(), "failed": failed, "results": results }));
    Ok(if failed == 0 && !results.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let (private, public) = crate::plugins::registry::manifest::keygen();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file =
        options.open(out).with_context(|| format!("creating {} (it must not exist)", out.display()))?;
    writeln!(file, "{private}")?;
    eprintln!("private key written to {}; public key:", out.display());
    println!("{public}");
    Ok(ExitCode::SUCCESS)
}

fn plugin_sign(key: &Path, manifest: &Path, wasm: &Path, impact: Option<&Path>) -> anyhow::Result<ExitCode> {
    use crate::plugins::registry::manifest::{Manifest, sign, signing_payload};
    let manifest = Manifest::parse(&read(manifest)?)
        .map_err(|e| anyhow::anyhow!("manifest: {}: {}", e.field, e.message))?;
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(read(wasm)?));
    let private = std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let impact = match impact {
        Some(path) => {
            let v: serde_json::Value = serde_json::from_slice(&read(path)?)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            // The report as `GET /admin/plugins/{id}/impact` serves it, or the bare report.
            let report = if v.get("report").is_some() { &v["report"] } else { &v };
            Some(crate::impact::sha256_of(report))
        }
        None => None,
    };
    let signature = sign(&private, &signing_payload(&manifest, &sha, impact.as_deref()))?;
    let with = impact.as_deref().map(|i| format!(", impact report {i}")).unwrap_or_default();
    eprintln!("signed {} {} (sha256 {sha}{with})", manifest.name, manifest.version);
    println!("{signature}");
    Ok(ExitCode::SUCCESS)
}

fn plugin_inspect(file: &Path) -> anyhow::Result<ExitCode> {
    let bytes = read(file)?;
    let rt = Runtime::new(RuntimeConfig::default())?;
    let component = match rt.component(&bytes) {
        Ok(c) => c,
        Err(e) => return Ok(fail(&e)),
    };
    let shape = rt.shape(&component);
    let digest = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes));
    let (world, version) = match &shape.world {
        Some((w, v)) => (Some(w.name()), Some(v.as_str())),
        None => (None, None),
    };
    let loadable = rt.load(&bytes).err();
    print(&json!({
        "sha256": hex::encode(digest),
        "size_bytes": bytes.len(),
        "world": world,
        "package": world.map(|_| "pitboss:rules"),
        "wit_version": version,
        "imports": shape.imports,
        "exports": shape.exports,
        "runnable": loadable.is_none(),
        "error": loadable,
    }));
    Ok(if world.is_some() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
