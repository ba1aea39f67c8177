//! Requests an outsider sends to break the API: every answer is the JSON error shape with a stable
//! code, and a caller is authorised before its body is read. Runs on SQLite (the HTTP layer is the
//! same on both databases).

use crate::support;

use pitboss::auth::Role;
use reqwest::Method;
use serde_json::{Value, json};
use support::server::{Backend, TestServer};

/// Status, error code and the whole answer of a raw request.
async fn call(
    s: &TestServer,
    method: Method,
    path: &str,
    key: &str,
    body: Vec<u8>,
    headers: &[(&str, &[u8])],
) -> (u16, String, Value) {
    let mut r = s.http.request(method, format!("{}{path}", s.base)).bearer_auth(key).body(body);
    for (name, value) in headers {
        r = r.header(*name, reqwest::header::HeaderValue::from_bytes(value).unwrap());
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status} {path}: not JSON: {text:?}"));
    (status, v["error"]["code"].as_str().unwrap_or_default().to_string(), v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_and_roles_come_before_bodies() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else { return };
    let platform = s.key(Role::Platform, &["A"]).await;
    let operator = s.key(Role::Operator, &["A"]).await;
    let admin = s.key(Role::Admin, &["A"]).await;
    let other = s.key(Role::Marketing, &["B"]).await;

    // The wrong role is told so before its body is read, whatever the body.
    let (st, code, _) =
        call(&s, Method::POST, "/admin/plugins", &platform, b"not multipart".to_vec(), &[]).await;
    assert_eq!((st, code.as_str()), (403, "forbidden"));
    // Announced but never sent: the answer comes from the head alone, so the body was not waited for.
    for path in ["/admin/plugins", "/admin/keys"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {platform}\r\nContent-Type: application/json\r\nContent-Length: 3145728\r\nConnection: close\r\n\r\n"
        );
        let (status, body) = s.raw(&head).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("\"forbidden\""), "{path}: {body}");
    }
    // An answer given before the body was read closes the connection, and says so: a pooled client's
    // next request then opens a new one instead of failing on the dropped one.
    for _ in 0..10 {
        let r = s
            .http
            .post(format!("{}/admin/keys", s.base))
            .bearer_auth(&platform)
            .body(vec![b'x'; 64 * 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        assert_eq!(r.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
        assert_eq!(s.get(&admin, "/admin/audit?limit=1").await.0, 200);
    }
    // A body read to its end keeps the connection.
    let r = s
        .http
        .post(format!("{}/admin/keys", s.base))
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(r.headers().get("connection").is_none());
    let huge = vec![b'x'; 3 * 1024 * 1024];
    // The right role with a broken body: the extractor's complaint, in the JSON shape.
    let (st, code, _) = call(&s, Method::POST, "/admin/plugins", &operator, b"x".to_vec(), &[]).await;
    assert_eq!((st, code.as_str()), (400, "bad_request"));
    // The server answers once the limit is passed, while the client may still be writing: a connection
    // reset then may hide the answer; some try must read it.
    let mut answered = None;
    for _ in 0..5 {
        let r = s
            .http
            .post(format!("{}/v1/events", s.base))
            .bearer_auth(&platform)
            .body(huge.clone())
            .send()
            .await;
        if let Ok(r) = r {
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            answered = Some((status, v["error"]["code"].as_str().unwrap_or_default().to_string()));
            break;
        }
    }
    assert_eq!(answered, Some((413, "payload_too_large".to_string())));
    // Wrong method, unknown route, bad query, a path that is not UTF-8.
    let (st, code, _) = call(&s, Method::DELETE, "/v1/events", &platform, vec![], &[]).await;
    assert_eq!((st, code.as_str()), (405, "method_not_allowed"));
    let (st, code, _) = call(&s, Method::GET, "/v1/nothing", &platform, vec![], &[]).await;
    assert_eq!((st, code.as_str()), (404, "not_found"));
    let (st, code, v) = call(&s, Method::GET, "/admin/audit?limit=abc", &admin, vec![], &[]).await;
    assert_eq!((st, code.as_str()), (400, "invalid_query"), "{v}");
    let (st, code, _) = call(&s, Method::GET, "/v1/players/%FF%FE", &platform, vec![], &[]).await;
    assert_eq!((st, code.as_str()), (400, "invalid_path"));
    // A request target too long: refused in the JSON shape; past 64 KiB the HTTP server itself says 414.
    let (status, body) = s
        .raw(&format!(
            "GET /v1/players/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "p".repeat(10_000)
        ))
        .await;
    assert_eq!(status, 414);
    assert!(body.contains("\"uri_too_long\""), "{}", &body[..body.len().min(200)]);
    let (status, _) =
        s.raw(&format!("GET /v1/players/{} HTTP/1.1\r\nHost: x\r\n\r\n", "p".repeat(70_000))).await;
    assert_eq!(status, 414);
    // A key that is there but not ASCII is invalid, not missing.
    let send =
        serde_json::to_vec(&json!({"channel": "email", "player_id": "p", "template_id": "t"})).unwrap();
    let (st, code, _) = call(
        &s,
        Method::POST,
        "/v1/messaging/send",
        &platform,
        send,
        &[("x-idempotency-key", "clé".as_bytes())],
    )
    .await;
    assert_eq!((st, code.as_str()), (400, "idempotency_key_invalid"));
    // Another brand's templates: not found, without speaking of players.
    let (st, code, v) = call(&s, Method::GET, "/admin/templates?brand_id=A", &other, vec![], &[]).await;
    assert_eq!((st, code.as_str()), (404, "not_found"));
    assert!(!v["error"]["message"].as_str().unwrap().contains("player"), "{v}");

    // Jurisdictions no pack knows: refused at registration and in a binding.
    let reg = json!({"event_id": "r1", "event_type": "player.registered", "player_id": "p_zz", "brand_id": "A",
        "occurred_at": "2026-11-20T10:00:00Z",
        "payload": {"jurisdiction": "ZZ", "locale": "en", "time_zone": "UTC", "currency": "EUR"}});
    let (st, v) = s.post(&platform, "/v1/events", &reg).await;
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("payload.jurisdiction")), "{v}");
    let bind = json!({"brand_id": "A", "jurisdiction": "SE", "plugin_id": "plg_x"});
    let (st, v) = s.post(&operator, "/admin/bindings", &bind).await;
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("jurisdiction")), "{v}");
    s.stop().await;
}

/// Each request has a span naming the caller's trace id: the events' `trace_id` here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_span_carries_the_trace_id() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .with_env_filter("pitboss=debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let Some(s) = TestServer::start(Backend::Sqlite).await else { return };
    let key = s.key(Role::Platform, &["A"]).await;
    let e = json!({"event_id": "e_span", "event_type": "session.started", "player_id": "p_span", "brand_id": "A",
        "occurred_at": "2026-11-20T10:00:00Z", "trace_id": "tr_span_42", "payload": {"session_id": "s1"}});
    assert_eq!(s.post(&key, "/v1/events", &e).await.0, 202);
    s.stop().await;
    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|l| l.contains("answered") && l.contains("/v1/events"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains("trace_id=tr_span_42") && line.contains("status=202"), "{line}");
}
