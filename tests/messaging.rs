//! The send path end to end, over real HTTP, on SQLite and PostgreSQL: `POST /v1/messaging/send`
//! through the gate into the outbox, workers delivering by real SMTP (to a sink that speaks SMTP) and to
//! real HTTP providers (signed with HMAC, with failover), the in-app inbox, feedback and webhooks, and
//! the delivery's explanation afterwards.

use crate::support;

use std::time::Duration;

use pitboss::auth::Role;
use serde_json::{Value, json};
use support::provider::Behaviour;
use support::rig::*;
use support::server::Backend;

async fn email_goes_out_with_its_basis(s: Backend) {
    let Some(r) = rig(s, FAST).await else { return };
    r.player("p_mail", "GB", "Europe/London").await;
    r.template(
        "tpl_reengage_01",
        "casino",
        "Hi {{first_name}}, your offer {{offer_id}} is waiting. Ünïcode ✓",
    )
    .await;

    let (st, sent) = r.send("msg_001", &email("p_mail", "tpl_reengage_01")).await;
    assert_eq!(st, 202, "{sent}");
    assert_eq!(sent["status"], "QUEUED");
    let id = sent["delivery_id"].as_str().unwrap().to_string();

    let mails = r.smtp.wait_for(1, Duration::from_secs(10)).await;
    let mail = &mails[0];
    assert_eq!(mail.rcpt_to, ["p_mail@example.com"]);
    assert_eq!(mail.subject().as_deref(), Some("Hello Alex"));
    assert_eq!(mail.body(), "Hi Alex, your offer of_777 is waiting. Ünïcode ✓");
    assert_eq!(mail.header("X-Pitboss-Delivery-Id").as_deref(), Some(id.as_str()));
    assert_eq!(mail.header("Message-ID"), Some(format!("<{id}@pitboss>")));
    let unsubscribe = mail.header("List-Unsubscribe").unwrap();
    assert!(unsubscribe.contains(&format!("<https://a.example/unsubscribe/{id}>")), "{unsubscribe}");
    assert!(unsubscribe.contains("mailto:unsubscribe@a.example"), "{unsubscribe}");
    assert_eq!(mail.header("List-Unsubscribe-Post").as_deref(), Some("List-Unsubscribe=One-Click"));

    // On what basis did we send this?
    let d = r.wait_status(&id, "SENT").await;
    let basis = &d["basis"];
    assert_eq!(basis["consent_version"], 1, "{d}");
    assert_eq!(basis["pack_version"], "GB-2026.2");
    assert_eq!(basis["frequency_policy"], "fp_test");
    assert!(
        basis["caps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["cap"] == "marketing_per_day" && c["used"] == 1 && c["limit"] == 2),
        "{basis}"
    );
    let steps: Vec<&str> =
        d["history"].as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap()).collect();
    assert_eq!(steps, ["queued", "sending", "sent"], "{d}");
    assert_eq!(d["history"][1]["detail"]["gate"], "send", "the gate was asked again before sending");
    assert_eq!((d["provider"].as_str(), d["attempts"].as_i64()), (Some("smtp"), Some(1)));
    assert!(d.get("body").is_none(), "the content is not part of the explanation");

    // The same key again: the same delivery, nothing new sent. Another body: 409.
    let (st, again) = r.send("msg_001", &email("p_mail", "tpl_reengage_01")).await;
    assert_eq!((st, again["delivery_id"].as_str()), (202, Some(id.as_str())));
    let mut other = email("p_mail", "tpl_reengage_01");
    other["personalization"]["first_name"] = json!("Sam");
    let (st, e) = r.send("msg_001", &other).await;
    assert_eq!((st, e["error"]["code"].as_str()), (409, Some("idempotency_conflict")));

    // The same template again within the dedup window is suppressed, with its reason.
    let (st, dup) = r.send("msg_002", &email("p_mail", "tpl_reengage_01")).await;
    assert_eq!((st, dup["status"].as_str()), (202, Some("SUPPRESSED")));
    assert_eq!(reasons(&dup), ["duplicate"]);

    // A transactional message needs no marketing consent and is not capped.
    r.template("tpl_kyc", "transactional", "Your documents were verified, {{first_name}}.").await;
    let put = json!({"channels": {"email": false}});
    assert_eq!(r.s.put(&r.platform, "/v1/players/p_mail/consents", &put).await.0, 200);
    let (_, kyc) = r.send("msg_003", &email("p_mail", "tpl_kyc")).await;
    assert_eq!(kyc["status"], "QUEUED", "{kyc}");
    r.smtp.wait_for(2, Duration::from_secs(10)).await;
    let (_, mkt) = r.send("msg_004", &email("p_mail", "tpl_reengage_01")).await;
    assert!(reasons(&mkt).contains(&"no_consent".to_string()), "{mkt}");

    // The player's deliveries, newest first, each with its status and reasons.
    let (st, list) = r.s.get(&r.marketing, "/v1/players/p_mail/deliveries").await;
    assert_eq!(st, 200, "{list}");
    let statuses: Vec<&str> =
        list["deliveries"].as_array().unwrap().iter().map(|d| d["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.len(), 4, "{list}");
    assert_eq!(statuses[0], "SUPPRESSED");
    assert!(statuses[1] == "SENT" || statuses[1] == "SENDING" || statuses[1] == "QUEUED", "{list}");

    // The same new key sent ten times at once: one delivery.
    let r = std::sync::Arc::new(r);
    let same = (0..10).map(|_| {
        let r = r.clone();
        tokio::spawn(async move { r.send("msg_same", &email("p_mail", "tpl_kyc")).await })
    });
    let mut ids = Vec::new();
    for t in same {
        let (st, v) = t.await.unwrap();
        assert_eq!(st, 202, "{v}");
        ids.push(v["delivery_id"].as_str().unwrap().to_string());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one delivery for one key");
    let Ok(r) = std::sync::Arc::try_unwrap(r) else { panic!("a send task still holds the rig") };

    // Bad requests: each a clear error, nothing stored.
    let before = r.s.count("SELECT COUNT(*) FROM deliveries").await;
    let no_key = r.s.post(&r.platform, "/v1/messaging/send", &email("p_mail", "tpl_kyc")).await;
    assert_eq!((no_key.0, no_key.1["error"]["code"].as_str()), (400, Some("idempotency_key_required")));
    for (body, status, code, field) in [
        (email("p_nobody", "tpl_kyc"), 404, "not_found", None),
        (email("p_mail", "tpl_nope"), 422, "unknown_template", Some("template_id")),
        (
            json!({"channel": "email", "player_id": "p_mail", "template_id": "tpl_kyc"}),
            422,
            "missing_variable",
            Some("personalization.first_name"),
        ),
        (
            json!({"channel": "fax", "player_id": "p_mail", "template_id": "tpl_kyc"}),
            422,
            "invalid_message",
            Some("channel"),
        ),
        (json!({"channel": "email", "player_id": "p_mail"}), 422, "invalid_message", Some("template_id")),
        (
            json!({"channel": "email", "player_id": "p_mail", "template_id": "tpl_kyc", "colour": "red"}),
            422,
            "invalid_message",
            Some("colour"),
        ),
        (
            json!({"channel": "email", "player_id": "p_mail", "template_id": "tpl_kyc", "personalization": {"n": 1}}),
            422,
            "invalid_message",
            Some("personalization"),
        ),
        (
            json!({"channel": "email", "player_id": "p_mail", "template_id": "tpl_kyc", "priority": "urgent"}),
            422,
            "invalid_message",
            Some("priority"),
        ),
        (
            json!({"channel": "phone", "player_id": "p_mail", "template_id": "tpl_kyc"}),
            422,
            "invalid_message",
            Some("channel"),
        ),
        (
            json!({"channel": "email", "player_id": "p_mail", "template_id": "tpl_kyc", "frequency_policy_id": "fp_nope",
                "personalization": {"first_name": "A"}}),
            422,
            "invalid_message",
            Some("frequency_policy_id"),
        ),
    ] {
        let (st, e) = r.send("msg_bad", &body).await;
        assert_eq!(
            (st, e["error"]["code"].as_str(), e["error"]["field"].as_str()),
            (status, Some(code), field),
            "{body}"
        );
    }
    assert_eq!(r.s.count("SELECT COUNT(*) FROM deliveries").await, before);

    // Another brand's key sees nothing of it.
    let other_brand = r.s.key(Role::Platform, &["B"]).await;
    assert_eq!(r.s.get(&other_brand, &format!("/v1/deliveries/{id}")).await.0, 404);
    let open = json!({"delivery_id": id, "event": "open", "occurred_at": "2026-11-23T12:00:00Z"});
    assert_eq!(r.s.post(&other_brand, "/v1/messaging/feedback", &open).await.0, 404);
    assert_eq!(r.s.get(&other_brand, "/v1/players/p_mail/inbox?brand_id=A").await.0, 404);
    let resp =
        r.s.http
            .post(format!("{}/v1/messaging/send", r.s.base))
            .bearer_auth(&other_brand)
            .header("X-Idempotency-Key", "b_1")
            .json(&email("p_mail", "tpl_kyc"))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status().as_u16(), 404, "brand B has no such player");
    let mut to_a = email("p_mail", "tpl_kyc");
    to_a["brand_id"] = json!("A");
    let resp =
        r.s.http
            .post(format!("{}/v1/messaging/send", r.s.base))
            .bearer_auth(&other_brand)
            .header("X-Idempotency-Key", "b_2")
            .json(&to_a)
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status().as_u16(), 404, "nor may it name brand A");
    r.s.stop().await;
}

async fn caps_are_exact_under_concurrency(s: Backend) {
    let Some(r) = rig(s, FAST).await else { return };
    r.player("p_cap", "MT", "Europe/Malta").await;
    r.template("tpl_promo", "casino", "Promo for {{first_name}}").await;
    let r = std::sync::Arc::new(r);
    let sends = (0..100).map(|i| {
        let r = r.clone();
        tokio::spawn(async move {
            let body = json!({"channel": "in_app", "player_id": "p_cap", "template_id": "tpl_promo",
                              "personalization": {"first_name": "Kim"}, "frequency_policy_id": "fp_cap3"});
            r.send(&format!("cap_{i}"), &body).await
        })
    });
    let (mut queued, mut capped, mut cap_reasons) = (0, 0, 0);
    for t in sends {
        let (st, v) = t.await.unwrap();
        assert_eq!(st, 202, "{v}");
        match v["status"].as_str().unwrap() {
            "QUEUED" => queued += 1,
            "SUPPRESSED" => {
                // The policy's 3 a day on this channel (and MT's legal 3 a day, reached at the same time).
                assert!(reasons(&v).iter().all(|r| r == "cap_reached"), "{v}");
                assert!(
                    v["reasons"][0]["detail"].as_str().unwrap().starts_with("channel_per_day: 3 of 3"),
                    "{v}"
                );
                capped += 1;
                cap_reasons += reasons(&v).len();
            }
            other => panic!("{other}: {v}"),
        }
    }
    assert_eq!((queued, capped), (3, 97));
    // A high-priority message has caps of its own; the pack's legal cap (MT: 3 a day) still holds.
    let body = json!({"channel": "in_app", "player_id": "p_cap", "template_id": "tpl_promo",
                      "personalization": {"first_name": "Kim"}, "frequency_policy_id": "fp_cap3", "priority": "high"});
    let (_, high) = r.send("cap_high", &body).await;
    assert_eq!(reasons(&high), ["cap_reached"], "{high}");
    assert!(high["reasons"][0]["detail"].as_str().unwrap().starts_with("marketing_per_day"), "{high}");
    cap_reasons += 1;

    // The three went to the inbox; reading one records an open.
    support::eventually("three messages in the inbox", Duration::from_secs(5), || async {
        let (_, inbox) = r.s.get(&r.platform, "/v1/players/p_cap/inbox").await;
        (inbox["messages"].as_array().unwrap().len() == 3).then_some(())
    })
    .await;
    let (st, inbox) = r.s.get(&r.platform, "/v1/players/p_cap/inbox").await;
    assert_eq!(st, 200);
    let messages = inbox["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{inbox}");
    assert_eq!(messages[0]["body"], "Promo for Kim");
    assert_eq!(messages[0]["read_at"], Value::Null);
    let first = messages[0]["delivery_id"].as_str().unwrap();
    let (st, read) =
        r.s.post(&r.platform, &format!("/v1/players/p_cap/inbox/{first}/read"), &json!({})).await;
    assert_eq!((st, read["event"].as_str()), (200, Some("open")), "{read}");
    let (_, inbox) = r.s.get(&r.platform, "/v1/players/p_cap/inbox").await;
    assert_ne!(inbox["messages"][0]["read_at"], Value::Null);
    assert_eq!(
        r.s.post(&r.platform, &format!("/v1/players/p_other/inbox/{first}/read"), &json!({})).await.0,
        404
    );

    // The metrics say what happened.
    let text = r.s.http.get(format!("{}/metrics", r.s.base)).send().await.unwrap().text().await.unwrap();
    let refusals = format!("pitboss_gate_refusals_total{{reason=\"cap_reached\"}} {cap_reasons}");
    assert!(text.contains(&refusals), "{refusals} in {text}");
    assert!(
        text.contains(
            "pitboss_delivery_attempts_total{channel=\"in_app\",provider=\"inbox\",outcome=\"accepted\"} 3"
        ),
        "{text}"
    );
    assert!(text.contains("pitboss_send_to_provider_seconds_count{channel=\"in_app\"} 3"), "{text}");
    assert!(text.contains("pitboss_outbox_depth{status=\"queued\"} 0"), "{text}");
    match std::sync::Arc::try_unwrap(r) {
        Ok(r) => r.s.stop().await,
        Err(_) => panic!("a send task still holds the rig"),
    }
}

async fn push_and_sms_are_signed_and_fail_over(s: Backend) {
    let Some(r) = rig(s, FAST).await else { return };
    r.player("p_push", "GB", "Europe/London").await;
    r.template("tpl_push", "casino", "Spins for {{first_name}}").await;
    r.push[0].set_behaviour(Behaviour::Fail);
    let body = json!({"channel": "push", "player_id": "p_push", "template_id": "tpl_push",
                      "personalization": {"first_name": "Lee"}, "campaign_id": "cmp_1", "frequency_policy_id": "fp_test"});
    let (_, sent) = r.send("push_1", &body).await;
    let id = sent["delivery_id"].as_str().unwrap().to_string();
    let accepted = r.push[1].wait_for(1, Duration::from_secs(10)).await;
    let call = &accepted[0];
    assert!(call.signature_valid, "the second provider verified our HMAC");
    assert_eq!(call.idempotency_key.as_deref(), Some(id.as_str()));
    assert_eq!(
        (call.body["to"].as_str(), call.body["body"].as_str()),
        (Some("p_push"), Some("Spins for Lee"))
    );
    let failed = r.push[0].received();
    assert_eq!(failed.len(), 1, "the first provider was tried first");
    assert!(failed[0].signature_valid);
    let d = r.wait_status(&id, "SENT").await;
    assert_eq!(d["provider"], "push-two");
    let sent = d["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(sent["detail"]["failed_over"], json!(["push-one: HTTP 500"]), "{d}");

    // A provider that does not answer in time (2 s here) is given up for the next one.
    r.push[0].set_behaviour(Behaviour::AcceptThenHang(Duration::from_secs(30)));
    r.template("tpl_alert", "transactional", "Your withdrawal went out, {{first_name}}").await;
    let alert = json!({"channel": "push", "player_id": "p_push", "template_id": "tpl_alert", "personalization": {"first_name": "Lee"}});
    let (_, sent) = r.send("push_alert", &alert).await;
    let d = r.wait_status(sent["delivery_id"].as_str().unwrap(), "SENT").await;
    assert_eq!(d["provider"], "push-two", "{d}");
    assert_eq!(
        d["history"].as_array().unwrap().last().unwrap()["detail"]["failed_over"],
        json!(["push-one: timed out"])
    );
    assert_eq!(r.push[0].received().len(), 2);
    assert_eq!(r.push[1].accepted().len(), 2);

    // The campaign waits its cooldown (72 h) before reaching the player again, on any channel.
    r.template("tpl_push2", "casino", "More spins, {{first_name}}").await;
    let mut again = body.clone();
    again["template_id"] = json!("tpl_push2");
    again["channel"] = json!("email");
    let (_, later) = r.send("push_2", &again).await;
    assert_eq!(
        (later["status"].as_str(), reasons(&later)),
        (Some("DEFERRED"), vec!["campaign_cooldown".to_string()])
    );
    let three_days = r.s.clock.now() + jiff::SignedDuration::from_hours(72);
    assert!(later["deliver_after"].as_str().unwrap() <= three_days.to_string().as_str(), "{later}");

    // SMS goes to the player's phone number, signed with that provider's secret.
    r.template("tpl_code", "transactional", "Your code, {{first_name}}: 1234").await;
    let sms = json!({"channel": "sms", "player_id": "p_push", "template_id": "tpl_code", "personalization": {"first_name": "Lee"}});
    let (_, sent) = r.send("sms_1", &sms).await;
    let sms_id = sent["delivery_id"].as_str().unwrap().to_string();
    let got = r.sms.wait_for(1, Duration::from_secs(10)).await;
    assert!(got[0].signature_valid);
    assert_eq!(got[0].body["to"], "+447700900123");
    r.wait_status(&sms_id, "SENT").await;

    // The provider reports delivery through its signed webhook; replays and forgeries are refused.
    let webhook = |provider: &'static str, secret: &'static str, payload: Value, at: i64| {
        let r = &r;
        async move {
            let body = payload.to_string();
            let ts = at.to_string();
            let resp =
                r.s.http
                    .post(format!("{}/v1/webhooks/{provider}", r.s.base))
                    .header("X-Pitboss-Timestamp", &ts)
                    .header("X-Pitboss-Signature", support::provider::sign(secret, &ts, body.as_bytes()))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let now = r.s.clock.now().as_second();
    let delivered =
        json!({"delivery_id": sms_id, "event": "delivered", "occurred_at": r.s.clock.now().to_string()});
    let (st, v) = webhook("sms-one", SECRET_SMS, delivered.clone(), now).await;
    assert_eq!(
        (st, v["status"].as_str(), v["duplicate"].as_bool()),
        (200, Some("delivered"), Some(false)),
        "{v}"
    );
    let (st, v) = webhook("sms-one", SECRET_SMS, delivered.clone(), now).await;
    assert_eq!((st, v["duplicate"].as_bool()), (200, Some(true)), "the same report twice changes nothing");
    assert_eq!(webhook("sms-one", "wrong", delivered.clone(), now).await.1["error"]["code"], "bad_signature");
    assert_eq!(
        webhook("sms-one", SECRET_SMS, delivered.clone(), now - 3600).await.1["error"]["code"],
        "stale_webhook"
    );
    let not_theirs =
        json!({"delivery_id": id, "event": "delivered", "occurred_at": r.s.clock.now().to_string()});
    assert_eq!(
        webhook("sms-one", SECRET_SMS, not_theirs, now).await.0,
        404,
        "a provider reports only on its own deliveries"
    );
    assert_eq!(webhook("nobody", SECRET_SMS, delivered, now).await.0, 404);
    r.wait_status(&sms_id, "DELIVERED").await;

    // A complaint about the push withdraws push marketing consent at once.
    let complaint =
        json!({"delivery_id": id, "event": "complaint", "occurred_at": r.s.clock.now().to_string()});
    let (st, v) = r.s.post(&r.platform, "/v1/messaging/feedback", &complaint).await;
    assert_eq!((st, v["consent_version"].as_i64()), (200, Some(2)), "{v}");
    let (_, p) = r.s.get(&r.platform, "/v1/players/p_push").await;
    assert_eq!(p["consents"]["channels"], json!(["email", "in_app", "sms"]), "{p}");
    r.s.stop().await;
}

async fn unsubscribe_and_bounce_stop_what_follows(s: Backend) {
    let Some(r) = rig(s, FAST).await else { return };
    r.player("p_unsub", "GB", "Europe/London").await;
    r.template("tpl_a", "casino", "A for {{first_name}}").await;
    r.template("tpl_b", "casino", "B for {{first_name}}").await;
    r.template("tpl_receipt", "transactional", "Withdrawal processed, {{first_name}}").await;
    let (_, first) = r.send("u_1", &email("p_unsub", "tpl_a")).await;
    let id = first["delivery_id"].as_str().unwrap().to_string();
    r.wait_status(&id, "SENT").await;

    let unsubscribe =
        json!({"delivery_id": id, "event": "unsubscribe", "occurred_at": "2026-11-23T12:00:00Z"});
    let (st, v) = r.s.post(&r.platform, "/v1/messaging/feedback", &unsubscribe).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["consent_version"], 2);
    let (_, again) = r.s.post(&r.platform, "/v1/messaging/feedback", &unsubscribe).await;
    assert_eq!((again["duplicate"].as_bool(), again["consent_version"].as_i64()), (Some(true), None));
    let (_, history) = r.s.get(&r.platform, "/v1/players/p_unsub/consents/history").await;
    let last = history["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["name"].as_str(), last["granted"].as_bool(), last["source"].as_str()),
        (Some("email"), Some(false), Some("feedback:unsubscribe"))
    );

    // The next marketing e-mail is suppressed, and says why.
    let (_, next) = r.send("u_2", &email("p_unsub", "tpl_b")).await;
    assert_eq!(
        (next["status"].as_str(), reasons(&next)),
        (Some("SUPPRESSED"), vec!["no_consent".to_string()])
    );
    let d = r.delivery(next["delivery_id"].as_str().unwrap()).await;
    assert_eq!(d["history"][0]["detail"]["decision"], "deny");

    // A hard bounce marks the address invalid: even a transactional e-mail is not sent to it.
    let bounce = json!({"delivery_id": id, "event": "hard_bounce", "occurred_at": "2026-11-23T12:01:00Z"});
    assert_eq!(r.s.post(&r.platform, "/v1/messaging/feedback", &bounce).await.1["status"], "bounced");
    let (_, receipt) = r.send("u_3", &email("p_unsub", "tpl_receipt")).await;
    let d = r.wait_status(receipt["delivery_id"].as_str().unwrap(), "SUPPRESSED").await;
    assert_eq!(reasons(&d), ["contact_invalid"]);
    assert_eq!(r.smtp.messages().len(), 1);
    let bad = json!({"delivery_id": id, "event": "opened", "occurred_at": "2026-11-23T12:01:00Z"});
    assert_eq!(
        r.s.post(&r.platform, "/v1/messaging/feedback", &bad).await.1["error"]["code"],
        "invalid_feedback"
    );
    let unknown = json!({"delivery_id": "dlv_nope", "event": "open", "occurred_at": "2026-11-23T12:01:00Z"});
    assert_eq!(r.s.post(&r.platform, "/v1/messaging/feedback", &unknown).await.0, 404);
    r.s.stop().await;
}

async fn quiet_hours_in_the_players_zone_defer(s: Backend) {
    let Some(r) = rig(s, FAST).await else { return };
    r.player("p_night", "CA-ON", "America/Toronto").await;
    r.template("tpl_n", "casino", "Night owl {{first_name}}").await;

    // 03:00 UTC is 22:00 (EST) or 23:00 (EDT) in Toronto: quiet until 08:00 local the next day.
    let night = noon_tomorrow() - jiff::SignedDuration::from_hours(9);
    r.s.clock.set(night);
    let (_, d) = r.send("n_1", &email("p_night", "tpl_n")).await;
    assert_eq!((d["status"].as_str(), reasons(&d)), (Some("DEFERRED"), vec!["quiet_hours".to_string()]));
    let toronto = jiff::tz::TimeZone::get("America/Toronto").unwrap();
    let local_night = night.to_zoned_datetime(toronto.clone());
    let morning =
        local_night.date().tomorrow().unwrap().at(8, 0, 0, 0).to_zoned_datetime(toronto).unwrap().timestamp();
    assert_eq!(d["deliver_after"], json!(morning.to_string()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(r.smtp.messages().is_empty(), "deferred, not sent");
    r.s.clock.set(morning + jiff::SignedDuration::from_mins(1));
    let id = d["delivery_id"].as_str().unwrap();
    let sent = r.wait_status(id, "SENT").await;
    assert_eq!(sent["basis"]["pack_version"], "ON-2026.2", "allowed when it was due, with its basis");
    assert_eq!(r.smtp.messages().len(), 1);
    r.s.stop().await;
}

async fn exclusion_after_queueing_stops_the_message(s: Backend) {
    // Retries wait long enough for the exclusion to land in between.
    let Some(r) = rig(
        s,
        "backoff_initial_ms = 60000
max_attempts = 5
poll_ms = 50
provider_timeout_ms = 2000
lease_ms = 5000",
    )
    .await
    else {
        return;
    };
    r.player("p_excl", "GB", "Europe/London").await;
    r.template("tpl_n", "casino", "Hello {{first_name}}").await;
    // Queued, the relay refuses for now, the player self-excludes: the retry sends nothing.
    r.smtp.reject_data_with(Some(451));
    let (_, q) = r.send("x_1", &email("p_excl", "tpl_n")).await;
    assert_eq!(q["status"], "QUEUED");
    let id = q["delivery_id"].as_str().unwrap().to_string();
    support::eventually("the relay refusing the first try", Duration::from_secs(4), || async {
        (!r.smtp.rejected().is_empty()).then_some(())
    })
    .await;
    let excl = json!({"event_id": "excl_1", "event_type": "self_exclusion.started", "player_id": "p_excl",
        "brand_id": "A", "occurred_at": "2026-11-01T11:00:00Z", "payload": {"scope": "brand", "register": "GAMSTOP"}});
    assert_eq!(r.s.post(&r.platform, "/v1/events", &excl).await.0, 202);
    r.s.settled().await;
    r.smtp.reject_data_with(None);
    r.wait_status(&id, "QUEUED").await;
    r.s.clock.advance(jiff::SignedDuration::from_mins(2));
    let d = r.wait_status(&id, "SUPPRESSED").await;
    assert_eq!(reasons(&d), ["self_excluded"], "{d}");
    assert!(r.smtp.messages().is_empty(), "nothing reached the player");
    assert_eq!(d["history"].as_array().unwrap().last().unwrap()["detail"]["gate"], "send");
    r.s.stop().await;
}

async fn a_delivery_that_always_breaks_ends_in_the_dead_letter(s: Backend) {
    let Some(r) = rig(s, FAST).await else { return };
    r.template("tpl_p", "casino", "Hi {{first_name}}").await;
    r.s.clock.set(noon_tomorrow() + jiff::SignedDuration::from_hours(11)); // night in London: deferred
    // Six messages due at once, so that their turns' writes go to the worker's writer together.
    let mut ids = Vec::new();
    for i in 0..6 {
        let player = format!("p_poison_{i}");
        r.player(&player, "GB", "Europe/London").await;
        let (_, q) = r.send(&format!("p_{i}"), &email(&player, "tpl_p")).await;
        assert_eq!(q["status"], "DEFERRED");
        ids.push(q["delivery_id"].as_str().unwrap().to_string());
    }
    let id = &ids[0];
    // A row the worker cannot read (as a bad migration or a hand edit could leave it).
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE deliveries SET product = 'lottery' WHERE delivery_id = '{id}'"
    )))
    .execute(&r.s.db.pool)
    .await
    .unwrap();
    r.s.clock.set(noon_tomorrow() + jiff::SignedDuration::from_hours(24));
    let d = r.wait_status(id, "DEAD_LETTER").await;
    assert_eq!(d["attempts"], 3, "{d}");
    assert!(d["last_error"].as_str().unwrap().contains("internal error"), "{d}");
    // It held back none of the others.
    for other in &ids[1..] {
        r.wait_status(other, "SENT").await;
    }
    assert_eq!(r.smtp.messages().len(), 5);
    r.s.stop().await;
}

async fn retries_back_off_then_dead_letter(s: Backend) {
    let Some(r) = rig(s, FAST).await else { return };
    r.player("p_retry", "GB", "Europe/London").await;
    r.template("tpl_r", "transactional", "Receipt for {{first_name}}").await;
    r.smtp.reject_data_with(Some(451));
    let (_, q) = r.send("r_1", &email("p_retry", "tpl_r")).await;
    let id = q["delivery_id"].as_str().unwrap().to_string();
    let d = r.wait_status(&id, "DEAD_LETTER").await;
    assert_eq!(d["attempts"], 3, "max_attempts = 3: {d}");
    assert_eq!(reasons(&d), Vec::<String>::new());
    let history = d["history"].as_array().unwrap();
    let retries: Vec<&Value> =
        history.iter().filter(|h| h["detail"]["next_attempt_at"].is_string()).collect();
    assert_eq!(retries.len(), 2, "{d}");
    let waits: Vec<i64> =
        retries.iter().map(|h| ms(&h["detail"]["next_attempt_at"]) - ms(&h["at"])).collect();
    assert_eq!(waits, [50, 100], "exponential backoff from 50 ms");
    assert_eq!(history.last().unwrap()["detail"]["reasons"][0]["code"], "attempts_exhausted");
    assert_eq!(r.smtp.rejected().len(), 3);

    // A permanent refusal is not retried.
    r.smtp.reject_data_with(Some(550));
    let (_, q) = r.send("r_2", &email("p_retry", "tpl_r")).await;
    let d = r.wait_status(q["delivery_id"].as_str().unwrap(), "DEAD_LETTER").await;
    assert_eq!(d["attempts"], 1);
    assert_eq!(
        d["history"].as_array().unwrap().last().unwrap()["detail"]["reasons"][0]["code"],
        "permanent_failure"
    );
    r.s.stop().await;
}

async fn a_crash_mid_call_sends_once(s: Backend) {
    // The provider accepts and then takes its time answering; the host dies meanwhile.
    let Some(mut r) = rig(s, "poll_ms = 50\nprovider_timeout_ms = 4000\nlease_ms = 9000").await else {
        return;
    };
    r.player("p_crash", "GB", "Europe/London").await;
    r.template("tpl_c", "casino", "Hi {{first_name}}").await;
    r.push[0].set_behaviour(Behaviour::AcceptThenHang(Duration::from_secs(30)));
    let body = json!({"channel": "push", "player_id": "p_crash", "template_id": "tpl_c", "personalization": {"first_name": "Ty"}});
    let (_, q) = r.send("c_1", &body).await;
    let id = q["delivery_id"].as_str().unwrap().to_string();
    r.push[0].wait_for(1, Duration::from_secs(10)).await;
    r.s.crash().await;
    let status: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT status FROM deliveries WHERE delivery_id = '{id}'"
    )))
    .fetch_one(&r.s.db.pool)
    .await
    .unwrap();
    assert_eq!(status, "sending", "the crash left it in flight");

    r.push[0].set_behaviour(Behaviour::Accept);
    r.s.start_again().await;
    // Past the dead worker's lease, a new worker takes it and calls with the same idempotency key.
    r.s.clock.advance(jiff::SignedDuration::from_secs(10));
    let d = r.wait_status(&id, "SENT").await;
    assert_eq!(r.push[0].received().len(), 2, "called again after the crash");
    assert_eq!(r.push[0].accepted().len(), 1, "but accepted once");
    assert!(r.push[0].received().iter().all(|c| c.idempotency_key.as_deref() == Some(id.as_str())));
    assert_eq!(d["provider"], "push-one");
    assert!(r.push[1].received().is_empty());
    r.s.stop().await;
}

async fn an_email_in_doubt_is_never_sent_twice(s: Backend) {
    // The relay takes the message but its answer has not arrived when the host dies: sending again could
    // make a second copy (SMTP has no idempotency key), so the delivery is dead-lettered as in doubt.
    let Some(mut r) = rig(s, "poll_ms = 50\nprovider_timeout_ms = 4000\nlease_ms = 9000").await else {
        return;
    };
    r.player("p_doubt", "GB", "Europe/London").await;
    r.template("tpl_d", "transactional", "Receipt for {{first_name}}").await;
    let d = r.email_in_doubt("d_1", &email("p_doubt", "tpl_d")).await;
    assert_eq!(
        d["history"].as_array().unwrap().last().unwrap()["detail"]["reasons"][0]["code"],
        "in_doubt",
        "{d}"
    );
    assert_eq!(r.smtp.messages().len(), 1, "one copy, never two");
    r.s.stop().await;
}

async fn provider_calls_at_once_stay_within_concurrency(s: Backend) {
    // Two calls at once: the worker keeps more deliveries in hand, but the provider never sees a third.
    let Some(r) = rig(s, &format!("{FAST}\nconcurrency = 2")).await else { return };
    for i in 0..4 {
        r.player(&format!("p_calls_{i}"), "GB", "Europe/London").await;
    }
    r.template("tpl_calls", "transactional", "Code for {{first_name}}").await;
    r.push[0].set_behaviour(Behaviour::AcceptThenHang(Duration::from_millis(300)));
    let mut ids = Vec::new();
    for i in 0..12 {
        let body = json!({"channel": "push", "player_id": format!("p_calls_{}", i % 4), "template_id": "tpl_calls",
                          "personalization": {"first_name": "Jo"}});
        let (st, q) = r.send(&format!("calls_{i}"), &body).await;
        assert_eq!(st, 202, "{q}");
        ids.push(q["delivery_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        r.wait_status(id, "SENT").await;
    }
    assert_eq!(r.push[0].accepted().len(), 12);
    assert_eq!(r.push[0].most_at_once(), 2, "as many calls at once as `concurrency`, never more");
    r.s.stop().await;
}

async fn a_turn_that_cannot_call_within_its_lease_gives_it_back(s: Backend) {
    // One call at a time, each taking 1.5 s; the lease (5 s) leaves 1 s beyond an attempt (two push
    // providers × 2 s): the delivery that waits for the call gives its lease back rather than call late.
    let Some(r) = rig(s, &format!("{FAST}\nconcurrency = 1")).await else { return };
    r.player("p_lease", "GB", "Europe/London").await;
    r.template("tpl_lease", "transactional", "Code for {{first_name}}").await;
    r.push[0].set_behaviour(Behaviour::AcceptThenHang(Duration::from_millis(1500)));
    let mut ids = Vec::new();
    for i in 0..2 {
        let body = json!({"channel": "push", "player_id": "p_lease", "template_id": "tpl_lease",
                          "personalization": {"first_name": "Jo"}});
        let (st, q) = r.send(&format!("lease_{i}"), &body).await;
        assert_eq!(st, 202, "{q}");
        ids.push(q["delivery_id"].as_str().unwrap().to_string());
    }
    let mut gave_back = 0;
    for id in &ids {
        let d = r.wait_status(id, "SENT").await;
        assert_eq!(d["attempts"], 1, "giving the lease back uses no attempt: {d}");
        gave_back += d["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["detail"]["waiting"].as_str().is_some_and(|w| w.contains("lease")))
            .count();
    }
    assert!(gave_back >= 1, "the second waited past its lease's margin and gave it back");
    assert_eq!(r.push[0].accepted().len(), 2);
    assert_eq!(r.push[0].most_at_once(), 1);
    r.s.stop().await;
}

async fn two_hosts_send_each_message_once(s: Backend) {
    let Some(r) = rig(s, FAST).await else { return };
    let (second, stop, task) = r.s.second_host().await;
    for i in 0..10 {
        r.player(&format!("p_multi_{i}"), "GB", "Europe/London").await;
    }
    r.template("tpl_m", "transactional", "Code for {{first_name}}").await;
    let mut ids = Vec::new();
    for i in 0..40 {
        // Half of the sends reach each host; both hosts' workers race for every delivery.
        let base = if i % 2 == 0 { r.s.base.clone() } else { second.clone() };
        let body = json!({"channel": "push", "player_id": format!("p_multi_{}", i % 10), "template_id": "tpl_m",
                          "personalization": {"first_name": "Jo"}});
        let resp =
            r.s.http
                .post(format!("{base}/v1/messaging/send"))
                .bearer_auth(&r.platform)
                .header("X-Idempotency-Key", format!("m_{i}"))
                .json(&body)
                .send()
                .await
                .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        ids.push(resp.json::<Value>().await.unwrap()["delivery_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        r.wait_status(id, "SENT").await;
    }
    let calls = r.push[0].received();
    assert_eq!(calls.len(), 40, "one call per delivery, not one per host");
    let mut keys: Vec<String> = calls.iter().filter_map(|c| c.idempotency_key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 40);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    r.s.stop().await;
}

on_both!(
    email_goes_out_with_its_basis,
    caps_are_exact_under_concurrency,
    push_and_sms_are_signed_and_fail_over,
    unsubscribe_and_bounce_stop_what_follows,
    quiet_hours_in_the_players_zone_defer,
    exclusion_after_queueing_stops_the_message,
    retries_back_off_then_dead_letter,
    a_delivery_that_always_breaks_ends_in_the_dead_letter,
    a_crash_mid_call_sends_once,
    an_email_in_doubt_is_never_sent_twice,
    two_hosts_send_each_message_once,
    provider_calls_at_once_stay_within_concurrency,
    a_turn_that_cannot_call_within_its_lease_gives_it_back,
);
