//! The command line against a running host: the plugin lifecycle (`upload`, `approve`, `bind`,
//! `rollback`, `list`) from a terminal. URL and key come from flags or PITBOSS_URL / PITBOSS_API_KEY.
//! Speaks plain HTTP: run it on the host, or through a TLS-terminating proxy.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The host's base URL.
    #[arg(long, env = "PITBOSS_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Your API key.
    #[arg(long, env = "PITBOSS_API_KEY", hide_env_values = true)]
    pub api_key: String,
}

#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Upload a version (operator): the component and its manifest.
    Upload {
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long)]
        wasm: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Approve a version (compliance) with a signature from `pitboss plugin sign`.
    Approve {
        /// The version's id (pv_…).
        #[arg(long)]
        id: String,
        /// Your registered signing key's id (sk_…).
        #[arg(long)]
        signing_key_id: String,
        #[arg(long)]
        signature: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Bind an approved version (operator) to a brand and a jurisdiction ("*": the brand default).
    Bind {
        #[arg(long)]
        id: String,
        #[arg(long)]
        brand: String,
        #[arg(long)]
        jurisdiction: String,
        /// Make the version this segment's rule (segment plugins).
        #[arg(long)]
        segment: Option<String>,
        /// The plugin's configuration, KEY=VALUE (repeat).
        #[arg(long = "config", value_parser = parse_kv)]
        config: Vec<(String, String)>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Bind again the version bound before the current one (operator).
    Rollback {
        #[arg(long)]
        brand: String,
        #[arg(long)]
        jurisdiction: String,
        #[arg(long, value_enum)]
        world: crate::plugins::World,
        /// The segment whose rule rolls back.
        #[arg(long)]
        segment: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// A version's impact report (`--segment` starts one): what it would change, and the sha256 an
    /// approval signs with it (`pitboss plugin sign --impact`).
    Impact {
        #[arg(long)]
        id: String,
        /// Run a report now: the segment whose rule the candidate would replace.
        #[arg(long)]
        segment: Option<String>,
        #[arg(long)]
        brand: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the versions you can see, with their approvals, and the current bindings.
    List {
        #[command(flatten)]
        remote: Remote,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

/// Prints the response body; exit code 0 on success, 1 when the host refused.
async fn finish(r: reqwest::Response) -> anyhow::Result<ExitCode> {
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    println!("{}", serde_json::to_string_pretty(&body)?);
    if status.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: {status}: {}", body["error"]["message"].as_str().unwrap_or(""));
        Ok(ExitCode::from(1))
    }
}

pub async fn run(cmd: RemoteCommand) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::new();
    let url = |r: &Remote, path: &str| format!("{}{path}", r.url.trim_end_matches('/'));
    let send = |req: reqwest::RequestBuilder, r: &Remote| {
        let req = req.bearer_auth(&r.api_key);
        async move { req.send().await.context("reaching the host") }
    };
    match cmd {
        RemoteCommand::Upload { manifest, wasm, remote } => {
            let m = std::fs::read(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
            let w = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
            let form = reqwest::multipart::Form::new()
                .part("manifest", reqwest::multipart::Part::bytes(m))
                .part("component", reqwest::multipart::Part::bytes(w).file_name("plugin.wasm"));
            finish(send(http.post(url(&remote, "/admin/plugins")).multipart(form), &remote).await?).await
        }
        RemoteCommand::Approve { id, signing_key_id, signature, remote } => {
            let body = json!({"signing_key_id": signing_key_id, "signature": signature});
            finish(
                send(http.post(url(&remote, &format!("/admin/plugins/{id}/approvals"))).json(&body), &remote)
                    .await?,
            )
            .await
        }
        RemoteCommand::Bind { id, brand, jurisdiction, segment, config, remote } => {
            let config: serde_json::Map<String, Value> =
                config.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            let body = json!({"brand_id": brand, "jurisdiction": jurisdiction, "plugin_id": id,
                              "segment": segment, "config": config});
            finish(send(http.post(url(&remote, "/admin/bindings")).json(&body), &remote).await?).await
        }
        RemoteCommand::Rollback { brand, jurisdiction, world, segment, remote } => {
            let body =
                json!({"brand_id": brand, "jurisdiction": jurisdiction, "world": world, "segment": segment});
            finish(send(http.post(url(&remote, "/admin/bindings/rollback")).json(&body), &remote).await?)
                .await
        }
        RemoteCommand::Impact { id, segment, brand, remote } => {
            let path = url(&remote, &format!("/admin/plugins/{id}/impact"));
            if segment.is_some() {
                let body = json!({"segment": segment, "brand_id": brand});
                return finish(send(http.post(path).json(&body), &remote).await?).await;
            }
            finish(send(http.get(path), &remote).await?).await
        }
        RemoteCommand::List { remote } => {
            let plugins = send(http.get(url(&remote, "/admin/plugins")), &remote).await?;
            if !plugins.status().is_success() {
                return finish(plugins).await;
            }
            let plugins: Value = plugins.json().await?;
            let bindings: Value =
                send(http.get(url(&remote, "/admin/bindings")), &remote).await?.json().await?;
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"plugins": plugins["plugins"], "bindings": bindings["current"]})
                )?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum SegmentCommand {
    /// The brand's segments with their members by jurisdiction.
    List {
        #[arg(long)]
        brand: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Define a segment (marketing, operator); bind its rule with `pitboss plugin bind --segment NAME`.
    Create {
        #[arg(long)]
        brand: Option<String>,
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Not a marketing segment: players whose RG state blocks marketing may still be in it.
        #[arg(long)]
        not_marketing: bool,
        /// Sweep the whole population every N minutes (5–60).
        #[arg(long)]
        sweep_minutes: Option<i64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// One segment: members by jurisdiction, rules bound, last sweep.
    Show {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Current members, a page at a time (`--csv` for a spreadsheet).
    Members {
        #[arg(long)]
        id: String,
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        csv: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Sweep the whole population now; prints the sweep (follow it with `sweep`).
    Refresh {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// A sweep's state and figures.
    Sweep {
        #[arg(long)]
        id: String,
        #[arg(long)]
        sweep: String,
        #[command(flatten)]
        remote: Remote,
    },
}

pub async fn run_segment(cmd: SegmentCommand) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::new();
    let get = |r: &Remote, path: String| {
        let req = http.get(format!("{}{path}", r.url.trim_end_matches('/'))).bearer_auth(&r.api_key);
        async move { req.send().await.context("reaching the host") }
    };
    let brand_q = |b: &Option<String>| b.as_ref().map(|b| format!("?brand_id={b}")).unwrap_or_default();
    match cmd {
        SegmentCommand::List { brand, remote } => {
            finish(get(&remote, format!("/v1/segments{}", brand_q(&brand))).await?).await
        }
        SegmentCommand::Create { brand, name, description, not_marketing, sweep_minutes, remote } => {
            let body = json!({"brand_id": brand, "name": name, "description": description,
                              "marketing": !not_marketing, "sweep_minutes": sweep_minutes});
            let url = format!("{}/admin/segments", remote.url.trim_end_matches('/'));
            finish(
                http.post(url)
                    .bearer_auth(&remote.api_key)
                    .json(&body)
                    .send()
                    .await
                    .context("reaching the host")?,
            )
            .await
        }
        SegmentCommand::Show { id, remote } => {
            finish(get(&remote, format!("/v1/segments/{id}")).await?).await
        }
        SegmentCommand::Members { id, cursor, limit, csv, remote } => {
            let cursor = cursor.map(|c| format!("&cursor={c}")).unwrap_or_default();
            let format = if csv { "csv" } else { "json" };
            let r = get(&remote, format!("/v1/segments/{id}/members?limit={limit}&format={format}{cursor}"))
                .await?;
            if csv && r.status().is_success() {
                print!("{}", r.text().await?);
                return Ok(ExitCode::SUCCESS);
            }
            finish(r).await
        }
        SegmentCommand::Refresh { id, remote } => {
            let url = format!("{}/admin/segments/{id}/refresh", remote.url.trim_end_matches('/'));
            finish(http.post(url).bearer_auth(&remote.api_key).send().await.context("reaching the host")?)
                .await
        }
        SegmentCommand::Sweep { id, sweep, remote } => {
            finish(get(&remote, format!("/admin/segments/{id}/sweeps/{sweep}")).await?).await
        }
    }
}
