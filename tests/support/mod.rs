//! Test helpers: the plugins are built from source (once per test process, and cargo itself skips the
//! work when nothing changed), and runtimes are made the way the host makes them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use pitboss::plugins::{Plugin, Runtime, RuntimeConfig};

pub mod load;
pub mod provider;
pub mod registry;
#[macro_use]
pub mod rig;
#[macro_use]
pub mod server;
pub mod smtp;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Builds every plugin of `plugins/` for wasm32-wasip2 (release) and returns their directory.
pub fn plugins_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = repo();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(root.join("plugins")).args(["build", "--release", "--quiet"]);
        // The outer cargo's settings describe the host build, not this one.
        for (k, _) in std::env::vars() {
            if k.starts_with("CARGO_") && k != "CARGO_HOME" || k == "RUSTFLAGS" {
                cmd.env_remove(k);
            }
        }
        let status = cmd.status().expect("running cargo for plugins/");
        assert!(status.success(), "building plugins/ failed (is the wasm32-wasip2 target installed?)");
        root.join("target/wasm32-wasip2/release")
    })
}

/// The bytes of a built plugin, by crate name (`dormant-depositor`, `hostile-trap`…).
pub fn wasm(name: &str) -> Vec<u8> {
    let file = plugins_dir().join(format!(
        "{}.wasm",
        if name == "hostile-wrong-world" { name.to_string() } else { name.replace('-', "_") }
    ));
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Builds the Python and JavaScript plugins (plugins/build-guests: installs the pinned toolchains on
/// first use, rebuilds only what changed) and returns their directory.
pub fn guests_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = repo();
        let status =
            Command::new(root.join("plugins/build-guests")).status().expect("running plugins/build-guests");
        assert!(
            status.success(),
            "building the Python and JavaScript plugins failed (python3 and npm are needed)"
        );
        root.join("target/guests")
    })
}

/// A Python or JavaScript plugin's bytes: `guest("python", "dormant-depositor")`.
pub fn guest(language: &str, name: &str) -> Vec<u8> {
    let file = guests_dir().join(format!("{language}-{name}.wasm"));
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Compiled code shared by every test process (disk cache; each entry is checked before use).
pub fn code_cache() -> PathBuf {
    repo().join("target/test-code-cache")
}

/// A runtime with the shared code cache, for big (Python, JavaScript) components.
pub fn cached_runtime() -> Runtime {
    Runtime::new(RuntimeConfig { cache_dir: Some(code_cache()), ..RuntimeConfig::default() })
        .expect("runtime")
}

pub fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).expect("runtime")
}

pub fn load(rt: &Runtime, name: &str) -> Arc<Plugin> {
    rt.load(&wasm(name)).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// A profile in the shape the reference article gives (§3.2): German, e-mail opt-in, dormant.
pub fn profile(player_id: &str) -> pitboss::model::Profile {
    serde_json::from_value(serde_json::json!({
        "player_id": player_id, "brand_id": "A", "jurisdiction": "DE", "locale": "de-DE",
        "time_zone": "Europe/Berlin", "currency": "EUR", "age_band": "26-34", "kyc": "verified",
        "consents": {"channels": ["email", "push"], "products": ["casino"], "profiling": true},
        "features": {"tenure_days": 186, "dep_count_30d": 0, "days_since_last_seen": 9,
                     "churn_score": 0.62, "fav_providers": ["studio_x", "live_y"]}
    }))
    .unwrap()
}

/// Waits until `check` answers `Some`, asking every 10 ms for at most `timeout`, and returns its answer;
/// panics saying what never happened. The one way tests wait for something the host does in the
/// background.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: std::time::Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let until = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(std::time::Instant::now() < until, "{what} did not happen within {timeout:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A `player.registered` event of brand A, occurred on 2026-11-01 (German player, euros, unless
/// `payload` overrides a field or adds contacts).
pub fn registered(player: &str, payload: serde_json::Value) -> serde_json::Value {
    let mut p = serde_json::json!({"jurisdiction": "DE", "locale": "de-DE", "time_zone": "Europe/Berlin",
                                   "currency": "EUR"});
    for (k, v) in payload.as_object().into_iter().flatten() {
        p[k] = v.clone();
    }
    serde_json::json!({"event_id": format!("reg_{player}"), "event_type": "player.registered", "player_id": player,
                       "brand_id": "A", "occurred_at": "2026-11-01T10:00:00Z", "payload": p})
}

pub fn now() -> jiff::Timestamp {
    "2026-11-23T12:00:00Z".parse().unwrap()
}
