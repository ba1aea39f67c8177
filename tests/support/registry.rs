//! Registry helpers: upload, compliance officers with keys from `pitboss keygen`, signatures from
//! `pitboss plugin sign`, approvals — the way the people in the workflow do it.

use std::process::Command;

use pitboss::auth::Role;
use serde_json::{Value, json};

use super::server::TestServer;

pub fn manifest(name: &str, version: &str, world: &str, jurisdictions: &[&str]) -> Value {
    json!({"name": name, "version": version, "world": world, "brands": ["A"], "jurisdictions": jurisdictions,
           "description": "test", "source_repository": "https://git.example/rules", "source_commit": "abc123"})
}

pub async fn upload(s: &TestServer, key: &str, manifest: &Value, bytes: Vec<u8>) -> (u16, Value) {
    let form = reqwest::multipart::Form::new()
        .text("manifest", manifest.to_string())
        .part("component", reqwest::multipart::Part::bytes(bytes).file_name("plugin.wasm"));
    let r = s
        .http
        .post(format!("{}/admin/plugins", s.base))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A compliance officer: an API key, a signing key pair made by `pitboss keygen`, registered by an admin.
pub struct Officer {
    pub api_key: String,
    pub key_file: std::path::PathBuf,
    pub signing_key_id: String,
}

pub async fn officer(s: &TestServer, admin: &str, holder: &str) -> Officer {
    officer_of(s, admin, holder, "A").await
}

/// A compliance officer of `brand`.
pub async fn officer_of(s: &TestServer, admin: &str, holder: &str, brand: &str) -> Officer {
    let key_file = s.data_dir.path().join(format!("{}.key", holder.replace(' ', "_")));
    let out = Command::new(env!("CARGO_BIN_EXE_pitboss"))
        .args(["keygen", "--out"])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (st, reg) = s
        .post(
            admin,
            "/admin/signing-keys",
            &json!({"holder": holder, "public_key": public, "brands": [brand]}),
        )
        .await;
    assert_eq!(st, 201, "{reg}");
    Officer {
        api_key: s.key_of(Role::Compliance, &[brand], holder).await,
        key_file,
        signing_key_id: reg["id"].as_str().unwrap().to_string(),
    }
}

/// `pitboss plugin sign`, as the officer runs it on the manifest and bytes they reviewed.
pub fn sign(s: &TestServer, o: &Officer, manifest: &Value, bytes: &[u8]) -> String {
    sign_with(s, o, manifest, bytes, None)
}

/// `pitboss plugin sign --impact`: the officer signs the impact report they read too.
pub fn sign_with(
    s: &TestServer,
    o: &Officer,
    manifest: &Value,
    bytes: &[u8],
    impact: Option<&Value>,
) -> String {
    let m = s.data_dir.path().join("manifest.json");
    let w = s.data_dir.path().join("plugin.wasm");
    std::fs::write(&m, manifest.to_string()).unwrap();
    std::fs::write(&w, bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pitboss"))
        .args(["plugin", "sign", "--key"])
        .arg(&o.key_file)
        .arg("--manifest")
        .arg(&m)
        .arg("--wasm")
        .arg(&w)
        .args(
            impact
                .map(|report| {
                    let file = s.data_dir.path().join("impact.json");
                    std::fs::write(&file, report.to_string()).unwrap();
                    vec!["--impact".into(), file.into_os_string()]
                })
                .unwrap_or_default(),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub async fn approve(s: &TestServer, o: &Officer, id: &str, signature: &str) -> (u16, Value) {
    s.post(
        &o.api_key,
        &format!("/admin/plugins/{id}/approvals"),
        &json!({"signing_key_id": o.signing_key_id, "signature": signature}),
    )
    .await
}

/// Uploads a reference plugin and has it approved by `approvers`; returns its version id.
pub async fn approved(
    s: &TestServer,
    operator: &str,
    approvers: &[&Officer],
    plugin: &str,
    m: &Value,
) -> String {
    let bytes = super::wasm(plugin);
    let (st, v) = upload(s, operator, m, bytes.clone()).await;
    assert!(st == 201 || st == 200, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    for o in approvers {
        let (st, v) = approve(s, o, &id, &sign(s, o, m, &bytes)).await;
        assert_eq!(st, 201, "{v}");
    }
    id
}
