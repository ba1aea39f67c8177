//! The `pitboss plugin` commands a brand team runs locally, as a user runs them: the real binary.

use crate::support;

use std::process::{Command, Output};

use serde_json::{Value, json};

fn pitboss(args: &[&str]) -> (Output, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_pitboss")).args(args).output().unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, json)
}

fn wasm_path(name: &str) -> String {
    support::plugins_dir().join(format!("{}.wasm", name.replace('-', "_"))).display().to_string()
}

fn input_file(dir: &tempfile::TempDir, value: Value) -> String {
    let path = dir.path().join("input.json");
    std::fs::write(&path, value.to_string()).unwrap();
    path.display().to_string()
}

fn article_input() -> Value {
    json!({ "profile": serde_json::to_value(support::profile("p_123")).unwrap(), "now": "2026-11-23T12:00:00Z" })
}

#[test]
fn plugin_run_prints_the_decision_with_its_cost() {
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(&dir, article_input());
    let (out, doc) = pitboss(&[
        "plugin",
        "run",
        "--wasm",
        &wasm_path("dormant-depositor"),
        "--world",
        "segment",
        "--input",
        &input,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(doc["decision"]["member"], json!(true));
    assert_eq!(doc["plugin"]["world"], json!("segment"));
    assert_eq!(doc["plugin"]["wit_version"], json!("0.1.0"));
    for key in ["fuel", "peak_memory_bytes", "duration_ns"] {
        assert!(doc["usage"][key].as_u64().unwrap() > 0, "{key}: {doc}");
    }
}

#[test]
fn plugin_run_fails_with_a_json_error_and_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(&dir, article_input());
    let (out, doc) = pitboss(&[
        "plugin",
        "run",
        "--wasm",
        &wasm_path("hostile-infinite-loop"),
        "--world",
        "segment",
        "--input",
        &input,
        "--fuel",
        "1000000",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(doc["error"]["code"], json!("out_of_fuel"));
    assert_eq!(doc["usage"]["fuel"], json!(1_000_000));
    assert!(String::from_utf8_lossy(&out.stderr).contains("out of fuel"));

    let (out, doc) = pitboss(&[
        "plugin",
        "run",
        "--wasm",
        &wasm_path("wager-progress"),
        "--world",
        "segment",
        "--input",
        &input,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(doc["error"]["code"], json!("wrong_world"));
}

#[test]
fn plugin_run_refuses_bad_input_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = wasm_path("dormant-depositor");
    for (input, needle) in [
        (json!({"profile": {"player_id": 5}}), "parsing"),
        (
            json!({"profile": serde_json::to_value(support::profile("p")).unwrap(), "surprise": 1}),
            "unknown field `surprise`",
        ),
        (json!({}), "give either `profile` or `profiles`"),
    ] {
        let path = input_file(&dir, input);
        let (out, _) = pitboss(&["plugin", "run", "--wasm", &wasm, "--world", "segment", "--input", &path]);
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{stderr}");
    }
    let (out, _) = pitboss(&[
        "plugin",
        "run",
        "--wasm",
        "/nonexistent.wasm",
        "--world",
        "segment",
        "--input",
        "/dev/null",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn plugin_test_runs_a_decision_table() {
    let table = support::repo().join("plugins/churn-risk/decisions.json");
    let (out, doc) = pitboss(&[
        "plugin",
        "test",
        "--wasm",
        &wasm_path("churn-risk"),
        "--world",
        "segment",
        "--table",
        &table.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(doc["failed"], json!(0));
    // The same table against another plugin fails.
    let (out, doc) = pitboss(&[
        "plugin",
        "test",
        "--wasm",
        &wasm_path("dormant-depositor"),
        "--world",
        "segment",
        "--table",
        &table.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(doc["failed"].as_u64().unwrap() > 0);
}

#[test]
fn plugin_inspect_tells_world_version_and_imports() {
    let (out, doc) = pitboss(&["plugin", "inspect", &wasm_path("next-best-offer")]);
    assert!(out.status.success());
    assert_eq!(doc["world"], json!("offer-scorer"));
    assert_eq!(doc["package"], json!("pitboss:rules"));
    assert_eq!(doc["wit_version"], json!("0.1.0"));
    assert_eq!(doc["runnable"], json!(true));
    assert!(doc["exports"].as_array().unwrap().contains(&json!("pitboss:rules/offer-scoring@0.1.0")));
    assert!(doc["imports"].as_array().unwrap().iter().any(|i| i.as_str().unwrap().starts_with("wasi:")));

    let (out, doc) = pitboss(&[
        "plugin",
        "inspect",
        &support::plugins_dir().join("hostile-wrong-world.wasm").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(doc["world"], Value::Null);
    assert_eq!(doc["error"]["code"], json!("unknown_world"));
}

#[test]
fn serve_refuses_to_start_without_a_contacts_key_unless_dev() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_pitboss"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .env_remove("PITBOSS_CONTACTS_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no contacts key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pitboss"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url, "--contacts-key", "abc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex characters"));
}

#[test]
fn keys_create_prints_the_key_once_and_stores_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("k.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_pitboss"))
        .args([
            "keys",
            "create",
            "--role",
            "platform",
            "--brand",
            "A",
            "--brand",
            "B",
            "--database-url",
            &url,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("pb_") && key.len() == 67, "{key}");
    let db = std::fs::read(dir.path().join("k.db")).unwrap_or_default();
    let wal = std::fs::read(dir.path().join("k.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()), "the key itself is not stored");
    }
    let (out, _) = pitboss(&["keys", "create", "--role", "croupier", "--brand", "A", "--database-url", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));
}
