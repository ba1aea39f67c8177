//! `/admin/templates` over real HTTP, on SQLite and PostgreSQL: per brand and locale, fallback
//! de-AT → de → default, a missing variable is an error, another brand sees nothing.

use crate::support;

use pitboss::auth::Role;
use serde_json::{Value, json};
use support::server::TestServer;

async fn templates_per_brand_and_locale(s: &TestServer) {
    let marketing = s.key_of(Role::Marketing, &["A"], "Mia Marketing").await;
    let (st, t) = s.put(&marketing, "/admin/templates/tpl_reengage_01/de", &json!({
        "topic": "casino", "subject": "{{first_name}}, wir vermissen dich", "body": "Hallo {{first_name}}, dein Bonus: {{offer_id}}"})).await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["variables"], json!(["first_name", "offer_id"]));
    assert_eq!(s.put(&marketing, "/admin/templates/tpl_reengage_01/default", &json!({
        "topic": "casino", "subject": "We miss you, {{first_name}}", "body": "Hi {{first_name}}, your bonus: {{offer_id}}"})).await.0, 200);

    let vars = json!({"first_name": "Alex", "offer_id": "of_777"});
    let marketing_key = marketing.as_str();
    let render = |locale: &str, vars: &Value| {
        let body = json!({"locale": locale, "personalization": vars});
        async move { s.post(marketing_key, "/admin/templates/tpl_reengage_01/render", &body).await }
    };
    let (st, r) = render("de-AT", &vars).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (r["locale"].as_str(), r["body"].as_str()),
        (Some("de"), Some("Hallo Alex, dein Bonus: of_777"))
    );
    assert_eq!(r["subject"], json!("Alex, wir vermissen dich"));
    let (_, r) = render("fr-FR", &vars).await;
    assert_eq!(
        (r["locale"].as_str(), r["body"].as_str()),
        (Some("default"), Some("Hi Alex, your bonus: of_777"))
    );
    let (st, e) = render("de", &json!({"first_name": "Alex"})).await;
    assert_eq!(
        (st, e["error"]["code"].as_str(), e["error"]["field"].as_str()),
        (422, Some("missing_variable"), Some("personalization.offer_id"))
    );

    // Deleting the German text: German players get the default.
    assert_eq!(s.delete(&marketing, "/admin/templates/tpl_reengage_01/de").await.0, 200);
    assert_eq!(render("de-AT", &vars).await.1["locale"], json!("default"));
    assert_eq!(s.delete(&marketing, "/admin/templates/tpl_reengage_01/de").await.0, 404);
    let (st, _) = s.post(&marketing, "/admin/templates/nope/render", &json!({"locale": "de"})).await;
    assert_eq!(st, 404);

    for (path, body, field) in [
        ("/admin/templates/t1/de", json!({"topic": "casino", "body": "Hi {{name"}), "body"),
        ("/admin/templates/t1/de", json!({"topic": "casino", "body": "x", "subject": "{{ }}"}), "subject"),
        ("/admin/templates/t1/German", json!({"topic": "casino", "body": "x"}), "locale"),
        ("/admin/templates/t%201/de", json!({"topic": "casino", "body": "x"}), "template_id"),
        ("/admin/templates/t1/de", json!({"topic": "lottery", "body": "x"}), "body"),
    ] {
        let (st, e) = s.put(&marketing, path, &body).await;
        assert_eq!(
            (st, e["error"]["code"].as_str(), e["error"]["field"].as_str()),
            (422, Some("invalid_template"), Some(field)),
            "{path} {body}"
        );
    }

    let platform = s.key_of(Role::Platform, &["A"], "PAM").await;
    assert_eq!(
        s.put(&platform, "/admin/templates/t1/de", &json!({"topic": "casino", "body": "x"})).await.0,
        403
    );
    let other = s.key_of(Role::Marketing, &["B"], "Ben").await;
    assert_eq!(
        s.post(&other, "/admin/templates/tpl_reengage_01/render?brand_id=A", &json!({"locale": "de"}))
            .await
            .0,
        404
    );
    let (_, mine) = s.get(&other, "/admin/templates").await;
    assert_eq!(mine["templates"], json!([]));
    let (_, all) = s.get(&marketing, "/admin/templates").await;
    assert_eq!(all["templates"].as_array().unwrap().len(), 1);

    let admin = s.key_of(Role::Admin, &["A"], "Ada").await;
    let (_, audit) = s.get(&admin, "/admin/audit").await;
    let puts = audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "template.put").count();
    assert_eq!(puts, 2);
}
both!(templates_per_brand_and_locale_sqlite_and_postgres, templates_per_brand_and_locale);

/// A template that would render into gigabytes is refused when saved; a rendering given huge values is
/// refused, never built; nothing of it is stored.
async fn template_bombs_are_refused(s: &TestServer) {
    let marketing = s.key(Role::Marketing, &["A"]).await;
    let platform = s.key(Role::Platform, &["A"]).await;
    // 1 MB of 200,000 placeholders.
    let bomb = json!({"topic": "casino", "body": "{{a}}".repeat(200_000)});
    let (st, e) = s.put(&marketing, "/admin/templates/tpl_bomb/default", &bomb).await;
    assert_eq!((st, e["error"]["code"].as_str()), (422, Some("template_too_large")), "{e}");
    let (st, e) = s
        .put(
            &marketing,
            "/admin/templates/tpl_bomb/default",
            &json!({"topic": "casino", "body": "x".repeat(100_000)}),
        )
        .await;
    assert_eq!((st, e["error"]["field"].as_str()), (422, Some("body")), "{e}");
    assert_eq!(s.get(&marketing, "/admin/templates").await.1["templates"], json!([]));

    // Within the limits, rendered with a 100 KB value: refused with the field named.
    let ok = json!({"topic": "transactional", "body": "{{a}}".repeat(200)});
    assert_eq!(s.put(&marketing, "/admin/templates/tpl_many/default", &ok).await.0, 200);
    let big = "x".repeat(100 * 1024);
    let body = json!({"locale": "en", "personalization": {"a": big}});
    let (st, e) = s.post(&marketing, "/admin/templates/tpl_many/render", &body).await;
    assert_eq!(
        (st, e["error"]["code"].as_str(), e["error"]["field"].as_str()),
        (422, Some("personalization_too_large"), Some("personalization.a")),
        "{e}"
    );
    let reg = support::registered("p_1", json!({"email": "p1@example.com"}));
    assert_eq!(s.post(&platform, "/v1/events", &reg).await.0, 202);
    // A send with `a` as the one personalization value: the error code it answers.
    let send_code = |key: &'static str, a: String| {
        let body = json!({"channel": "email", "player_id": "p_1", "template_id": "tpl_many", "personalization": {"a": a}});
        let request = s.http.post(format!("{}/v1/messaging/send", s.base)).bearer_auth(&platform);
        async move {
            let r = request.header("X-Idempotency-Key", key).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            let e: Value = r.json().await.unwrap();
            (status, e["error"]["code"].as_str().unwrap_or_default().to_string())
        }
    };
    assert_eq!(send_code("bomb_1", big).await, (422, "personalization_too_large".to_string()));
    // 4 KB values, 200 of them: 800 KB rendered, beyond the limit.
    assert_eq!(send_code("bomb_2", "y".repeat(4096)).await, (422, "rendered_too_large".to_string()));
    assert_eq!(s.count("SELECT COUNT(*) FROM deliveries").await, 0);
}

both!(template_bombs_are_refused_sqlite_and_postgres, template_bombs_are_refused);
