//! Offers and the bonus ledger over real HTTP, with real plugins, a real signed platform webhook and
//! both databases: every check of `POST /v1/offers/generate` as a row of a decision table, budgets exact
//! under 100 concurrent requests, templates that break a pack's bonus law refused at save, four eyes
//! above the high-value threshold, accept once = one bonus and one grant (also across a kill -9),
//! wagering by category against a hand-computed table, max bet, withdrawal, expiry, and a replay of the
//! log that changes no ledger.

use crate::support;

use std::time::Duration;

use pitboss::auth::Role;
use pitboss::config::Settings;
use serde_json::{Value, json};
use support::provider::{Behaviour, ProviderServer};
use support::registry::{Officer, approved, manifest, officer};
use support::server::{Backend, TestServer};

const PLATFORM_SECRET: &str = "platform-secret";

struct Bed {
    s: TestServer,
    wallet: ProviderServer,
    platform: String,
    marketing: String,
    operator: String,
    compliance: String,
    carla: Officer,
    dave: Officer,
}

/// A host whose brand A is licensed in GB, NL and MT, with small economy caps (3000 a player a day,
/// 20000 for the brand), a high-value threshold of 5000 and the platform's wallet at a signed sink.
async fn bed(backend: Backend) -> Option<Bed> {
    let wallet = ProviderServer::start(PLATFORM_SECRET, Behaviour::Accept).await;
    let config = format!(
        r#"
        [brands.A]
        licences = ["GB", "NL", "MT"]
        high_value_minor = 5000
        offer_player_daily_minor = 3000
        offer_budget_daily_minor = 20000

        [platform]
        url = "{}"
        secret = "{PLATFORM_SECRET}"

        [delivery]
        {}
        "#,
        wallet.url,
        support::rig::FAST
    );
    let s = TestServer::start_with(backend, Settings::from_toml(&config).unwrap()).await?;
    s.clock.set(support::rig::noon_tomorrow());
    let admin = s.key_of(Role::Admin, &["A"], "Ada Admin").await;
    Some(Bed {
        platform: s.key(Role::Platform, &["A"]).await,
        marketing: s.key_of(Role::Marketing, &["A"], "Mia Marketing").await,
        operator: s.key_of(Role::Operator, &["A"], "Olga Operator").await,
        compliance: s.key_of(Role::Compliance, &["A"], "Carla Compliance").await,
        carla: officer(&s, &admin, "Carla Compliance").await,
        dave: officer(&s, &admin, "Dave Compliance").await,
        s,
        wallet,
    })
}

impl Bed {
    /// The player's inbox, once it holds a message (waiting up to 15 s for `what`).
    async fn messages(&self, player: &str, what: &str) -> Vec<Value> {
        let path = format!("/v1/players/{player}/inbox");
        support::eventually(what, Duration::from_secs(15), || async {
            let (_, inbox) = self.s.get(&self.platform, &path).await;
            inbox["messages"].as_array().filter(|m| !m.is_empty()).cloned()
        })
        .await
    }

    /// A registered player with e-mail marketing consent about casino (`products`), and profiling.
    async fn player(&self, id: &str, jurisdiction: &str, birth_date: &str, products: Value) {
        let reg = support::registered(
            id,
            json!({"jurisdiction": jurisdiction, "locale": "en-GB", "time_zone": "Europe/London",
                   "currency": "GBP", "email": format!("{id}@example.com"), "birth_date": birth_date}),
        );
        assert_eq!(self.s.post(&self.platform, "/v1/events", &reg).await.0, 202);
        let consents = json!({"channels": {"email": true, "push": true, "in_app": true}, "products": products,
                              "profiling": true, "source": "signup"});
        let (st, c) = self.s.put(&self.platform, &format!("/v1/players/{id}/consents"), &consents).await;
        assert_eq!(st, 200, "{c}");
    }

    /// Uploads, approves (two officers) and binds a plugin for a jurisdiction.
    async fn bind(
        &self,
        plugin: &str,
        version: &str,
        world: &str,
        jurisdiction: &str,
        config: Value,
    ) -> String {
        let m = manifest(plugin, version, world, &["*"]);
        let id = approved(&self.s, &self.operator, &[&self.carla, &self.dave], plugin, &m).await;
        self.rebind(&id, jurisdiction, config).await;
        id
    }

    async fn rebind(&self, id: &str, jurisdiction: &str, config: Value) {
        let body = json!({"brand_id": "A", "jurisdiction": jurisdiction, "plugin_id": id, "config": config});
        let (st, v) = self.s.post(&self.operator, "/admin/bindings", &body).await;
        assert_eq!(st, 201, "{v}");
    }

    async fn template(&self, t: Value) -> (u16, Value) {
        self.s.post(&self.marketing, "/admin/offer-templates", &t).await
    }

    async fn generate(&self, player: &str, max_cost: Option<i64>) -> Value {
        let (st, v) = self.s.post(&self.platform, "/v1/offers/generate", &request(player, max_cost)).await;
        assert_eq!(st, 200, "{v}");
        // The answer is the offer as stored, whatever its outcome.
        let (st, stored) =
            self.s.get(&self.platform, &format!("/v1/offers/{}", v["offer_id"].as_str().unwrap())).await;
        assert_eq!((st, &stored), (200, &v));
        v
    }

    async fn event(&self, id: &str, kind: &str, player: &str, payload: Value) {
        let at = self.s.clock.now() - jiff::SignedDuration::from_mins(1);
        let e = json!({"event_id": id, "event_type": kind, "player_id": player, "brand_id": "A",
                       "occurred_at": at.to_string(), "payload": payload});
        let (st, v) = self.s.post(&self.platform, "/v1/events", &e).await;
        assert_eq!(st, 202, "{v}");
    }

    async fn bonus(&self, id: &str) -> Value {
        let (st, b) = self.s.get(&self.platform, &format!("/v1/bonuses/{id}")).await;
        assert_eq!(st, 200, "{b}");
        b
    }

    /// Waits until the bonus satisfies `done`.
    async fn bonus_until(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        support::eventually(&format!("{id}: {what}"), Duration::from_secs(15), || async {
            let b = self.bonus(id).await;
            done(&b).then_some(b)
        })
        .await
    }

    /// Runs a candidate's impact report as compliance and waits for it.
    async fn impact(&self, id: &str, body: Value) -> Value {
        let path = format!("/admin/plugins/{id}/impact");
        let (st, v) = self.s.post(&self.compliance, &path, &body).await;
        assert_eq!(st, 202, "{v}");
        support::eventually("the report", Duration::from_secs(30), || async {
            let (_, v) = self.s.get(&self.compliance, &path).await;
            assert_ne!(v["state"], "failed", "{v}");
            (v["state"] == "done").then(|| v["report"].clone())
        })
        .await
    }

    async fn accept(&self, offer: &str) -> (u16, Value) {
        self.s.post(&self.platform, &format!("/v1/offers/{offer}/accept"), &json!({})).await
    }
}

fn request(player: &str, max_cost: Option<i64>) -> Value {
    json!({"player_id": player, "context": {"intent": "reengage", "channel": "email"},
           "constraints": {"max_cost_minor": max_cost, "rg_safe": true}})
}

fn cashback(name: &str, cap: i64, group: &str, extra: Value) -> Value {
    let mut t = json!({
        "name": name, "kind": "cashback", "products": ["casino"], "jurisdictions": ["*"],
        "bounds": {"max_percent": 10, "max_cap_minor": cap, "max_wager_multiplier": 10, "max_validity_hours": 48},
        "terms": {"max_bet_minor": 500, "max_cashout_minor": 5000, "bonus_validity_days": 7,
                  "contributions": {"slots": 100, "table": 10, "live": 5}},
        "conflict_group": group,
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        t[k] = v.clone();
    }
    t
}

fn codes(v: &Value) -> Vec<String> {
    v["reasons"]
        .as_array()
        .map_or(Vec::new(), |r| r.iter().map(|x| x["code"].as_str().unwrap().to_string()).collect())
}

fn bet(kind: &str, id: &str, category: &str, stake: i64) -> Value {
    let mut b = json!({"bet_id": id, "stake_minor": stake, "currency": "GBP", "game_id": "g1",
                       "provider": "studio_x", "category": category, "in_bonus": true});
    if kind == "bet.settled" {
        b["win_minor"] = json!(0);
    }
    b
}

/// Every host check, one row each: the player, the request, and what the host must answer.
async fn offers_follow_every_check(backend: Backend) {
    let Some(b) = bed(backend).await else { return };
    // A template that breaks GB's bonus law is refused at save, naming the rule; so is a mixed-product
    // bonus for GB. Elsewhere (MT) 35× is lawful.
    let (st, v) = b
        .template(cashback(
            "gb_35x",
            2000,
            "cashback",
            json!({"bounds": {"max_percent": 10,
        "max_cap_minor": 2000, "max_wager_multiplier": 35, "max_validity_hours": 48}}),
        ))
        .await;
    assert_eq!((st, v["error"]["code"].as_str()), (422, Some("invalid_offer_template")), "{v}");
    assert_eq!(v["error"]["field"], "bounds.max_wager_multiplier", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("GB-2026.2"), "{v}");
    let mixed = cashback(
        "mixed",
        2000,
        "cashback",
        json!({"products": ["casino", "sports"], "jurisdictions": ["GB"]}),
    );
    let (st, v) = b.template(mixed).await;
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("products")), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("one_product")
            || v["error"]["message"].as_str().unwrap().contains("products in one bonus"),
        "{v}"
    );
    let (st, v) = b
        .template(cashback(
            "mt_35x",
            2000,
            "cashback",
            json!({"jurisdictions": ["MT"], "bounds": {"max_percent": 10,
        "max_cap_minor": 2000, "max_wager_multiplier": 35, "max_validity_hours": 48}}),
        ))
        .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = b.template(cashback("bonus_cashback", 2000, "cashback", json!({}))).await;
    assert_eq!(st, 201, "{v}");

    b.bind("next-best-offer", "1.0.0", "offer-scorer", "*", json!({})).await;
    b.bind("next-best-offer-uk", "1.0.0-uk", "offer-scorer", "GB", json!({})).await;
    let greedy =
        b.bind("hostile-greedy-offer", "1.0.0", "offer-scorer", "MT", json!({"mode": "over-bounds"})).await;

    let casino = json!({"casino": true});
    b.player("p_ok", "GB", "1990-05-17", casino.clone()).await;
    b.player("p_se", "GB", "1990-05-17", casino.clone()).await;
    b.player("p_sports", "GB", "1990-05-17", json!({"sports": true})).await;
    b.player("p_nl23", "NL", "2003-06-01", casino.clone()).await;
    b.player("p_nl30", "NL", "1996-06-01", casino.clone()).await;
    b.player("p_mt", "MT", "1990-05-17", casino.clone()).await;
    b.player("p_mt2", "MT", "1990-05-17", casino.clone()).await;
    b.event("se1", "self_exclusion.started", "p_se", json!({"scope": "operator", "register": "own"})).await;
    b.s.settled().await;

    // Row 1: an adult GB player with consent: an offer, at most 10× wagering (the UK scorer), within
    // the request's budget.
    let ok = b.generate("p_ok", Some(1500)).await;
    assert_eq!(ok["state"], "issued", "{ok}");
    assert_eq!(ok["template"], "bonus_cashback", "{ok}");
    assert!(ok["params"]["wagerx"].as_u64().unwrap() <= 10, "{ok}");
    assert_eq!(ok["params"]["cap_minor"], 1500, "{ok}");
    assert!(ok["expires_at"].is_string(), "{ok}");
    let chosen = &ok["basis"]["ranking"][0];
    assert_eq!(chosen["outcome"], "chosen", "{ok}");
    let checks: Vec<&str> =
        chosen["checks"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
    assert_eq!(checks, ["gate", "constraints", "bounds", "conflict", "bonus_law", "economy"], "{ok}");
    assert!(ok["basis"]["scorer"]["plugin"]["version"].as_str().unwrap().contains("uk"), "{ok}");
    // The same offer read back explains itself.
    let (st, again) =
        b.s.get(&b.marketing, &format!("/v1/offers/{}", ok["offer_id"].as_str().unwrap())).await;
    assert_eq!((st, &again["basis"]), (200, &ok["basis"]));

    // Row 2: self-excluded: refused, with the RG reason.
    let se = b.generate("p_se", None).await;
    assert_eq!(se["state"], "refused", "{se}");
    assert!(codes(&se).contains(&"self_excluded".to_string()), "{se}");
    // Row 3: no marketing consent for the template's product.
    let sports = b.generate("p_sports", None).await;
    assert_eq!(
        (sports["state"].as_str(), codes(&sports)),
        (Some("refused"), vec!["no_consent".to_string()]),
        "{sports}"
    );
    // Row 4: NL, 23: no bonus offer under 24; at 30 the offer is made.
    let young = b.generate("p_nl23", None).await;
    assert_eq!(
        (young["state"].as_str(), codes(&young)),
        (Some("refused"), vec!["under_age".to_string()]),
        "{young}"
    );
    assert_eq!(b.generate("p_nl30", Some(1000)).await["state"], "issued");
    // Row 5: a greedy scorer (10× the template's percent) is refused, not clamped, and counted.
    let greedy_answer = b.generate("p_mt", None).await;
    assert_eq!(greedy_answer["state"], "refused", "{greedy_answer}");
    assert_eq!(codes(&greedy_answer), vec!["scorer_failed".to_string()], "{greedy_answer}");
    assert!(
        greedy_answer["reasons"][0]["detail"].as_str().unwrap().contains("above the bound"),
        "{greedy_answer}"
    );
    let metrics = b.s.http.get(format!("{}/metrics", b.s.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("pitboss_offer_refusals_total{reason=\"invalid_output\"} 1"), "{metrics}");
    // Row 6: max_cost_minor: free spins worth 50 × 20 = 1000 are over a budget of 500 and passed over
    // (the plain greedy scorer ranks in name order); the cashback after them fits.
    let spins = json!({"name": "a_free_spins", "kind": "free_spins", "products": ["casino"], "jurisdictions": ["MT"],
        "bounds": {"max_cap_minor": 1000, "max_wager_multiplier": 10, "max_validity_hours": 48, "max_spins": 50},
        "cost": {"spin_value_minor": 20}, "providers": ["studio_x"]});
    assert_eq!(b.template(spins).await.0, 201);
    b.rebind(&greedy, "MT", json!({})).await;
    let over = b.generate("p_mt2", Some(500)).await;
    assert_eq!(
        (over["state"].as_str(), over["template"].as_str()),
        (Some("issued"), Some("bonus_cashback")),
        "{over}"
    );
    let passed_over = &over["basis"]["ranking"][0];
    assert_eq!(
        (passed_over["template"].as_str(), passed_over["outcome"].as_str()),
        (Some("a_free_spins"), Some("refused"))
    );
    let constraints =
        passed_over["checks"].as_array().unwrap().iter().find(|c| c["check"] == "constraints").unwrap();
    assert_eq!(constraints["reasons"][0]["code"], "max_cost", "{over}");
    // Row 7: the player's daily maximum (3000): 1500 + 1500 fit, a third does not.
    assert_eq!(b.generate("p_ok", Some(1500)).await["state"], "issued");
    let third = b.generate("p_ok", Some(1500)).await;
    assert_eq!(codes(&third), vec!["budget_player_day".to_string()], "{third}");
    // Row 8: a conflict: a player holding a live cashback bonus gets no second one.
    let (st, bonus) = b.accept(ok["offer_id"].as_str().unwrap()).await;
    assert_eq!(st, 201, "{bonus}");
    b.player("p_ok2", "GB", "1990-05-17", casino.clone()).await;
    b.s.settled().await;
    let o = b.generate("p_ok2", Some(1000)).await;
    assert_eq!(b.accept(o["offer_id"].as_str().unwrap()).await.0, 201);
    let conflict = b.generate("p_ok2", Some(1000)).await;
    assert_eq!(codes(&conflict), vec!["bonus_conflict".to_string()], "{conflict}");
    // Row 9: expiry: an offer not accepted within its validity is expired and cannot be accepted.
    let late = b.generate("p_nl30", Some(1000)).await;
    assert_eq!(late["state"], "issued", "{late}");
    b.s.clock.advance(jiff::SignedDuration::from_hours(49));
    let (st, v) = b.accept(late["offer_id"].as_str().unwrap()).await;
    assert_eq!((st, v["error"]["code"].as_str()), (409, Some("offer_expired")), "{v}");
    let (_, shown) =
        b.s.get(&b.platform, &format!("/v1/offers/{}", late["offer_id"].as_str().unwrap())).await;
    assert_eq!(shown["state"], "expired", "{shown}");
    b.s.stop().await;
}

/// 100 concurrent requests against a brand budget of 20000 at 1000 each: exactly 20 offers; ten at
/// once for one player against 3000 a day: exactly 3.
async fn budgets_are_exact_under_concurrency(backend: Backend) {
    let Some(b) = bed(backend).await else { return };
    assert_eq!(b.template(cashback("bonus_cashback", 1000, "cashback", json!({}))).await.0, 201);
    b.bind("next-best-offer", "1.0.0", "offer-scorer", "*", json!({})).await;
    for i in 0..50 {
        b.player(&format!("p_{i}"), "MT", "1990-05-17", json!({"casino": true})).await;
    }
    b.s.settled().await;
    let run = |players: Vec<String>| {
        let (base, key) = (b.s.base.clone(), b.platform.clone());
        players
            .into_iter()
            .map(|p| {
                let (base, key) = (base.clone(), key.clone());
                tokio::spawn(async move {
                    let r = reqwest::Client::new()
                        .post(format!("{base}/v1/offers/generate"))
                        .bearer_auth(&key)
                        .json(&request(&p, None))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                    r.json::<Value>().await.unwrap()
                })
            })
            .collect::<Vec<_>>()
    };
    let mut answers = Vec::new();
    for h in run((0..10).map(|_| "p_0".to_string()).collect()) {
        answers.push(h.await.unwrap());
    }
    let issued = answers.iter().filter(|a| a["state"] == "issued").count();
    assert_eq!(issued, 3, "one player's daily maximum");
    assert!(answers.iter().filter(|a| a["state"] == "refused").all(|a| codes(a) == ["budget_player_day"]));
    let mut answers = Vec::new();
    for h in run((0..100).map(|i| format!("p_{}", 1 + i % 49)).collect()) {
        answers.push(h.await.unwrap());
    }
    let issued = answers.iter().filter(|a| a["state"] == "issued").count();
    assert_eq!(issued, 17, "the brand's budget: 20000 less the 3000 of p_0");
    assert!(answers.iter().filter(|a| a["state"] == "refused").all(|a| codes(a) == ["budget_brand_day"]));
    assert_eq!(b.s.count("SELECT spent_minor FROM offer_spend WHERE scope = 'brand'").await, 20000);
    b.s.stop().await;
}

/// An offer above the high-value threshold waits for a compliance officer; accepting it twice gives
/// one bonus and one grant; wagering by category follows the hand-computed table; a bet above max bet
/// is flagged; wagering met completes the bonus and asks the platform to release it; a replay of the
/// log changes no ledger.
async fn accept_grant_and_wagering(backend: Backend) {
    let Some(b) = bed(backend).await else { return };
    assert_eq!(b.template(cashback("big_cashback", 8000, "cashback", json!({}))).await.0, 201);
    b.bind("next-best-offer", "1.0.0", "offer-scorer", "*", json!({})).await;
    b.bind("wager-progress", "1.0.0", "bonus-rule", "*", json!({"contribution.live": "5"})).await;
    b.player("p_1", "MT", "1990-05-17", json!({"casino": true})).await;
    b.s.settled().await;

    // 8000 is above 5000: pending until a compliance officer approves.
    let (st, v) =
        b.s.post(
            &b.platform,
            "/v1/offers/generate",
            &json!({"player_id": "p_1",
        "context": {"intent": "retain", "channel": "email"}, "constraints": {"max_cost_minor": 8000}}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    // The player's daily maximum is 3000: the brand sets it; so this offer is refused by the economy.
    assert_eq!(codes(&v), vec!["budget_player_day".to_string()], "{v}");
    let offer = b.generate("p_1", Some(2000)).await;
    let id = offer["offer_id"].as_str().unwrap().to_string();
    assert_eq!(offer["state"], "issued", "{offer}");

    let (st, first) = b.accept(&id).await;
    assert_eq!(st, 201, "{first}");
    let (st, second) = b.accept(&id).await;
    assert_eq!((st, &second["bonus_id"]), (200, &first["bonus_id"]), "{second}");
    let bonus = first["bonus_id"].as_str().unwrap().to_string();
    assert_eq!(first["granted_minor"], 2000);
    assert_eq!(first["wagering_required_minor"], 2000 * offer["params"]["wagerx"].as_i64().unwrap());
    let active = b.bonus_until(&bonus, "active", |v| v["state"] == "active").await;
    let grants = b.wallet.accepted();
    assert_eq!(grants.len(), 1, "one grant");
    assert!(grants[0].signature_valid);
    assert_eq!(grants[0].idempotency_key.as_deref(), Some(format!("grant:{bonus}").as_str()));
    assert_eq!(grants[0].body["type"], "bonus.grant");
    assert_eq!(grants[0].body["amount"]["amount_minor"], 2000);
    let required = active["wagering_required_minor"].as_i64().unwrap();

    // Hand-computed: slots 1000 at 100% = 1000; table 1000 at 10% = 100; live 1000 at 5% (the
    // binding's contribution.live, within the terms' 5%) = 50; sports 1000 at 0% = nothing.
    for (i, category) in ["slots", "table", "live", "sports"].iter().enumerate() {
        b.event(
            &format!("bs{i}"),
            "bet.settled",
            "p_1",
            bet("bet.settled", &format!("b{i}"), category, 1000),
        )
        .await;
    }
    let v = b.bonus_until(&bonus, "1150 wagered", |v| v["wagering_done_minor"] == 1150).await;
    assert_eq!(v["contributions"], json!({"slots": 1000, "table": 100, "live": 50}), "{v}");
    assert_eq!(v["wagering_remaining_minor"], required - 1150);
    let progress: Vec<&Value> =
        v["history"].as_array().unwrap().iter().filter(|h| h["action"] == "progress").collect();
    assert_eq!(progress.len(), 3, "{v}");
    assert!(
        progress
            .iter()
            .all(|h| h["plugin_id"].is_string() && h["decision_seq"].is_i64() && h["event_id"].is_string())
    );

    // A bet above the max bet (500) is flagged (the terms' breach is `flag`); the bonus goes on.
    b.event("bp1", "bet.placed", "p_1", bet("bet.placed", "b9", "slots", 800)).await;
    let v = b
        .bonus_until(&bonus, "flagged", |v| {
            v["history"].as_array().unwrap().iter().any(|h| h["action"] == "max_bet_flag")
        })
        .await;
    assert_eq!(v["state"], "active");

    // Wagering met: completed, and the platform is asked to release it (capped by max cash-out).
    let rest = required - 1150;
    b.event("bs9", "bet.settled", "p_1", bet("bet.settled", "b10", "slots", rest)).await;
    let done = b.bonus_until(&bonus, "completed", |v| v["state"] == "completed").await;
    assert_eq!(done["wagering_remaining_minor"], 0, "{done}");
    let calls = b.wallet.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(calls[1].body["type"], "bonus.release");
    assert_eq!(calls[1].body["max_cashout_minor"], 5000);
    // The host's own event is on the bus for triggers.
    assert_eq!(b.s.count("SELECT COUNT(*) FROM events WHERE event_type = 'bonus.completed'").await, 1);

    // A replay of the whole log changes no ledger.
    let moves = b.s.count("SELECT COUNT(*) FROM bonus_moves").await;
    sqlx::query("UPDATE consumer_offsets SET position = 0, tx_id = 0 WHERE consumer = 'bonuses'")
        .execute(&b.s.db.pool)
        .await
        .unwrap();
    b.event("s_after", "session.started", "p_1", json!({"session_id": "s1"})).await;
    support::eventually("the replay", Duration::from_secs(10), || async {
        (!pitboss::bus::pending(&b.s.db, "bonuses").await.unwrap()).then_some(())
    })
    .await;
    assert_eq!(b.s.count("SELECT COUNT(*) FROM bonus_moves").await, moves);
    assert_eq!(b.bonus(&bonus).await["wagering_done_minor"], done["wagering_done_minor"]);

    // Above the threshold (5000): four eyes. Worth 6000, costed at 40% (2400, within the player's 3000).
    b.s.clock.advance(jiff::SignedDuration::from_hours(24));
    b.player("p_2", "MT", "1990-05-17", json!({"casino": true})).await;
    b.s.settled().await;
    let vip = cashback("vip_cashback", 6000, "vip", json!({"cost": {"cost_percent": 40}}));
    assert_eq!(b.template(vip).await.0, 201);
    let (st, vip) =
        b.s.post(
            &b.operator,
            "/v1/offers/generate",
            &json!({"player_id": "p_2",
        "context": {"intent": "retain", "channel": "email"}}),
        )
        .await;
    assert_eq!(
        (st, vip["state"].as_str(), vip["template"].as_str()),
        (200, Some("pending_approval"), Some("vip_cashback")),
        "{vip}"
    );
    assert_eq!((vip["value_minor"].as_i64(), vip["cost_minor"].as_i64()), (Some(6000), Some(2400)), "{vip}");
    let vip_id = vip["offer_id"].as_str().unwrap();
    let (st, v) = b.accept(vip_id).await;
    assert_eq!((st, v["error"]["code"].as_str()), (409, Some("offer_pending_approval")), "{v}");
    let approve = format!("/admin/offers/{vip_id}/approve");
    assert_eq!(b.s.post(&b.operator, &approve, &json!({})).await.0, 403, "an operator does not approve");
    let (st, v) = b.s.post(&b.compliance, &approve, &json!({})).await;
    assert_eq!(
        (st, v["state"].as_str(), v["approval"]["approved_by"].as_str()),
        (200, Some("issued"), Some("Carla Compliance")),
        "{v}"
    );
    assert_eq!(b.accept(vip_id).await.0, 201);
    b.s.stop().await;
}

/// A kill -9 between accept and grant gives exactly one grant: the platform took the call but the
/// host died before its answer; started again, the host posts it again with the same key.
async fn a_crash_between_accept_and_grant_grants_once(backend: Backend) {
    let Some(mut b) = bed(backend).await else { return };
    assert_eq!(b.template(cashback("bonus_cashback", 2000, "cashback", json!({}))).await.0, 201);
    b.bind("next-best-offer", "1.0.0", "offer-scorer", "*", json!({})).await;
    b.player("p_1", "MT", "1990-05-17", json!({"casino": true})).await;
    b.s.settled().await;
    let offer = b.generate("p_1", Some(1000)).await;
    b.wallet.set_behaviour(Behaviour::AcceptThenHang(Duration::from_secs(30)));
    let (st, bonus) = b.accept(offer["offer_id"].as_str().unwrap()).await;
    assert_eq!(st, 201, "{bonus}");
    b.wallet.wait_received(1, Duration::from_secs(10)).await;
    b.s.crash().await;
    b.wallet.set_behaviour(Behaviour::Accept);
    b.s.start_again().await;
    b.s.clock.advance(jiff::SignedDuration::from_secs(10));
    let id = bonus["bonus_id"].as_str().unwrap();
    b.bonus_until(id, "active after the restart", |v| v["state"] == "active").await;
    let received = b.wallet.received();
    assert!(received.len() >= 2, "posted again after the crash");
    assert!(received.iter().all(|r| r.idempotency_key.as_deref() == Some(format!("grant:{id}").as_str())));
    assert_eq!(b.wallet.accepted().len(), 1, "exactly one grant");
    b.s.stop().await;
}

/// A bet above the max bet forfeits a bonus whose terms say so (the others flag it); a withdrawal
/// forfeits a bonus whose terms say so and locks the others until it ends; a bonus past its deadline
/// expires with no event.
async fn withdrawal_and_expiry(backend: Backend) {
    let Some(b) = bed(backend).await else { return };
    let forfeiting = cashback(
        "strict_cashback",
        1000,
        "strict",
        json!({"terms": {"max_bet_minor": 500, "forfeit_on_withdrawal": true, "bonus_validity_days": 7}}),
    );
    assert_eq!(b.template(forfeiting).await.0, 201);
    let maxbet = cashback(
        "maxbet_cashback",
        1000,
        "maxbet",
        json!({"terms": {"max_bet_minor": 500, "max_bet_breach": "forfeit", "bonus_validity_days": 7}}),
    );
    assert_eq!(b.template(maxbet).await.0, 201);
    assert_eq!(b.template(cashback("bonus_cashback", 1000, "cashback", json!({}))).await.0, 201);
    b.bind("next-best-offer", "1.0.0", "offer-scorer", "*", json!({})).await;
    b.bind("wager-progress", "1.0.0", "bonus-rule", "*", json!({})).await;
    b.player("p_1", "MT", "1990-05-17", json!({"casino": true})).await;
    b.s.settled().await;
    let mut bonuses = Vec::new();
    for _ in 0..3 {
        let o = b.generate("p_1", Some(1000)).await;
        assert_eq!(o["state"], "issued", "{o}");
        let (st, v) = b.accept(o["offer_id"].as_str().unwrap()).await;
        assert_eq!(st, 201, "{v}");
        bonuses
            .push((v["template"].as_str().unwrap().to_string(), v["bonus_id"].as_str().unwrap().to_string()));
    }
    let id_of =
        |name: &str| bonuses.iter().find(|(t, _)| t == name).expect("each template offered").1.clone();
    let (strict, plain, maxbet) =
        (id_of("strict_cashback"), id_of("bonus_cashback"), id_of("maxbet_cashback"));
    for (_, id) in &bonuses {
        b.bonus_until(id, "active", |v| v["state"] == "active").await;
    }
    // A bonus bet of 800 against max bets of 500: forfeit where the terms say so, a flag elsewhere.
    b.event("bp1", "bet.placed", "p_1", bet("bet.placed", "b1", "slots", 800)).await;
    let v = b.bonus_until(&maxbet, "forfeited", |v| v["state"] == "forfeited").await;
    let last = v["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["action"].as_str(), last["detail"]["stake_minor"].as_i64()),
        (Some("max_bet_breach"), Some(800)),
        "{v}"
    );
    b.bonus_until(&strict, "flagged", |v| {
        v["history"].as_array().unwrap().iter().any(|h| h["action"] == "max_bet_flag")
            && v["state"] == "active"
    })
    .await;
    let money = json!({"withdrawal_id": "w1", "amount_minor": 5000, "currency": "GBP"});
    b.event("w1", "withdrawal.requested", "p_1", money.clone()).await;
    b.bonus_until(&strict, "forfeited", |v| v["state"] == "forfeited").await;
    b.bonus_until(&plain, "locked", |v| v["state"] == "locked").await;
    b.event("w2", "withdrawal.processed", "p_1", money).await;
    b.bonus_until(&plain, "active again", |v| v["state"] == "active").await;
    // Both forfeits reach the platform (three grants, then two forfeits).
    for id in [&strict, &maxbet] {
        support::eventually(&format!("the forfeit of {id}"), Duration::from_secs(10), || async {
            let calls = b.wallet.accepted();
            calls
                .iter()
                .any(|c| c.body["type"] == "bonus.forfeit" && c.body["bonus_id"] == id.as_str())
                .then_some(())
        })
        .await;
    }

    b.s.clock.advance(jiff::SignedDuration::from_hours(24 * 31));
    let v = b.bonus_until(&plain, "expired", |v| v["state"] == "expired").await;
    assert!(
        v["history"].as_array().unwrap().iter().any(|h| h["reason"] == "the wagering deadline passed"),
        "{v}"
    );
    let (st, all) = b.s.get(&b.platform, "/v1/players/p_1/bonuses").await;
    assert_eq!((st, all["bonuses"].as_array().unwrap().len()), (200, 3), "{all}");
    b.s.stop().await;
}

/// Impact reports: an offer scorer that raises costs (it does not cap cashback at what it gives back)
/// and a bonus rule that counts live games at 10% where the bound one (and the terms) count 5%.
async fn impact_reports_of_offer_scorers_and_bonus_rules(backend: Backend) {
    let Some(mut b) = bed(backend).await else { return };
    assert_eq!(b.template(cashback("bonus_cashback", 2000, "cashback", json!({}))).await.0, 201);
    b.bind("next-best-offer", "1.0.0", "offer-scorer", "*", json!({})).await;
    b.bind("wager-progress", "1.0.0", "bonus-rule", "*", json!({"contribution.live": "5"})).await;
    b.player("p_loser", "MT", "1990-05-17", json!({"casino": true})).await;
    b.player("p_even", "MT", "1990-05-17", json!({"casino": true})).await;
    // Stakes count when placed, wins when settled: a 5000 loss.
    b.event("stake", "bet.placed", "p_loser", bet("bet.placed", "b0", "slots", 5000)).await;
    b.event("loss", "bet.settled", "p_loser", bet("bet.settled", "b0", "slots", 5000)).await;
    b.s.settled().await;

    let m = manifest("greedy", "2.0.0", "offer-scorer", &["*"]);
    let (_, v) =
        support::registry::upload(&b.s, &b.operator, &m, support::wasm("hostile-greedy-offer")).await;
    let r = b.impact(v["id"].as_str().unwrap(), json!({})).await;
    assert_eq!((r["kind"].as_str(), r["population"].as_u64()), (Some("offer_scorer"), Some(2)), "{r}");
    // The loser's cashback was capped at 10% of 5000; the candidate gives the template's cap.
    assert_eq!(r["changed"]["total"], 1, "{r}");
    assert_eq!(r["changed"]["sample"][0]["player_id"], "p_loser", "{r}");
    assert_eq!(r["cost_minor"], json!({"current": 2500, "candidate": 4000}), "{r}");

    // A bonus, active, and two settled bets after its grant.
    let offer = b.generate("p_even", Some(1000)).await;
    let (_, bonus) = b.accept(offer["offer_id"].as_str().unwrap()).await;
    let id = bonus["bonus_id"].as_str().unwrap().to_string();
    b.bonus_until(&id, "active", |v| v["state"] == "active").await;
    b.s.clock.advance(jiff::SignedDuration::from_mins(10));
    b.event("s1", "bet.settled", "p_even", bet("bet.settled", "b1", "slots", 1000)).await;
    b.event("l1", "bet.settled", "p_even", bet("bet.settled", "b2", "live", 1000)).await;
    b.bonus_until(&id, "1050 wagered", |v| v["wagering_done_minor"] == 1050).await;
    // The same rule as a new version (other bytes: a custom section appended), run without the
    // binding's configuration: live games at its default 10%.
    let mut bytes = support::wasm("wager-progress");
    bytes.extend([0x00, 13, 12]);
    bytes.extend(b"pitboss-test");
    let m = manifest("wager-progress", "2.0.0", "bonus-rule", &["*"]);
    let (st, v) = support::registry::upload(&b.s, &b.operator, &m, bytes).await;
    assert_eq!(st, 201, "{v}");
    let r = b.impact(v["id"].as_str().unwrap(), json!({"days": 30})).await;
    assert_eq!((r["kind"].as_str(), r["events_replayed"].as_u64()), (Some("bonus_rule"), Some(2)), "{r}");
    assert_eq!(
        (r["changed"]["events"].as_u64(), r["changed"]["players"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(r["wagering_counted_minor"], json!({"current": 1050, "candidate": 1100}), "{r}");
    assert_eq!(r["flagged"]["actions"], 1, "{r}");
    assert!(r["flagged"]["sample"][0]["why"].as_str().unwrap().contains("live counted at 10%"), "{r}");
    b.s.restart().await;
    let (st, again) =
        b.s.get(&b.compliance, &format!("/admin/plugins/{}/impact", v["id"].as_str().unwrap())).await;
    assert_eq!((st, &again["report"]), (200, &r), "kept across a restart");
    b.s.stop().await;
}

/// A trigger's offer action: the event makes an offer through the offer service and its message goes
/// through the send service; an offer above the high-value threshold is held, and its message sent
/// once a compliance officer approves it.
async fn a_trigger_makes_and_sends_an_offer(backend: Backend) {
    let Some(b) = bed(backend).await else { return };
    assert_eq!(b.template(cashback("bonus_cashback", 2000, "cashback", json!({}))).await.0, 201);
    let vip = cashback("vip_cashback", 6000, "vip", json!({"cost": {"cost_percent": 20}}));
    assert_eq!(b.template(vip).await.0, 201);
    b.bind("next-best-offer", "1.0.0", "offer-scorer", "*", json!({})).await;
    let t = json!({"topic": "casino", "body": "{{offer_template}}: {{offer_cap_minor}} until {{offer_expires_at}}"});
    assert_eq!(b.s.put(&b.marketing, "/admin/templates/tpl_offer/default", &t).await.0, 200);
    b.player("p_1", "MT", "1990-05-17", json!({"casino": true})).await;
    b.player("p_2", "MT", "1990-05-17", json!({"casino": true})).await;
    b.s.settled().await;

    let trigger = |name: &str, on: &str, max_cost: i64| {
        json!({"name": name, "on": [on], "action": {"type": "offer", "intent": "consolation",
               "max_cost_minor": max_cost, "send": {"template_id": "tpl_offer", "channel": "in_app"}}})
    };
    let (st, small) =
        b.s.post(&b.marketing, "/admin/triggers", &trigger("loss-offer", "bet.settled", 1000)).await;
    assert_eq!(
        (st, &small["active_version"]),
        (201, &Value::Null),
        "an offer is marketing: inactive until activated"
    );
    let small = small["id"].as_str().unwrap().to_string();
    let (st, v) =
        b.s.post(&b.marketing, &format!("/admin/triggers/{small}/activate"), &json!({"version": 1})).await;
    assert_eq!(st, 200, "{v}");
    let (st, big) =
        b.s.post(&b.marketing, "/admin/triggers", &trigger("vip-offer", "session.started", 8000)).await;
    assert_eq!(st, 201, "{big}");
    let big = big["id"].as_str().unwrap().to_string();
    let activate = format!("/admin/triggers/{big}/activate");
    let (st, v) = b.s.post(&b.marketing, &activate, &json!({"version": 1})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (403, Some("four_eyes")), "worth more than 5000: {v}");
    assert_eq!(b.s.post(&b.compliance, &activate, &json!({"version": 1})).await.0, 200);

    // A loss: an offer capped at 1000, sent to the inbox with its figures.
    b.event("st1", "bet.placed", "p_1", bet("bet.placed", "b1", "slots", 3000)).await;
    b.event("se1", "bet.settled", "p_1", bet("bet.settled", "b1", "slots", 3000)).await;
    let inbox = b.messages("p_1", "the offer in the inbox").await;
    assert!(inbox[0]["body"].as_str().unwrap().starts_with("bonus_cashback: 300 until"), "{inbox:?}");
    let (_, fires) = b.s.get(&b.platform, "/v1/players/p_1/triggers").await;
    let fire = &fires["fires"][0];
    assert_eq!(fire["outcome"], "fired", "{fires}");
    let (_, offers) = b.s.get(&b.platform, "/v1/players/p_1/offers").await;
    assert_eq!(offers["offers"][0]["state"], "issued", "{offers}");
    assert!(
        fire["reason"].as_str().unwrap().contains(offers["offers"][0]["offer_id"].as_str().unwrap()),
        "{fires}"
    );

    // p_2 holds a cashback bonus: only the VIP template is left, worth 6000: held for approval.
    let o = b.generate("p_2", Some(1000)).await;
    assert_eq!(b.accept(o["offer_id"].as_str().unwrap()).await.0, 201);
    b.event("ss2", "session.started", "p_2", json!({"session_id": "s2"})).await;
    let pending = support::eventually("the held offer", Duration::from_secs(15), || async {
        let (_, offers) = b.s.get(&b.platform, "/v1/players/p_2/offers").await;
        offers["offers"].as_array().unwrap().iter().find(|o| o["state"] == "pending_approval").cloned()
    })
    .await;
    let (_, fires) = b.s.get(&b.platform, "/v1/players/p_2/triggers").await;
    assert_eq!(fires["fires"][0]["outcome"], "offer_pending", "{fires}");
    let (_, inbox) = b.s.get(&b.platform, "/v1/players/p_2/inbox").await;
    assert_eq!(inbox["messages"].as_array().unwrap().len(), 0, "nothing sent before the approval");
    let (st, approved) =
        b.s.post(
            &b.compliance,
            &format!("/admin/offers/{}/approve", pending["offer_id"].as_str().unwrap()),
            &json!({}),
        )
        .await;
    assert_eq!((st, approved["state"].as_str()), (200, Some("issued")), "{approved}");
    assert!(approved["sent"]["delivery_id"].is_string(), "{approved}");
    support::eventually("the approved offer in the inbox", Duration::from_secs(15), || async {
        let (_, inbox) = b.s.get(&b.platform, "/v1/players/p_2/inbox").await;
        (inbox["messages"].as_array().unwrap().len() == 1).then_some(())
    })
    .await;

    // A journey's `offer` node: the same service and the same send, as a step of the run.
    let journey = json!({"name": "offer-journey", "start": "offer", "nodes": {
        "offer": {"type": "offer", "offer": {"intent": "retain", "max_cost_minor": 500,
                  "send": {"template_id": "tpl_offer", "channel": "in_app"}}, "next": "done"},
        "done": {"type": "exit", "reason": "offered"}}});
    let (st, j) = b.s.post(&b.marketing, "/admin/journeys", &journey).await;
    assert_eq!(st, 201, "{j}");
    let jid = j["id"].as_str().unwrap();
    assert_eq!(
        b.s.post(&b.marketing, &format!("/admin/journeys/{jid}/activate"), &json!({"version": 1})).await.0,
        200
    );
    let entry = json!({"name": "offer-entry", "on": ["session.ended"], "action": {"type": "journey", "journey": "offer-journey"}});
    let (st, tr) = b.s.post(&b.marketing, "/admin/triggers", &entry).await;
    assert_eq!(st, 201, "{tr}");
    let tid = tr["id"].as_str().unwrap();
    assert_eq!(
        b.s.post(&b.marketing, &format!("/admin/triggers/{tid}/activate"), &json!({"version": 1})).await.0,
        200
    );
    b.player("p_3", "MT", "1990-05-17", json!({"casino": true})).await;
    b.event("sn3", "session.ended", "p_3", json!({"session_id": "s3"})).await;
    let inbox = b.messages("p_3", "the journey's offer in the inbox").await;
    assert!(inbox[0]["body"].as_str().unwrap().starts_with("bonus_cashback: 500 until"), "{inbox:?}");
    let (_, runs) = b.s.get(&b.platform, "/v1/players/p_3/journeys").await;
    let steps = runs.to_string();
    assert!(steps.contains("\"offer\""), "{runs}");
    let (_, offers) = b.s.get(&b.platform, "/v1/players/p_3/offers").await;
    assert_eq!(offers["offers"][0]["state"], "issued", "{offers}");
    b.s.stop().await;
}

/// Hostile requests to the offer endpoints: the role before the body, every answer in the error
/// shape, bounds on every field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_offer_requests_get_stable_codes() {
    let Some(b) = bed(Backend::Sqlite).await else { return };
    // Announced but never sent: the answer comes from the head alone, so the body was not waited for.
    let head = format!(
        "POST /v1/offers/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 3145728\r\n\r\n",
        b.marketing
    );
    let (st, body) = b.s.raw(&head).await;
    assert_eq!(st, 403, "the role is checked before the body is read: {body}");
    assert!(body.contains("\"forbidden\""), "{body}");
    let (st, v) = b.s.post_raw(&b.platform, "/v1/offers/generate", "{not json").await;
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("malformed_json")), "{v}");
    for (body, field) in [
        (json!({"player_id": "p", "context": {"intent": "x", "channel": "email"}, "extra": 1}), None),
        (json!({"player_id": "p", "context": {"intent": "x", "channel": "fax"}}), None),
        (
            json!({"player_id": "p", "context": {"intent": "x", "channel": "email"}, "constraints": {"max_cost_minor": -1}}),
            Some("constraints.max_cost_minor"),
        ),
        (
            json!({"player_id": "p", "context": {"intent": "x", "channel": "email"}, "constraints": {"max_cost_minor": 1e30}}),
            None,
        ),
        (
            json!({"player_id": "p".repeat(200), "context": {"intent": "x", "channel": "email"}}),
            Some("player_id"),
        ),
        (
            json!({"player_id": "p", "context": {"intent": "X".repeat(100), "channel": "email"}}),
            Some("context.intent"),
        ),
    ] {
        let (st, v) = b.s.post(&b.platform, "/v1/offers/generate", &body).await;
        assert_eq!((st, v["error"]["code"].as_str()), (422, Some("invalid_offer_request")), "{body}: {v}");
        if let Some(f) = field {
            assert_eq!(v["error"]["field"], f, "{v}");
        }
    }
    let (st, v) = b.s.post(&b.platform, "/v1/offers/generate", &request("nobody", None)).await;
    assert_eq!((st, v["error"]["code"].as_str()), (404, Some("not_found")), "{v}");
    let (st, v) = b.s.post(&b.platform, "/v1/offers/of_nothing/accept", &json!({})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (404, Some("not_found")), "{v}");
    let (st, v) = b.s.post(&b.marketing, "/v1/offers/of_nothing/accept", &json!({})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (403, Some("forbidden")), "{v}");
    let (st, v) = b.s.get(&b.platform, "/v1/bonuses/bn_nothing").await;
    assert_eq!((st, v["error"]["code"].as_str()), (404, Some("not_found")), "{v}");
    let (st, v) = b.s.get(&b.platform, "/v1/players/p/offers?limit=abc").await;
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("invalid_query")), "{v}");
    // Templates: every amount and count bounded, named.
    for (t, field) in [
        (cashback("t1", -5, "g", json!({})), "bounds.max_cap_minor"),
        (cashback("t2", 2_000_000_000, "g", json!({})), "bounds.max_cap_minor"),
        (cashback("t3", 100, "g", json!({"terms": {"bonus_validity_days": 0}})), "terms.bonus_validity_days"),
        (
            cashback("t4", 100, "g", json!({"terms": {"contributions": {"slots": 150}}})),
            "terms.contributions",
        ),
        (cashback("Bad Name", 100, "g", json!({})), "name"),
        (cashback("t5", 100, "g", json!({"jurisdictions": ["XX-"]})), "jurisdictions"),
    ] {
        let (st, v) = b.template(t).await;
        assert_eq!(
            (st, v["error"]["code"].as_str(), v["error"]["field"].as_str()),
            (422, Some("invalid_offer_template"), Some(field)),
            "{v}"
        );
    }
    let other = b.s.key(Role::Marketing, &["B"]).await;
    assert_eq!(b.template(cashback("mine", 100, "g", json!({}))).await.0, 201);
    let (_, all) = b.s.get(&b.marketing, "/admin/offer-templates").await;
    let id = all["offer_templates"][0]["id"].as_str().unwrap();
    assert_eq!(b.s.get(&other, &format!("/admin/offer-templates/{id}")).await.0, 404);
    b.s.stop().await;
}

/// A player who self-excludes after accepting, while the platform is failing, never gets the grant:
/// the bonus is forfeited with the RG reason and the grant dropped.
async fn no_grant_after_a_self_exclusion(backend: Backend) {
    let Some(b) = bed(backend).await else { return };
    assert_eq!(b.template(cashback("bonus_cashback", 1000, "cashback", json!({}))).await.0, 201);
    b.bind("next-best-offer", "1.0.0", "offer-scorer", "*", json!({})).await;
    b.player("p_1", "MT", "1990-05-17", json!({"casino": true})).await;
    b.s.settled().await;
    b.wallet.set_behaviour(Behaviour::Fail);
    let o = b.generate("p_1", Some(1000)).await;
    let (st, bonus) = b.accept(o["offer_id"].as_str().unwrap()).await;
    assert_eq!(st, 201, "{bonus}");
    b.wallet.wait_received(1, Duration::from_secs(10)).await;
    b.event("se1", "self_exclusion.started", "p_1", json!({"scope": "operator", "register": "own"})).await;
    b.s.settled().await;
    b.wallet.set_behaviour(Behaviour::Accept);
    b.s.clock.advance(jiff::SignedDuration::from_secs(60));
    let id = bonus["bonus_id"].as_str().unwrap();
    let v = b.bonus_until(id, "forfeited", |v| v["state"] == "forfeited").await;
    assert!(
        v["history"].as_array().unwrap().last().unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("self_excluded"),
        "{v}"
    );
    assert_eq!(v["platform_calls"][0]["status"], "dead", "{v}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.wallet.accepted().is_empty(), "no grant reached the platform");
    b.s.stop().await;
}

/// A deposit match is issued at acceptance with no amount; the next deposit in its currency fixes the
/// amount (percent of the deposit, up to the cap) and the grant goes out then.
async fn a_deposit_match_is_granted_on_the_deposit(backend: Backend) {
    let Some(b) = bed(backend).await else { return };
    let t = json!({"name": "dep_match_100", "kind": "deposit_match", "products": ["casino"], "jurisdictions": ["*"],
                   "bounds": {"max_percent": 100, "max_cap_minor": 5000, "max_wager_multiplier": 10, "max_validity_hours": 168}});
    assert_eq!(b.template(t).await.0, 201);
    b.bind("next-best-offer", "1.0.0", "offer-scorer", "*", json!({})).await;
    b.player("p_1", "MT", "1990-05-17", json!({"casino": true})).await;
    b.s.settled().await;
    let o = b.generate("p_1", Some(2500)).await;
    assert_eq!((o["state"].as_str(), o["params"]["cap_minor"].as_i64()), (Some("issued"), Some(2500)), "{o}");
    let (st, bonus) = b.accept(o["offer_id"].as_str().unwrap()).await;
    assert_eq!(
        (st, bonus["state"].as_str(), bonus["granted_minor"].as_i64()),
        (201, Some("issued"), Some(0)),
        "{bonus}"
    );
    let id = bonus["bonus_id"].as_str().unwrap().to_string();
    assert!(
        b.bonus(&id).await["platform_calls"].as_array().unwrap().is_empty(),
        "no grant before the deposit"
    );
    b.s.clock.advance(jiff::SignedDuration::from_mins(5));
    // A deposit in another currency does not count; one in the bonus's does.
    b.event(
        "pc0",
        "payment.captured",
        "p_1",
        json!({"payment_id": "pay0", "amount_minor": 1000, "currency": "EUR"}),
    )
    .await;
    b.event(
        "pc1",
        "payment.captured",
        "p_1",
        json!({"payment_id": "pay1", "amount_minor": 1000, "currency": "GBP"}),
    )
    .await;
    let v = b.bonus_until(&id, "active", |v| v["state"] == "active").await;
    assert_eq!(
        (v["granted_minor"].as_i64(), v["wagering_required_minor"].as_i64()),
        (Some(1000), Some(10_000)),
        "{v}"
    );
    let grants = b.wallet.accepted();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].body["amount"]["amount_minor"], 1000);
    b.s.stop().await;
}

on_both!(
    a_deposit_match_is_granted_on_the_deposit,
    no_grant_after_a_self_exclusion,
    a_trigger_makes_and_sends_an_offer,
    impact_reports_of_offer_scorers_and_bonus_rules,
    offers_follow_every_check,
    budgets_are_exact_under_concurrency,
    accept_grant_and_wagering,
    a_crash_between_accept_and_grant_grants_once,
    withdrawal_and_expiry
);
