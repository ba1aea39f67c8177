//! A host rigged for the send path: brand A licensed in GB, CA-ON and MT, a real SMTP sink, two push
//! providers and an SMS provider (signed HTTP), test frequency policies, the clock at noon tomorrow.

use std::time::Duration;

use pitboss::auth::Role;
use pitboss::config::Settings;
use serde_json::{Value, json};

use super::provider::{Behaviour, ProviderServer};
use super::server::{Backend, TestServer};
use super::smtp::SmtpSink;

pub const SECRET_1: &str = "push-one-secret";
pub const SECRET_2: &str = "push-two-secret";
pub const SECRET_SMS: &str = "sms-secret";

/// Noon UTC tomorrow: not quiet hours in London, and after every consent the test records today.
pub fn noon_tomorrow() -> jiff::Timestamp {
    let today = jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    let noon = today.tomorrow().unwrap().at(12, 0, 0, 0);
    noon.to_zoned_datetime(jiff::tz::TimeZone::UTC).unwrap().timestamp()
}

pub struct Rig {
    pub s: TestServer,
    pub smtp: SmtpSink,
    pub push: [ProviderServer; 2],
    pub sms: ProviderServer,
    pub platform: String,
    pub marketing: String,
}

/// A host with brand A licensed in GB and CA-ON, a relay, two push providers and one SMS provider.
pub async fn rig(backend: Backend, delivery: &str) -> Option<Rig> {
    let smtp = SmtpSink::start().await;
    let push = [
        ProviderServer::start(SECRET_1, Behaviour::Accept).await,
        ProviderServer::start(SECRET_2, Behaviour::Accept).await,
    ];
    let sms = ProviderServer::start(SECRET_SMS, Behaviour::Accept).await;
    let config = format!(
        r#"
        [brands.A]
        licences = ["GB", "CA-ON", "MT"]
        email_from = "Brand A <crm@a.example>"
        unsubscribe_url = "https://a.example/unsubscribe/{{delivery_id}}"
        unsubscribe_mailto = "unsubscribe@a.example"

        [smtp]
        relay = "{smtp}"

        [[providers.push]]
        name = "push-one"
        url = "{p1}"
        secret = "{SECRET_1}"

        [[providers.push]]
        name = "push-two"
        url = "{p2}"
        secret = "{SECRET_2}"

        [[providers.sms]]
        name = "sms-one"
        url = "{sms_url}"
        secret = "{SECRET_SMS}"

        [[frequency_policies]]
        id = "fp_test"
        dedup_window_minutes = 1440
        campaign_cooldown_minutes = 4320
        normal = {{ channel_per_day = 5, channel_per_week = 10, global_per_day = 5, global_per_week = 10 }}
        high = {{ channel_per_day = 5, channel_per_week = 10, global_per_day = 5, global_per_week = 10 }}

        [[frequency_policies]]
        id = "fp_cap3"
        dedup_window_minutes = 0
        campaign_cooldown_minutes = 0
        normal = {{ channel_per_day = 3, channel_per_week = 10, global_per_day = 10, global_per_week = 20 }}
        high = {{ channel_per_day = 5, channel_per_week = 10, global_per_day = 10, global_per_week = 20 }}

        [delivery]
        {delivery}
        "#,
        smtp = smtp.addr,
        p1 = push[0].url,
        p2 = push[1].url,
        sms_url = sms.url,
    );
    let settings = Settings::from_toml(&config).unwrap();
    let s = TestServer::start_with(backend, settings).await?;
    s.clock.set(noon_tomorrow());
    let platform = s.key(Role::Platform, &["A"]).await;
    let marketing = s.key(Role::Marketing, &["A"]).await;
    Some(Rig { s, smtp, push, sms, platform, marketing })
}

pub const FAST: &str = "backoff_initial_ms = 50\nbackoff_max_ms = 200\nmax_attempts = 3\npoll_ms = 50\nprovider_timeout_ms = 2000\nlease_ms = 5000";

impl Rig {
    /// A registered player with contacts and consents to e-mail, push and SMS marketing about casino.
    pub async fn player(&self, id: &str, jurisdiction: &str, time_zone: &str) {
        let reg = super::registered(
            id,
            json!({"jurisdiction": jurisdiction, "locale": "en-GB", "time_zone": time_zone,
            "currency": "GBP", "email": format!("{id}@example.com"), "phone": "+447700900123", "birth_date": "1990-05-17"}),
        );
        assert_eq!(self.s.post(&self.platform, "/v1/events", &reg).await.0, 202);
        let consents = json!({"channels": {"email": true, "push": true, "sms": true, "in_app": true},
                              "products": {"casino": true}, "source": "signup"});
        let (st, c) = self.s.put(&self.platform, &format!("/v1/players/{id}/consents"), &consents).await;
        assert_eq!(st, 200, "{c}");
        self.s.settled().await;
    }

    pub async fn template(&self, id: &str, topic: &str, body: &str) {
        let t = json!({"topic": topic, "subject": "Hello {{first_name}}", "body": body});
        let (st, r) = self.s.put(&self.marketing, &format!("/admin/templates/{id}/default"), &t).await;
        assert_eq!(st, 200, "{r}");
    }

    pub async fn send(&self, key: &str, body: &Value) -> (u16, Value) {
        let r = self
            .s
            .http
            .post(format!("{}/v1/messaging/send", self.s.base))
            .bearer_auth(&self.platform)
            .header("X-Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delivery(&self, id: &str) -> Value {
        let (st, d) = self.s.get(&self.platform, &format!("/v1/deliveries/{id}")).await;
        assert_eq!(st, 200, "{d}");
        d
    }

    /// An e-mail in doubt: the relay takes it but its answer has not come when the host dies (a crash);
    /// started again, the host dead-letters it as `in_doubt`. Returns the dead letter.
    pub async fn email_in_doubt(&mut self, key: &str, body: &Value) -> Value {
        self.smtp.hang_after_accepting(Some(Duration::from_secs(30)));
        let (_, q) = self.send(key, body).await;
        let id = q["delivery_id"].as_str().unwrap().to_string();
        self.smtp.wait_for(1, Duration::from_secs(10)).await;
        self.s.crash().await;
        self.smtp.hang_after_accepting(None);
        self.s.start_again().await;
        self.s.clock.advance(jiff::SignedDuration::from_secs(10));
        self.wait_status(&id, "DEAD_LETTER").await
    }

    /// Waits until the delivery reaches `status`.
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        super::eventually(&format!("{id} reaching {status}"), Duration::from_secs(10), || async {
            let d = self.delivery(id).await;
            (d["status"] == status).then_some(d)
        })
        .await
    }
}

/// An RFC 3339 time of the API, in milliseconds.
pub fn ms(v: &Value) -> i64 {
    v.as_str().unwrap().parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

pub fn reasons(v: &Value) -> Vec<String> {
    v["reasons"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap().to_string()).collect()
}

pub fn email(player: &str, template: &str) -> Value {
    json!({"channel": "email", "player_id": player, "template_id": template,
           "personalization": {"first_name": "Alex", "offer_id": "of_777"}, "frequency_policy_id": "fp_test"})
}

/// Runs `async fn name(backend: Backend)` tests on SQLite and on PostgreSQL: `on_both!(name, other…)`
/// (the invoking module imports `Backend`).
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await
            }
        })*
    };
}
