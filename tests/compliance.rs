//! What changes whether a player may be contacted takes effect before the next decision, whichever way
//! it arrives; the law's numbers are applied as numbers. Each test runs on SQLite and on PostgreSQL
//! against a real host, with the send path's real SMTP sink and providers.

use crate::support;

use jiff::ToSpan;
use serde_json::{Value, json};
use support::rig::*;
use support::server::Backend;

fn event(id: &str, kind: &str, player: &str, payload: Value) -> Value {
    json!({"event_id": id, "event_type": kind, "player_id": player, "brand_id": "A",
           "occurred_at": "2026-11-20T10:00:00Z", "payload": payload})
}

fn status(v: &Value) -> (String, Vec<String>) {
    (v["status"].as_str().unwrap_or_default().to_string(), reasons(v))
}

/// `crm.unsubscribed` and `crm.complained` posted as events withdraw that channel's marketing consent,
/// and the very next send — asked at once, without waiting for anything — sees it.
async fn unsubscribe_and_complaint_events_stop_the_next_send(s: Backend) {
    let Some(r) = rig(s, FAST).await else { return };
    r.player("p_ev", "GB", "Europe/London").await;
    r.template("tpl_1", "casino", "One for {{first_name}}").await;
    r.template("tpl_2", "casino", "Two for {{first_name}}").await;
    let (_, first) = r.send("ev_1", &email("p_ev", "tpl_1")).await;
    assert_eq!(first["status"], "QUEUED", "{first}");

    let unsub = event(
        "u_1",
        "crm.unsubscribed",
        "p_ev",
        json!({"delivery_id": first["delivery_id"], "channel": "email"}),
    );
    assert_eq!(r.s.post(&r.platform, "/v1/events", &unsub).await.0, 202);
    let (_, next) = r.send("ev_2", &email("p_ev", "tpl_2")).await;
    assert_eq!(status(&next), ("SUPPRESSED".into(), vec!["no_consent".into()]), "{next}");

    let complaint =
        event("c_1", "crm.complained", "p_ev", json!({"delivery_id": "dlv_x", "channel": "push"}));
    assert_eq!(r.s.post(&r.platform, "/v1/events", &complaint).await.0, 202);
    let push = json!({"channel": "push", "player_id": "p_ev", "template_id": "tpl_2",
                      "personalization": {"first_name": "Alex"}, "frequency_policy_id": "fp_test"});
    let (_, pushed) = r.send("ev_3", &push).await;
    assert_eq!(status(&pushed), ("SUPPRESSED".into(), vec!["no_consent".into()]), "{pushed}");

    // Each withdrawal is a consent version of its own, saying where it came from.
    let (_, history) = r.s.get(&r.platform, "/v1/players/p_ev/consents/history").await;
    let withdrawals: Vec<(String, String)> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["granted"] == false)
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["source"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        withdrawals,
        [("email".into(), "event:crm.unsubscribed".into()), ("push".into(), "event:crm.complained".into())]
    );
    // SMS consent is untouched.
    let sms = json!({"channel": "sms", "player_id": "p_ev", "template_id": "tpl_2",
                     "personalization": {"first_name": "Alex"}, "frequency_policy_id": "fp_test"});
    assert_eq!(r.send("ev_4", &sms).await.1["status"], "QUEUED");
    r.s.stop().await;
}

/// Exclusions are kept one by one: a short brand exclusion ending, or an own-brand end, never lifts a
/// national register's indefinite one.
async fn overlapping_exclusions_each_hold(s: Backend) {
    let Some(r) = rig(s, FAST).await else { return };
    r.player("p_x", "GB", "Europe/London").await;
    r.template("tpl_x", "casino", "Hi {{first_name}}").await;
    let started = |id: &str, register: &str, scope: &str, until: Option<&str>| {
        let mut p = json!({"scope": scope, "register": register});
        if let Some(u) = until {
            p["until"] = json!(u);
        }
        event(id, "self_exclusion.started", "p_x", p)
    };
    let ended = |id: &str, register: &str, scope: &str| {
        event(id, "self_exclusion.ended", "p_x", json!({"scope": scope, "register": register}))
    };
    let rig = &r;
    let post = |e: Value| async move { assert_eq!(rig.s.post(&rig.platform, "/v1/events", &e).await.0, 202) };
    post(started("x_1", "GAMSTOP", "operator", None)).await;
    post(started("x_2", "own", "brand", Some("2027-05-20T00:00:00Z"))).await;
    let (_, p) = r.s.get(&r.platform, "/v1/players/p_x").await;
    assert_eq!(p["rg"]["self_excluded"], true, "{p}");
    assert_eq!(p["rg"]["self_excluded_until"], Value::Null, "indefinite while GAMSTOP holds: {p}");
    assert_eq!(p["self_exclusion_registers"], json!(["GAMSTOP", "own"]));

    // The brand's own exclusion ends; an own-brand end of operator scope names nothing in force.
    post(ended("x_3", "own", "brand")).await;
    post(ended("x_4", "own", "operator")).await;
    let (_, p) = r.s.get(&r.platform, "/v1/players/p_x").await;
    assert_eq!(
        (p["rg"]["self_excluded"].as_bool(), &p["self_exclusion_registers"]),
        (Some(true), &json!(["GAMSTOP"]))
    );
    let (_, d) = r.send("x_s1", &email("p_x", "tpl_x")).await;
    assert_eq!(status(&d), ("SUPPRESSED".into(), vec!["self_excluded".into()]), "{d}");

    // A dated exclusion alone lapses on its date; the register's ends only when the register says so.
    post(started("x_5", "own", "brand", Some("2026-12-02T00:00:00Z"))).await;
    post(ended("x_6", "GAMSTOP", "operator")).await;
    r.s.clock.set(noon_tomorrow() + jiff::SignedDuration::from_hours(24 * 30));
    let (_, d) = r.send("x_s2", &email("p_x", "tpl_x")).await;
    assert_eq!(d["status"], "QUEUED", "every exclusion has ended: {d}");
    r.s.stop().await;
}

/// Ontario's minimum age for marketing is 19: an 18-year-old gets none, whatever their band; 19 on
/// the day (the player's own date) may.
async fn ontario_marketing_needs_nineteen_on_the_day(s: Backend) {
    let Some(r) = rig(s, FAST).await else { return };
    // Noon in Toronto on the rig's day.
    let toronto = jiff::tz::TimeZone::get("America/Toronto").unwrap();
    let day = noon_tomorrow().to_zoned_datetime(toronto.clone()).date();
    r.s.clock.set(day.at(12, 0, 0, 0).to_zoned_datetime(toronto).unwrap().timestamp());
    r.template("tpl_on", "casino", "Hi {{first_name}}").await;
    for (player, birth) in [
        // Turns 19 tomorrow.
        ("p_18", day.tomorrow().unwrap().checked_sub(19.years()).unwrap()),
        // Turns 19 today.
        ("p_19", day.checked_sub(19.years()).unwrap()),
    ] {
        let reg = event(
            &format!("reg_{player}"),
            "player.registered",
            player,
            json!({
            "jurisdiction": "CA-ON", "locale": "en-CA", "time_zone": "America/Toronto", "currency": "CAD",
            "email": format!("{player}@example.com"), "birth_date": birth.to_string()}),
        );
        assert_eq!(r.s.post(&r.platform, "/v1/events", &reg).await.0, 202);
        let consents = json!({"channels": {"email": true}, "products": {"casino": true}, "source": "signup"});
        assert_eq!(r.s.put(&r.platform, &format!("/v1/players/{player}/consents"), &consents).await.0, 200);
    }
    let (_, young) = r.send("on_1", &email("p_18", "tpl_on")).await;
    assert_eq!(status(&young), ("SUPPRESSED".into(), vec!["under_age".into()]), "{young}");
    let detail = young["reasons"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("age 18 is under 19"), "{detail}");
    let (_, of_age) = r.send("on_2", &email("p_19", "tpl_on")).await;
    assert_eq!(of_age["status"], "QUEUED", "{of_age}");
    r.s.stop().await;
}

/// Deferred answers are promises: during quiet hours, the sends that will not fit under the caps of the
/// morning they would go out are refused now, not suppressed then.
async fn deferred_sends_take_their_place_under_the_cap(s: Backend) {
    let Some(r) = rig(s, FAST).await else { return };
    r.player("p_night", "GB", "Europe/London").await;
    r.s.clock.set(noon_tomorrow() + jiff::SignedDuration::from_hours(11)); // 23:00 in London
    let mut answers = Vec::new();
    for n in 1..=5 {
        let template = format!("tpl_night_{n}");
        r.template(&template, "casino", "Tonight {{first_name}}").await;
        answers.push(status(&r.send(&format!("night_{n}"), &email("p_night", &template)).await.1));
    }
    let deferred = (String::from("DEFERRED"), vec![String::from("quiet_hours")]);
    let refused = (String::from("SUPPRESSED"), vec![String::from("cap_reached")]);
    // GB's pack allows two marketing messages a day.
    assert_eq!(answers, [deferred.clone(), deferred, refused.clone(), refused.clone(), refused]);
    r.s.stop().await;
}

/// The other way round: a day that is full does not refuse a message that will only go out tomorrow
/// morning.
async fn a_full_day_does_not_refuse_what_goes_out_tomorrow(s: Backend) {
    let Some(r) = rig(s, FAST).await else { return };
    r.player("p_full", "GB", "Europe/London").await;
    let mut answers = Vec::new();
    for n in 1..=3 {
        if n == 3 {
            r.s.clock.set(noon_tomorrow() + jiff::SignedDuration::from_hours(11)); // 23:00 in London
        }
        let template = format!("tpl_full_{n}");
        r.template(&template, "casino", "Hello {{first_name}}").await;
        let (_, answer) = r.send(&format!("full_{n}"), &email("p_full", &template)).await;
        if n < 3 {
            // Gone before the clock moves on (else the night would defer them into tomorrow too).
            r.wait_status(answer["delivery_id"].as_str().unwrap(), "SENT").await;
        }
        answers.push(status(&answer).0);
    }
    // GB allows two a day: both went at noon; the third waits for the morning, a new day.
    assert_eq!(answers, ["QUEUED", "QUEUED", "DEFERRED"]);
    r.s.stop().await;
}

/// An e-mail that may have reached the relay before a crash (dead-lettered `in_doubt`) keeps its place
/// under the caps: it may have been delivered.
async fn an_email_in_doubt_counts_against_the_caps(s: Backend) {
    let Some(mut r) = rig(s, "poll_ms = 50\nprovider_timeout_ms = 4000\nlease_ms = 9000").await else {
        return;
    };
    r.player("p_doubt", "GB", "Europe/London").await;
    for t in ["tpl_d1", "tpl_d2", "tpl_d3"] {
        r.template(t, "casino", "Offer for {{first_name}}").await;
    }
    r.email_in_doubt("d_1", &email("p_doubt", "tpl_d1")).await;
    // GB: two a day. The one in doubt is one of them.
    assert_eq!(r.send("d_2", &email("p_doubt", "tpl_d2")).await.1["status"], "QUEUED");
    let (_, third) = r.send("d_3", &email("p_doubt", "tpl_d3")).await;
    assert_eq!(status(&third), ("SUPPRESSED".into(), vec!["cap_reached".into()]), "{third}");
    r.s.stop().await;
}

/// Packs are data: shipped with their sources, changed only as a new version that a second compliance
/// officer approves, audited, in force from the approval on (also after a restart), and named in every
/// decision's basis.
async fn packs_change_only_through_approved_versions(s: Backend) {
    let Some(mut r) = rig(s, FAST).await else { return };
    let carla = r.s.key_of(pitboss::auth::Role::Compliance, &["A"], "Carla Compliance").await;
    let dave = r.s.key_of(pitboss::auth::Role::Compliance, &["A"], "Dave Compliance").await;
    let admin = r.s.key_of(pitboss::auth::Role::Admin, &["A"], "Ada Admin").await;
    let (st, all) = r.s.get(&carla, "/admin/packs").await;
    assert_eq!(st, 200, "{all}");
    let in_force = |all: &Value, pack: &str| {
        all["packs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["pack"] == pack && v["status"] == "in_force")
            .cloned()
            .unwrap()
    };
    let gb = in_force(&all, "GB");
    assert_eq!(gb["version"], "GB-2026.2");
    assert!(gb["document"]["min_age_marketing"]["source"].as_str().unwrap().contains("Gambling Act 2005"));
    assert_eq!(in_force(&all, "CA-ON")["document"]["min_age_marketing"]["value"], 19);

    // A stricter GB cap, proposed by Carla.
    let mut doc = gb["document"].clone();
    doc["version"] = json!("GB-2026.3");
    doc["max_marketing_per_day"] =
        json!({"value": 1, "source": "operator compliance policy, tightened after review"});
    assert_eq!(r.s.post(&r.marketing, "/admin/packs", &doc).await.0, 403, "marketing cannot propose");
    let mut unsourced = doc.clone();
    unsourced["quiet_hours"]["source"] = json!("");
    let (st, e) = r.s.post(&carla, "/admin/packs", &unsourced).await;
    assert_eq!((st, e["error"]["field"].as_str()), (422, Some("quiet_hours.source")), "{e}");
    let (st, v) = r.s.post(&carla, "/admin/packs", &doc).await;
    assert_eq!((st, v["status"].as_str()), (201, Some("proposed")), "{v}");
    assert_eq!(r.s.post(&carla, "/admin/packs", &doc).await.0, 409, "a version is never rewritten");

    // Not in force yet: two marketing e-mails go today.
    r.player("p_pack", "GB", "Europe/London").await;
    for t in ["tpl_p1", "tpl_p2", "tpl_p3"] {
        r.template(t, "casino", "Hi {{first_name}}").await;
    }
    let (_, first) = r.send("pk_1", &email("p_pack", "tpl_p1")).await;
    assert_eq!(first["status"], "QUEUED", "{first}");

    // Carla cannot approve her own proposal; Dave can, and it is in force at once.
    let approve = "/admin/packs/GB/versions/GB-2026.3/approve";
    let (st, e) = r.s.post(&carla, approve, &json!({})).await;
    assert_eq!((st, e["error"]["code"].as_str()), (403, Some("four_eyes")), "{e}");
    let (st, v) = r.s.post(&dave, approve, &json!({})).await;
    assert_eq!(
        (st, v["status"].as_str(), v["approved_by"].as_str()),
        (200, Some("in_force"), Some("Dave Compliance")),
        "{v}"
    );
    let (_, second) = r.send("pk_2", &email("p_pack", "tpl_p2")).await;
    assert_eq!(status(&second), ("SUPPRESSED".into(), vec!["cap_reached".into()]), "{second}");
    assert!(second["reasons"][0]["detail"].as_str().unwrap().contains("of 1"), "{second}");

    // In force after a restart too, and every step is in the audit log.
    r.s.restart().await;
    let (_, all) = r.s.get(&carla, "/admin/packs").await;
    assert_eq!(in_force(&all, "GB")["version"], "GB-2026.3");
    let (_, third) = r.send("pk_3", &email("p_pack", "tpl_p3")).await;
    assert_eq!(status(&third).0, "SUPPRESSED");
    let first = r.delivery(first["delivery_id"].as_str().unwrap()).await;
    assert_eq!(first["history"][0]["detail"]["basis"]["pack_version"], "GB-2026.2", "{first}");
    let (_, audit) = r.s.get(&admin, "/admin/audit").await;
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"pack.proposed") && actions.contains(&"pack.approved"), "{actions:?}");
    r.s.stop().await;
}

/// The catalogue's other rows that change contact, each posted and followed at once by a send: a new
/// time zone moves quiet hours, a new jurisdiction brings its pack, a new birth date its age, a limit
/// hit stops marketing for the day; a KYC change does not touch contact.
async fn catalogue_changes_count_for_the_next_send(s: Backend) {
    let Some(r) = rig(s, FAST).await else { return };
    r.player("p_cat", "GB", "Europe/London").await;
    let n = std::cell::Cell::new(0);
    let send = || {
        n.set(n.get() + 1);
        let (template, key) = (format!("tpl_cat_{}", n.get()), format!("cat_{}", n.get()));
        let r = &r;
        async move {
            r.template(&template, "casino", "Hi {{first_name}}").await;
            r.send(&key, &email("p_cat", &template)).await.1
        }
    };
    let update = |id: &str, payload: Value| event(id, "player.updated", "p_cat", payload);
    let rig = &r;
    let post = |e: Value| async move { assert_eq!(rig.s.post(&rig.platform, "/v1/events", &e).await.0, 202) };

    // Noon UTC: day in London; in Tokyo it is 21:00, quiet hours.
    post(update("u_tz", json!({"time_zone": "Asia/Tokyo"}))).await;
    let d = send().await;
    assert_eq!(status(&d), ("DEFERRED".into(), vec!["quiet_hours".into()]), "{d}");
    post(update("u_tz2", json!({"time_zone": "Europe/London"}))).await;
    // Malta's pack (three a day) in force for the next decision.
    post(update("u_mt", json!({"jurisdiction": "MT"}))).await;
    let d = send().await;
    assert_eq!(d["status"], "QUEUED", "{d}");
    let basis = r.delivery(d["delivery_id"].as_str().unwrap()).await["basis"].clone();
    assert_eq!(basis["pack_version"], "MT-2026.1", "{basis}");
    // KYC changes no contact rule.
    post(event("k_1", "kyc.status_changed", "p_cat", json!({"status": "rejected"}))).await;
    assert_eq!(send().await["status"], "QUEUED");
    // A birth date that makes the player 17 today.
    let today = noon_tomorrow().to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    let minor = today.checked_sub(jiff::Span::new().years(17)).unwrap();
    post(update("u_age", json!({"birth_date": minor.to_string()}))).await;
    let d = send().await;
    assert_eq!(status(&d), ("SUPPRESSED".into(), vec!["under_age".into()]), "{d}");
    post(update("u_age2", json!({"birth_date": "1990-05-17"}))).await;
    // After a hard bounce, the same address sent again stays invalid; a new one is tried.
    r.template("tpl_receipt", "transactional", "Receipt {{first_name}}").await;
    let receipt = |key: &'static str| {
        let r = &r;
        async move {
            r.send(key, &email("p_cat", "tpl_receipt")).await.1["delivery_id"].as_str().unwrap().to_string()
        }
    };
    let first = receipt("rc_1").await;
    r.wait_status(&first, "SENT").await;
    let bounce = json!({"delivery_id": first, "event": "hard_bounce", "occurred_at": "2026-11-23T12:01:00Z"});
    assert_eq!(r.s.post(&r.platform, "/v1/messaging/feedback", &bounce).await.0, 200);
    post(update("u_same", json!({"email": "p_cat@example.com"}))).await;
    let d = r.wait_status(&receipt("rc_2").await, "SUPPRESSED").await;
    assert_eq!(reasons(&d), ["contact_invalid"]);
    post(update("u_new", json!({"email": "p_cat.new@example.com"}))).await;
    r.wait_status(&receipt("rc_3").await, "SENT").await;
    assert_eq!(r.smtp.messages().last().unwrap().header("To").as_deref(), Some("p_cat.new@example.com"));
    // A limit hit today stops marketing today.
    let hit = event(
        "l_1",
        "rg.limit_hit",
        "p_cat",
        json!({"kind": "deposit", "period": "day", "amount_minor": 5000, "currency": "EUR"}),
    );
    let mut hit = hit;
    hit["occurred_at"] = json!(noon_tomorrow().to_string());
    post(hit).await;
    let d = send().await;
    assert_eq!(status(&d), ("SUPPRESSED".into(), vec!["limit_hit_today".into()]), "{d}");
    r.s.stop().await;
}

crate::on_both!(
    catalogue_changes_count_for_the_next_send,
    packs_change_only_through_approved_versions,
    unsubscribe_and_complaint_events_stop_the_next_send,
    overlapping_exclusions_each_hold,
    ontario_marketing_needs_nineteen_on_the_day,
    deferred_sends_take_their_place_under_the_cap,
    a_full_day_does_not_refuse_what_goes_out_tomorrow,
    an_email_in_doubt_counts_against_the_caps,
);
