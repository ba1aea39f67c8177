//! The code map holds: no module of `host/src` imports the HTTP layer but `server`, and no two top-level
//! modules depend on each other (directly or through others). Read from the sources, by `crate::x` paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module → the top-level modules it names with `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        let deps = graph.entry(top.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let name: String =
                text[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && name != top {
                deps.insert(name);
            }
        }
    }
    graph
}

#[test]
fn only_the_server_knows_the_http_layer() {
    let importers: Vec<String> =
        graph().into_iter().filter(|(_, deps)| deps.contains("api")).map(|(m, _)| m).collect();
    assert_eq!(importers, ["server"]);
}

#[test]
fn no_two_modules_depend_on_each_other() {
    let g = graph();
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(m) = stack.pop() {
            for d in g.get(&m).into_iter().flatten() {
                if d == to {
                    return true;
                }
                if seen.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        false
    };
    let cycles: Vec<(String, String)> = g
        .iter()
        .flat_map(|(a, deps)| deps.iter().filter(|b| reaches(b, a)).map(move |b| (a.clone(), b.clone())))
        .collect();
    assert!(cycles.is_empty(), "modules depending on each other: {cycles:?}");
}

/// Every route the API modules register is in the OpenAPI document, with its method, and nothing
/// else is: the document is generated from the handlers and cannot drift from the routes.
#[test]
fn the_openapi_document_covers_every_route() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut routes: BTreeSet<(String, String)> = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let flat: String =
            text.split_whitespace().collect::<Vec<_>>().join(" ").replace(".route( ", ".route(");
        for (i, _) in flat.match_indices(".route(\"") {
            let rest = &flat[i + 8..];
            let path = &rest[..rest.find('"').unwrap()];
            // The method router: up to the closing parenthesis of `.route(`.
            let mut depth = 1;
            let body: String = rest[path.len() + 1..]
                .chars()
                .take_while(|c| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth > 0
                })
                .collect();
            for method in ["get", "post", "put", "delete", "patch"] {
                if body.contains(&format!("{method}(")) {
                    routes.insert((path.to_string(), method.to_string()));
                }
            }
        }
    }
    assert!(routes.len() > 30, "{routes:?}");
    let doc = serde_json::to_value(pitboss::api::openapi::openapi()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let mut documented: BTreeSet<(String, String)> = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((path.clone(), method.clone()));
        }
    }
    let missing: Vec<_> = routes.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routes).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing from the document: {missing:?}; documented but not routed: {extra:?}"
    );
    // Every operation says what its errors look like.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["/healthz", "/openapi.json"].contains(&path.as_str()) {
                assert!(
                    op["responses"]["422"].is_object() || path == "/metrics",
                    "{method} {path} lists no errors"
                );
            }
        }
    }
}
