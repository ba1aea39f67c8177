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
