//! Message templates per brand and locale, with `{{name}}` placeholders. A locale falls back to its
//! language and then to the brand's default (de-AT → de → default). Rendering with a variable missing is
//! an error, never a blank.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::audit;
use crate::auth::Principal;
use crate::store::{Backend, Db, now_ms};

/// Most bytes of a template's body, and of its subject.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const MAX_SUBJECT_BYTES: usize = 1024;
/// Most placeholders (every use counts) in a template's body and subject together.
pub const MAX_PLACEHOLDERS: usize = 256;
/// Most personalization entries a rendering takes (and so most distinct placeholders a template may
/// have), most bytes of a name, and of each value.
pub const MAX_VARIABLES: usize = 64;
pub const MAX_NAME_BYTES: usize = 64;
pub const MAX_VALUE_BYTES: usize = 4 * 1024;
/// Most bytes a rendered subject or body may reach.
pub const MAX_RENDERED_BYTES: usize = 256 * 1024;

/// What a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    Transactional,
    RgInformational,
    Casino,
    Sports,
    Poker,
    Bingo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    pub topic: Topic,
    #[serde(default)]
    pub subject: Option<String>,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Template {
    pub template_id: String,
    pub locale: String,
    pub topic: Topic,
    pub subject: Option<String>,
    pub body: String,
    pub variables: Vec<String>,
    pub updated_at: i64,
    pub updated_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendered {
    pub template_id: String,
    /// The locale actually used (after fallback).
    pub locale: String,
    pub topic: Topic,
    pub subject: Option<String>,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Not well formed (an unclosed `{{`, a name that is not one); `field` says which text.
    #[error("{message}")]
    Invalid { message: String, field: &'static str },
    #[error("no template `{0}` for this brand in this locale, its language or the default")]
    NotFound(String),
    #[error("personalization lacks `{0}`")]
    MissingVariable(String),
    /// Beyond one of the published limits: `code` names which (`template_too_large`,
    /// `personalization_too_large`, `rendered_too_large`), `field` what was too large.
    #[error("{message}")]
    TooLarge { code: &'static str, field: String, message: String },
}

fn unclosed(field: &'static str) -> TemplateError {
    TemplateError::Invalid { message: "an unclosed `{{`".into(), field }
}

fn too_large(code: &'static str, field: impl Into<String>, message: String) -> TemplateError {
    TemplateError::TooLarge { code, field: field.into(), message }
}

/// The placeholders of a text, in order of first use; an unclosed or empty one is an error, and so are
/// more than [`MAX_PLACEHOLDERS`] uses. Linear in the text.
#[cfg(test)]
fn placeholders(text: &str) -> Result<Vec<String>, TemplateError> {
    let mut uses = MAX_PLACEHOLDERS;
    scan(text, "body", &mut uses)
}

/// `placeholders`, spending `uses` (what is left of the limit) and naming `field` when it runs out.
fn scan(text: &str, field: &'static str, uses: &mut usize) -> Result<Vec<String>, TemplateError> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        if *uses == 0 {
            return Err(too_large(
                "template_too_large",
                field,
                format!("more than {MAX_PLACEHOLDERS} placeholders in body and subject"),
            ));
        }
        *uses -= 1;
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| unclosed(field))?;
        let name = after[..end].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            let message = format!("`{{{{{name}}}}}` is not a placeholder name");
            return Err(TemplateError::Invalid { message, field });
        }
        if seen.insert(name) {
            out.push(name.to_string());
        }
        rest = &after[end + 2..];
    }
    Ok(out)
}

/// Checks a template against the limits and returns its variables (body first, then the subject's).
pub fn variables_of(input: &TemplateInput) -> Result<Vec<String>, TemplateError> {
    if input.body.len() > MAX_BODY_BYTES {
        return Err(too_large(
            "template_too_large",
            "body",
            format!("body: more than {MAX_BODY_BYTES} bytes"),
        ));
    }
    let subject = input.subject.as_deref().unwrap_or("");
    if subject.len() > MAX_SUBJECT_BYTES {
        return Err(too_large(
            "template_too_large",
            "subject",
            format!("subject: more than {MAX_SUBJECT_BYTES} bytes"),
        ));
    }
    // One budget of uses for both texts.
    let mut uses = MAX_PLACEHOLDERS;
    let mut variables = scan(&input.body, "body", &mut uses)?;
    for v in scan(subject, "subject", &mut uses)? {
        if !variables.contains(&v) {
            variables.push(v);
        }
    }
    // A rendering takes at most this many values: a template needing more could never render.
    if variables.len() > MAX_VARIABLES {
        return Err(too_large(
            "template_too_large",
            "body",
            format!("more than {MAX_VARIABLES} distinct placeholders"),
        ));
    }
    Ok(variables)
}

/// Checks what a rendering is given against the limits.
pub fn check_personalization(vars: &BTreeMap<String, String>) -> Result<(), TemplateError> {
    if vars.len() > MAX_VARIABLES {
        return Err(too_large(
            "personalization_too_large",
            "personalization",
            format!("more than {MAX_VARIABLES} entries"),
        ));
    }
    match vars.iter().find(|(k, v)| k.len() > MAX_NAME_BYTES || v.len() > MAX_VALUE_BYTES) {
        Some((k, _)) => Err(too_large(
            "personalization_too_large",
            format!("personalization.{}", k.chars().take(MAX_NAME_BYTES).collect::<String>()),
            format!("a name is at most {MAX_NAME_BYTES} bytes, a value at most {MAX_VALUE_BYTES} bytes"),
        )),
        None => Ok(()),
    }
}

/// Fills the placeholders; the result never grows beyond [`MAX_RENDERED_BYTES`] (a refusal instead).
fn fill(text: &str, vars: &BTreeMap<String, String>, field: &'static str) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len().min(MAX_RENDERED_BYTES));
    let push = |out: &mut String, piece: &str| {
        if out.len() + piece.len() > MAX_RENDERED_BYTES {
            return Err(too_large(
                "rendered_too_large",
                field,
                format!("{field}: the rendered text would pass {MAX_RENDERED_BYTES} bytes"),
            ));
        }
        out.push_str(piece);
        Ok(())
    };
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        push(&mut out, &rest[..start])?;
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| unclosed(field))?;
        let name = after[..end].trim();
        push(&mut out, vars.get(name).ok_or_else(|| TemplateError::MissingVariable(name.to_string()))?)?;
        rest = &after[end + 2..];
    }
    push(&mut out, rest)?;
    Ok(out)
}

/// The locales tried for `locale`, most specific first.
pub fn fallbacks(locale: &str) -> Vec<String> {
    let mut out = vec![locale.to_string()];
    let mut l = locale;
    while let Some((head, _)) = l.rsplit_once('-') {
        out.push(head.to_string());
        l = head;
    }
    out.push("default".to_string());
    out.dedup();
    out
}

fn row_to_template(r: &sqlx::any::AnyRow) -> anyhow::Result<Template> {
    Ok(Template {
        template_id: r.try_get("template_id")?,
        locale: r.try_get("locale")?,
        topic: serde_json::from_value(serde_json::Value::String(r.try_get("topic")?))?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        variables: serde_json::from_str(&r.try_get::<String, _>("variables")?)?,
        updated_at: r.try_get("updated_at")?,
        updated_by: r.try_get("updated_by")?,
    })
}

const COLUMNS: &str = "template_id, locale, topic, subject, body, variables, updated_at, updated_by";

/// Creates or replaces one locale of a template.
pub async fn put(
    db: &Db,
    actor: &Principal,
    brand: &str,
    template_id: &str,
    locale: &str,
    input: &TemplateInput,
) -> anyhow::Result<Result<Template, TemplateError>> {
    let variables = match variables_of(input) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "INSERT INTO templates (brand_id, template_id, locale, topic, subject, body, variables, updated_at, updated_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (brand_id, template_id, locale) DO UPDATE SET topic = excluded.topic, subject = excluded.subject,
             body = excluded.body, variables = excluded.variables, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
    )
    .bind(brand)
    .bind(template_id)
    .bind(locale)
    .bind(crate::model::wire_name(input.topic))
    .bind(input.subject.as_deref())
    .bind(&input.body)
    .bind(serde_json::to_string(&variables)?)
    .bind(now_ms())
    .bind(&actor.holder)
    .execute(&mut *tx)
    .await?;
    let detail = serde_json::json!({"locale": locale, "topic": input.topic, "variables": variables});
    audit::record(&mut tx, actor, "template.put", template_id, &[brand.to_string()], detail).await?;
    tx.commit().await?;
    let mut conn = db.pool.acquire().await?;
    Ok(Ok(first_of(&mut conn, brand, template_id, &[locale.to_string()]).await?.expect("just written")))
}

/// The template in the first of `locales` it exists in, found in one query.
async fn first_of(
    conn: &mut sqlx::AnyConnection,
    brand: &str,
    template_id: &str,
    locales: &[String],
) -> anyhow::Result<Option<Template>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM templates WHERE brand_id = $1 AND template_id = $2 AND {}",
        crate::store::one_of(Backend::of(conn), "locale", 3)
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(brand).bind(template_id);
    let mut found: Vec<Template> = query
        .bind(crate::store::json_list(locales))
        .fetch_all(conn)
        .await?
        .iter()
        .map(row_to_template)
        .collect::<Result<_, _>>()?;
    found.sort_by_key(|t| locales.iter().position(|l| *l == t.locale));
    Ok(found.into_iter().next())
}

/// Every locale of every template of a brand.
pub async fn list(db: &Db, brand: &str) -> anyhow::Result<Vec<Template>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM templates WHERE brand_id = $1 ORDER BY template_id, locale"
    )))
    .bind(brand)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(row_to_template).collect()
}

pub async fn delete(
    db: &Db,
    actor: &Principal,
    brand: &str,
    template_id: &str,
    locale: &str,
) -> anyhow::Result<bool> {
    let mut tx = db.begin_write().await?;
    let done = sqlx::query("DELETE FROM templates WHERE brand_id = $1 AND template_id = $2 AND locale = $3")
        .bind(brand)
        .bind(template_id)
        .bind(locale)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    audit::record(
        &mut tx,
        actor,
        "template.delete",
        template_id,
        &[brand.to_string()],
        serde_json::json!({"locale": locale}),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Renders a template for a locale (with fallback); every placeholder must be given.
pub async fn render(
    conn: &mut sqlx::AnyConnection,
    brand: &str,
    template_id: &str,
    locale: &str,
    vars: &BTreeMap<String, String>,
) -> anyhow::Result<Result<Rendered, TemplateError>> {
    if let Err(e) = check_personalization(vars) {
        return Ok(Err(e));
    }
    let Some(t) = first_of(conn, brand, template_id, &fallbacks(locale)).await? else {
        return Ok(Err(TemplateError::NotFound(template_id.to_string())));
    };
    Ok((|| {
        Ok(Rendered {
            subject: t.subject.as_deref().map(|s| fill(s, vars, "subject")).transpose()?,
            body: fill(&t.body, vars, "body")?,
            template_id: t.template_id,
            locale: t.locale,
            topic: t.topic,
        })
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found_and_checked() {
        assert_eq!(
            placeholders("Hi {{first_name}}, {{ offer.percent }}% — {{first_name}}!").unwrap(),
            ["first_name", "offer.percent"]
        );
        assert!(placeholders("Hi {{name").is_err());
        assert!(placeholders("Hi {{}}").is_err());
        assert!(placeholders("Hi {{a b}}").is_err());
    }

    #[test]
    fn a_missing_variable_is_an_error_not_a_blank() {
        let vars: BTreeMap<String, String> = [("first_name".to_string(), "Alex".to_string())].into();
        assert_eq!(fill("Hi {{first_name}}!", &vars, "body").unwrap(), "Hi Alex!");
        assert_eq!(
            fill("{{first_name}}: {{offer_id}}", &vars, "body").unwrap_err(),
            TemplateError::MissingVariable("offer_id".into())
        );
    }

    #[test]
    fn a_template_bomb_is_refused_not_rendered() {
        // 200,000 uses of one placeholder: refused at save, after reading only what it must.
        let bomb = "{{a}}".repeat(200_000);
        let input = TemplateInput { topic: Topic::Casino, subject: None, body: bomb.clone() };
        assert!(matches!(
            variables_of(&input),
            Err(TemplateError::TooLarge { code: "template_too_large", .. })
        ));
        assert!(matches!(placeholders(&bomb), Err(TemplateError::TooLarge { .. })));
        // Many distinct names: linear, and refused past the limit.
        let distinct: String = (0..100_000).map(|i| format!("{{{{v{i}}}}}")).collect();
        let started = std::time::Instant::now();
        assert!(placeholders(&distinct).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // A stored template within the limits, rendered with large values, stops at the rendered limit.
        let vars: BTreeMap<String, String> = [("a".to_string(), "x".repeat(MAX_VALUE_BYTES))].into();
        let body = "{{a}}".repeat(MAX_PLACEHOLDERS);
        assert!(matches!(
            fill(&body, &vars, "body"),
            Err(TemplateError::TooLarge { code: "rendered_too_large", .. })
        ));
        // The budget of uses is shared by body and subject, and the subject is named when it runs out.
        let split = TemplateInput {
            topic: Topic::Casino,
            subject: Some("{{a}}".repeat(10)),
            body: "{{a}}".repeat(MAX_PLACEHOLDERS - 5),
        };
        assert!(
            matches!(variables_of(&split), Err(TemplateError::TooLarge { field, .. }) if field == "subject")
        );
        // More distinct names than a rendering takes: refused at save, not left unrenderable.
        let many = TemplateInput {
            topic: Topic::Casino,
            subject: None,
            body: (0..=MAX_VARIABLES).map(|i| format!("{{{{v{i}}}}}")).collect(),
        };
        assert!(matches!(variables_of(&many), Err(TemplateError::TooLarge { .. })));
        let big: BTreeMap<String, String> = [("a".to_string(), "x".repeat(100 * 1024))].into();
        assert!(matches!(
            check_personalization(&big),
            Err(TemplateError::TooLarge { code: "personalization_too_large", .. })
        ));
    }

    #[test]
    fn locales_fall_back_to_their_language_then_the_default() {
        assert_eq!(fallbacks("de-AT"), ["de-AT", "de", "default"]);
        assert_eq!(fallbacks("zh-Hant-TW"), ["zh-Hant-TW", "zh-Hant", "zh", "default"]);
        assert_eq!(fallbacks("default"), ["default"]);
    }
}
