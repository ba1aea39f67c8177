//! The command line against a running host: the plugin lifecycle (`upload`, `approve`, `bind`,
//! `rollback`, `list`) from a terminal. URL and key come from flags or PITBOSS_URL / PITBOSS_API_KEY.
//! Speaks plain HTTP: run it on the host, or through a TLS-terminating proxy.

use std::path::{Path, PathBuf};
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
        #[arg(long, conflicts_with = "rule")]
        segment: Option<String>,
        /// Make the version a named rule that triggers and journeys ask (segment plugins).
        #[arg(long)]
        rule: Option<String>,
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
        /// Run a report now (offer scorers, bonus rules).
        #[arg(long)]
        run: bool,
        /// Bonus rules: days of events replayed (1–90, default 30).
        #[arg(long)]
        days: Option<u32>,
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
        RemoteCommand::Bind { id, brand, jurisdiction, segment, rule, config, remote } => {
            let config: serde_json::Map<String, Value> =
                config.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            let body = json!({"brand_id": brand, "jurisdiction": jurisdiction, "plugin_id": id,
                              "segment": segment, "rule": rule, "config": config});
            finish(send(http.post(url(&remote, "/admin/bindings")).json(&body), &remote).await?).await
        }
        RemoteCommand::Rollback { brand, jurisdiction, world, segment, remote } => {
            let body =
                json!({"brand_id": brand, "jurisdiction": jurisdiction, "world": world, "segment": segment});
            finish(send(http.post(url(&remote, "/admin/bindings/rollback")).json(&body), &remote).await?)
                .await
        }
        RemoteCommand::Impact { id, segment, run, days, brand, remote } => {
            let path = url(&remote, &format!("/admin/plugins/{id}/impact"));
            if segment.is_some() || run || days.is_some() {
                let body = json!({"segment": segment, "brand_id": brand, "days": days});
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

#[derive(Debug, Subcommand)]
pub enum EngageCommand {
    /// Load a bundle (`examples/engage/*.json`) as marketing or operator: its segments, templates,
    /// journeys and triggers, in that order. What exists gets a new version; marketing versions wait
    /// for `pitboss engage activate`.
    Load {
        file: PathBuf,
        #[arg(long)]
        brand: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Run a version of a trigger or journey (a sensitive one: a compliance officer who did not write it).
    Activate {
        #[arg(long, conflicts_with = "journey", required_unless_present = "journey")]
        trigger: Option<String>,
        #[arg(long)]
        journey: Option<String>,
        #[arg(long)]
        version: i64,
        #[command(flatten)]
        remote: Remote,
    },
    /// A trigger's or journey's figures.
    Stats {
        #[arg(long, conflicts_with = "journey", required_unless_present = "journey")]
        trigger: Option<String>,
        #[arg(long)]
        journey: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

pub async fn run_engage(cmd: EngageCommand) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::new();
    let path_of = |trigger: Option<String>, journey: Option<String>| match (trigger, journey) {
        (Some(t), _) => format!("/admin/triggers/{t}"),
        (None, Some(j)) => format!("/admin/journeys/{j}"),
        (None, None) => unreachable!("clap requires one"),
    };
    match cmd {
        EngageCommand::Load { file, brand, remote } => load(&http, &file, brand.as_deref(), &remote).await,
        EngageCommand::Activate { trigger, journey, version, remote } => {
            let url = format!("{}{}/activate", remote.url.trim_end_matches('/'), path_of(trigger, journey));
            let req = http.post(url).bearer_auth(&remote.api_key).json(&json!({"version": version}));
            finish(req.send().await.context("reaching the host")?).await
        }
        EngageCommand::Stats { trigger, journey, remote } => {
            let url = format!("{}{}/stats", remote.url.trim_end_matches('/'), path_of(trigger, journey));
            finish(http.get(url).bearer_auth(&remote.api_key).send().await.context("reaching the host")?)
                .await
        }
    }
}

/// Loads a bundle, one request per item; prints what became of each.
async fn load(
    http: &reqwest::Client,
    file: &Path,
    brand: Option<&str>,
    remote: &Remote,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let bundle: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let base = remote.url.trim_end_matches('/');
    let q = brand.map(|b| format!("?brand_id={b}")).unwrap_or_default();
    let call = |req: reqwest::RequestBuilder| async move {
        let r = req.bearer_auth(&remote.api_key).send().await.context("reaching the host")?;
        let status = r.status().as_u16();
        anyhow::Ok((status, r.json::<Value>().await.unwrap_or(Value::Null)))
    };
    let mut report = Vec::new();
    let mut failed = false;
    let items = |key: &str| bundle[key].as_array().cloned().unwrap_or_default();
    for s in items("segments") {
        let (status, body) = call(http.post(format!("{base}/admin/segments{q}")).json(&s)).await?;
        let outcome = match status {
            201 => "created",
            409 => "exists",
            _ => "refused",
        };
        failed |= outcome == "refused";
        report.push(json!({"segment": s["name"], "outcome": outcome, "answer": body}));
    }
    for t in items("templates") {
        let (id, locale) =
            (t["template_id"].as_str().unwrap_or_default(), t["locale"].as_str().unwrap_or("default"));
        let body = json!({"topic": t["topic"], "subject": t["subject"], "body": t["body"]});
        let (status, answer) =
            call(http.put(format!("{base}/admin/templates/{id}/{locale}{q}")).json(&body)).await?;
        failed |= status != 200;
        report.push(json!({"template": id, "locale": locale, "status": status, "answer": answer}));
    }
    for (key, path) in [("journeys", "/admin/journeys"), ("triggers", "/admin/triggers")] {
        for def in items(key) {
            let (mut status, mut answer) = call(http.post(format!("{base}{path}{q}")).json(&def)).await?;
            if status == 409 {
                // It exists: a new version of it.
                let (_, list) = call(http.get(format!("{base}{path}{q}"))).await?;
                let id = list[key]
                    .as_array()
                    .and_then(|l| l.iter().find(|h| h["name"] == def["name"]))
                    .and_then(|h| h["id"].as_str())
                    .map(String::from);
                if let Some(id) = id {
                    (status, answer) = call(http.put(format!("{base}{path}/{id}")).json(&def)).await?;
                }
            }
            failed |= !(200..300).contains(&status);
            report.push(json!({key.trim_end_matches('s'): def["name"], "status": status,
                               "id": answer["id"], "latest_version": answer["latest_version"],
                               "active_version": answer["active_version"],
                               "error": answer.get("error")}));
        }
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
