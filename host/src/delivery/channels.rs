//! The channels a delivery leaves by: e-mail over SMTP (to the configured relay, with List-Unsubscribe
//! headers), push and SMS through HTTP providers (a JSON POST signed with HMAC-SHA256, each provider of
//! a channel tried in turn on an error or a timeout). Every call carries the delivery id as its
//! idempotency key (`Idempotency-Key` for HTTP; the Message-ID and `X-Pitboss-Delivery-Id` for e-mail).
//! Contacts pass through here in clear and are never logged.

use std::time::Duration;

use hmac::{Hmac, Mac};
use lettre::Message;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use serde_json::json;
use sha2::Sha256;

use crate::config::{BrandSettings, HttpProvider, Settings};
use crate::store::deliveries::Delivery;
use crate::telemetry::Metrics;

/// A provider took the message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Accepted {
    pub provider: String,
    /// The provider's own id for it, if it gave one.
    pub provider_message_id: Option<String>,
    /// The providers tried before, and why they were given up.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_over: Vec<String>,
}

impl Accepted {
    pub fn by(provider: &str) -> Outcome {
        Outcome::Accepted(Accepted {
            provider: provider.into(),
            provider_message_id: None,
            failed_over: Vec::new(),
        })
    }
}

/// How a provider call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted(Accepted),
    /// Worth another attempt later (timeout, 4xx SMTP reply, 5xx, connection refused).
    Retry(String),
    /// Will not work however often it is tried (a 5xx SMTP reply, a bad address, no relay).
    Permanent(String),
}

/// `sha256=` and the hex HMAC-SHA256 of "{timestamp}.{body}".
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature made by `sign`, in constant time.
pub fn verify(secret: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(given) = signature.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

pub struct Channels {
    http: reqwest::Client,
    smtp: Option<Relay>,
}

/// The SMTP relay, a connection per message, with Nagle's algorithm off: lettre writes a message's
/// content and its closing "." in two writes, and with Nagle the second waits for the relay's delayed
/// acknowledgement of the first (40 ms on Linux) — every e-mail took 43 ms on a local relay.
struct Relay {
    host: String,
    port: u16,
    credentials: Option<Credentials>,
    hello: ClientId,
    /// Of the conversation up to the message: connecting, greeting, authenticating.
    timeout: Duration,
}

impl Relay {
    async fn send(&self, message: &Message) -> Outcome {
        let failed = |e: lettre::transport::smtp::Error| {
            if e.is_permanent() {
                Outcome::Permanent(format!("SMTP: {e}"))
            } else {
                Outcome::Retry(format!("SMTP: {e}"))
            }
        };
        // Nothing of the message has left yet: a relay that does not answer in time is tried again.
        let opening = async {
            let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| Outcome::Retry(format!("SMTP: connecting to the relay: {e}")))?;
            stream.set_nodelay(true).map_err(|e| Outcome::Retry(format!("SMTP: {e}")))?;
            let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                .await
                .map_err(failed)?;
            if let Some(c) = &self.credentials {
                conn.auth(DEFAULT_MECHANISMS, c).await.map_err(failed)?;
            }
            Ok(conn)
        };
        let mut conn = match tokio::time::timeout(self.timeout, opening).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(outcome)) => return outcome,
            Err(_) => return Outcome::Retry("SMTP: timed out".into()),
        };
        // Once the message is on its way it is not timed out here: a relay that took it and is slow
        // to say so must not be sent it twice. A worker that dies meanwhile leaves the e-mail in doubt.
        let sent = conn.send(message.envelope(), &message.formatted()).await;
        // The relay's goodbye changes nothing whatever it is.
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.abort()).await;
        match sent {
            Ok(_) => Accepted::by("smtp"),
            Err(e) => failed(e),
        }
    }
}

impl Channels {
    pub fn new(settings: &Settings) -> anyhow::Result<Channels> {
        let timeout = Duration::from_millis(settings.delivery.provider_timeout_ms);
        let smtp = match &settings.smtp {
            None => None,
            Some(s) => {
                let (host, port) = s
                    .relay
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                    .ok_or_else(|| anyhow::anyhow!("smtp.relay must be host:port, not `{}`", s.relay))?;
                let credentials = match (&s.username, &s.password) {
                    (Some(u), Some(p)) => Some(Credentials::new(u.clone(), p.clone())),
                    _ => None,
                };
                Some(Relay { host, port, credentials, hello: ClientId::default(), timeout })
            }
        };
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Channels { http, smtp })
    }

    pub async fn email(
        &self,
        brand: Option<&BrandSettings>,
        d: &Delivery,
        to: &str,
        metrics: &Metrics,
    ) -> Outcome {
        let Some(smtp) = &self.smtp else {
            return Outcome::Permanent("no SMTP relay is configured".into());
        };
        let Some(from) = brand.and_then(|b| b.email_from.as_deref()) else {
            return Outcome::Permanent(format!("brand {} has no email_from", d.brand_id));
        };
        let message = (|| -> Result<Message, String> {
            let mut b = Message::builder()
                .from(from.parse().map_err(|e| format!("email_from: {e}"))?)
                .to(to.parse().map_err(|_| "the player's e-mail address does not parse".to_string())?)
                .subject(d.subject.clone().unwrap_or_default())
                .message_id(Some(format!("<{}@pitboss>", d.delivery_id)))
                .header(ContentType::TEXT_PLAIN)
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("X-Pitboss-Delivery-Id"),
                    d.delivery_id.clone(),
                ));
            if let Some(list) = brand.and_then(|b| list_unsubscribe(b, &d.delivery_id)) {
                b = b.raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("List-Unsubscribe"), list));
                if brand.is_some_and(|b| b.unsubscribe_url.is_some()) {
                    // RFC 8058: mail clients may unsubscribe with one POST, without opening a page.
                    b = b.raw_header(HeaderValue::new(
                        HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                        "List-Unsubscribe=One-Click".into(),
                    ));
                }
            }
            b.body(d.body.clone().unwrap_or_default()).map_err(|e| e.to_string())
        })();
        let message = match message {
            Ok(m) => m,
            Err(e) => return Outcome::Permanent(e),
        };
        let outcome = smtp.send(&message).await;
        let result = if matches!(outcome, Outcome::Accepted(_)) { "accepted" } else { "failed" };
        metrics.attempt("email", "smtp", result);
        outcome
    }

    /// Tries each provider in turn; the first to accept wins.
    pub async fn http(
        &self,
        providers: &[HttpProvider],
        d: &Delivery,
        to: &str,
        now_s: i64,
        metrics: &Metrics,
    ) -> Outcome {
        if providers.is_empty() {
            return Outcome::Retry(format!("no {} provider is configured", d.channel));
        }
        let body = json!({
            "delivery_id": d.delivery_id, "brand_id": d.brand_id, "channel": d.channel, "to": to,
            "subject": d.subject, "body": d.body,
        })
        .to_string();
        let timestamp = now_s.to_string();
        let mut errors = Vec::new();
        for p in providers {
            let answer = self
                .http
                .post(&p.url)
                .header("content-type", "application/json")
                .header("Idempotency-Key", &d.delivery_id)
                .header("X-Pitboss-Timestamp", &timestamp)
                .header("X-Pitboss-Signature", sign(&p.secret, &timestamp, body.as_bytes()))
                .body(body.clone())
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => {
                    metrics.attempt(&d.channel, &p.name, "accepted");
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    let message_id = v["message_id"].as_str().map(String::from);
                    return Outcome::Accepted(Accepted {
                        provider: p.name.clone(),
                        provider_message_id: message_id,
                        failed_over: errors,
                    });
                }
                Ok(r) => {
                    metrics.attempt(&d.channel, &p.name, "failed");
                    errors.push(format!("{}: HTTP {}", p.name, r.status().as_u16()));
                }
                Err(e) => {
                    metrics.attempt(&d.channel, &p.name, "failed");
                    let what = if e.is_timeout() { "timed out".to_string() } else { e.to_string() };
                    errors.push(format!("{}: {what}", p.name));
                }
            }
        }
        Outcome::Retry(errors.join("; "))
    }
}

/// The List-Unsubscribe value: the brand's link for this delivery and/or its mailto address.
fn list_unsubscribe(brand: &BrandSettings, delivery_id: &str) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(url) = &brand.unsubscribe_url {
        parts.push(format!("<{}>", url.replace("{delivery_id}", delivery_id)));
    }
    if let Some(mailto) = &brand.unsubscribe_mailto {
        parts.push(format!("<mailto:{mailto}?subject=unsubscribe%20{delivery_id}>"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_body_time_and_secret() {
        let s = sign("k", "1700000000", b"{\"a\":1}");
        assert!(verify("k", "1700000000", b"{\"a\":1}", &s));
        assert!(!verify("k", "1700000000", b"{\"a\":2}", &s));
        assert!(!verify("k", "1700000001", b"{\"a\":1}", &s));
        assert!(!verify("other", "1700000000", b"{\"a\":1}", &s));
        assert!(!verify("k", "1700000000", b"{\"a\":1}", "sha256=zz"));
    }
}
