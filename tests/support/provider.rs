//! A real HTTP push/SMS provider for tests: it checks the host's HMAC signature over the raw body,
//! deduplicates by idempotency key the way a real provider does, and can be told to fail or to accept
//! and then hang, so tests can prove a delivery is sent once even across a crash of the host.
//!
//! It records every call it gets, whatever the answer, and never decides anything from the JSON
//! body: what the host sent is for the test to judge.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub enum Behaviour {
    /// 200 {"message_id": "..."}.
    Accept,
    /// 500 {"error": "…"} without accepting.
    Fail,
    /// Accepts (records the acceptance) at once but answers only after this delay — a provider that
    /// is slow to reply; used to crash the host in the middle of a call.
    AcceptThenHang(Duration),
}

/// One call as the provider saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub idempotency_key: Option<String>,
    pub timestamp: Option<String>,
    pub signature_valid: bool,
    /// The JSON body; a body that is not JSON is kept as a JSON string of its (lossy UTF-8) text.
    pub body: Value,
}

/// A running provider; dropping it stops accepting connections.
pub struct ProviderServer {
    /// "http://127.0.0.1:PORT/send".
    pub url: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    secret: Vec<u8>,
    // One lock for all of it, so that "is this key known?" and "remember this key" cannot be
    // interleaved by two concurrent calls carrying the same key.
    state: Mutex<Inner>,
    /// Calls being answered now, and the most there were at once.
    in_flight: AtomicUsize,
    most_at_once: AtomicUsize,
}

struct Inner {
    behaviour: Behaviour,
    received: Vec<Received>,
    accepted: Vec<Received>,
    /// Idempotency key → the message id its first acceptance got.
    message_ids: HashMap<String, String>,
    next_message_id: u64,
}

impl ProviderServer {
    /// Listens on 127.0.0.1:0; `url` is "http://127.0.0.1:PORT/send".
    pub async fn start(secret: &str, behaviour: Behaviour) -> ProviderServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the test provider");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            secret: secret.as_bytes().to_vec(),
            state: Mutex::new(Inner {
                behaviour,
                received: Vec::new(),
                accepted: Vec::new(),
                message_ids: HashMap::new(),
                next_message_id: 0,
            }),
            in_flight: AtomicUsize::new(0),
            most_at_once: AtomicUsize::new(0),
        });
        let app = Router::new().route("/send", post(send)).with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve the test provider");
        });
        ProviderServer { url: format!("http://{addr}/send"), addr, shared, server }
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        self.shared.state.lock().unwrap().behaviour = b;
    }

    /// The most calls this provider was answering at once.
    pub fn most_at_once(&self) -> usize {
        self.shared.most_at_once.load(Ordering::SeqCst)
    }

    /// Every call received, in order, whatever the answer.
    pub fn received(&self) -> Vec<Received> {
        self.shared.state.lock().unwrap().received.clone()
    }

    /// Calls that were accepted, one per distinct idempotency key (a repeated key is answered with
    /// the first acceptance's message_id and NOT recorded again).
    pub fn accepted(&self) -> Vec<Received> {
        self.shared.state.lock().unwrap().accepted.clone()
    }

    /// Waits (polling every 10 ms) until `accepted().len() >= n`, panicking after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until("accepted", n, timeout, || self.accepted()).await
    }

    /// Waits until `received().len() >= n`, panicking after `timeout`.
    pub async fn wait_received(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until("received", n, timeout, || self.received()).await
    }

    async fn wait_until(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        get: impl Fn() -> Vec<Received>,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = get();
            if got.len() >= n {
                return got;
            }
            if Instant::now() >= deadline {
                panic!(
                    "test provider: expected at least {n} {what} call(s) within {timeout:?}, got {}; \
                     every call received: {:#?}",
                    got.len(),
                    self.received()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ProviderServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Counts a call in flight while it lives.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn new(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.most_at_once.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn send(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let _counted = InFlight::new(&shared);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let idempotency_key = header("Idempotency-Key");
    let timestamp = header("X-Pitboss-Timestamp");
    let signature_valid = match (&timestamp, header("X-Pitboss-Signature")) {
        (Some(ts), Some(sig)) => signature_matches(&shared.secret, ts, &body, &sig),
        _ => false,
    };
    let parsed = serde_json::from_slice::<Value>(&body);
    let call = Received {
        idempotency_key: idempotency_key.clone(),
        timestamp,
        signature_valid,
        body: match &parsed {
            Ok(value) => value.clone(),
            Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
        },
    };

    // Decide and record under the lock; any waiting happens after it is released.
    let (message_id, hang) = {
        let mut state = shared.state.lock().unwrap();
        state.received.push(call.clone());
        if !signature_valid {
            return error(StatusCode::UNAUTHORIZED, "missing or invalid signature");
        }
        if parsed.is_err() {
            return error(StatusCode::BAD_REQUEST, "body is not JSON");
        }
        // A key seen before is answered as it was the first time, whatever the behaviour now: that
        // is what makes a retry after a lost answer safe, and what the host relies on.
        if let Some(id) = idempotency_key.as_ref().and_then(|k| state.message_ids.get(k)) {
            return (StatusCode::OK, axum::Json(json!({ "message_id": id }))).into_response();
        }
        let hang = match state.behaviour {
            Behaviour::Fail => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "provider failure (test)");
            }
            Behaviour::Accept => None,
            Behaviour::AcceptThenHang(delay) => Some(delay),
        };
        state.next_message_id += 1;
        let id = format!("msg-{:06}", state.next_message_id);
        if let Some(key) = idempotency_key {
            state.message_ids.insert(key, id.clone());
        }
        state.accepted.push(call);
        (id, hang)
    };
    if let Some(delay) = hang {
        // Accepted already: if the host dies while waiting here, the message counts as sent, which
        // is exactly the case a retry with the same key must not duplicate.
        tokio::time::sleep(delay).await;
    }
    (StatusCode::OK, axum::Json(json!({ "message_id": message_id }))).into_response()
}

/// HMAC-SHA256(secret, "<timestamp>.<raw body>") against "sha256=<lowercase hex>", compared in
/// constant time so the test server does not model a timing leak the host might copy.
fn signature_matches(secret: &[u8], timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&sig).is_ok()
}

/// The signature header value the host must send for this body: for tests that call the provider
/// themselves, or that check what the host computed.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(mac(secret.as_bytes(), timestamp, body).finalize().into_bytes()))
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}
