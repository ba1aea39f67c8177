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
        RemoteCommand::Bind { id, brand, jurisdiction, config, remote } => {
            let config: serde_json::Map<String, Value> =
                config.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            let body =
                json!({"brand_id": brand, "jurisdiction": jurisdiction, "plugin_id": id, "config": config});
            finish(send(http.post(url(&remote, "/admin/bindings")).json(&body), &remote).await?).await
        }
        RemoteCommand::Rollback { brand, jurisdiction, world, remote } => {
            let body = json!({"brand_id": brand, "jurisdiction": jurisdiction, "world": world});
            finish(send(http.post(url(&remote, "/admin/bindings/rollback")).json(&body), &remote).await?)
                .await
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
