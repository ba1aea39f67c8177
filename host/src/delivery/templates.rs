//! Message templates per brand and locale, with `{{name}}` placeholders. A locale falls back to its
//! language and then to the brand's default (de-AT → de → default). Rendering with a variable missing is
//! an error, never a blank.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::audit;
use crate::auth::Principal;
use crate::store::{Db, now_ms};

/// What a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    Transactional,
    RgInformational,
    Casino,
    Sports,
    Poker,
    Bingo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    #[error("{0}")]
    Invalid(String),
    #[error("no template `{0}` for this brand in this locale, its language or the default")]
    NotFound(String),
    #[error("personalization lacks `{0}`")]
    MissingVariable(String),
}

/// The placeholders of a text, in order of first use; an unclosed or empty one is an error.
pub fn placeholders(text: &str) -> Result<Vec<String>, TemplateError> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| TemplateError::Invalid("an unclosed `{{`".into()))?;
        let name = after[..end].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            return Err(TemplateError::Invalid(format!("`{{{{{name}}}}}` is not a placeholder name")));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
        rest = &after[end + 2..];
    }
    Ok(out)
}

fn fill(text: &str, vars: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| TemplateError::Invalid("an unclosed `{{`".into()))?;
        let name = after[..end].trim();
        out.push_str(vars.get(name).ok_or_else(|| TemplateError::MissingVariable(name.to_string()))?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
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
) -> Result<Template, anyhow::Error> {
    let mut variables = placeholders(&input.body)?;
    for v in placeholders(input.subject.as_deref().unwrap_or(""))? {
        if !variables.contains(&v) {
            variables.push(v);
        }
    }
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
    audit::record(&mut tx, db.backend, actor, "template.put", template_id, &[brand.to_string()], detail)
        .await?;
    tx.commit().await?;
    Ok(get_exact(db, brand, template_id, locale).await?.expect("just written"))
}

async fn get_exact(
    db: &Db,
    brand: &str,
    template_id: &str,
    locale: &str,
) -> anyhow::Result<Option<Template>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM templates WHERE brand_id = $1 AND template_id = $2 AND locale = $3"
    )))
    .bind(brand)
    .bind(template_id)
    .bind(locale)
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(row_to_template).transpose()
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
        db.backend,
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
    db: &Db,
    brand: &str,
    template_id: &str,
    locale: &str,
    vars: &BTreeMap<String, String>,
) -> anyhow::Result<Result<Rendered, TemplateError>> {
    for candidate in fallbacks(locale) {
        if let Some(t) = get_exact(db, brand, template_id, &candidate).await? {
            let rendered = (|| {
                Ok(Rendered {
                    template_id: t.template_id.clone(),
                    locale: t.locale.clone(),
                    topic: t.topic,
                    subject: t.subject.as_deref().map(|s| fill(s, vars)).transpose()?,
                    body: fill(&t.body, vars)?,
                })
            })();
            return Ok(rendered);
        }
    }
    Ok(Err(TemplateError::NotFound(template_id.to_string())))
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
        assert_eq!(fill("Hi {{first_name}}!", &vars).unwrap(), "Hi Alex!");
        assert_eq!(
            fill("{{first_name}}: {{offer_id}}", &vars).unwrap_err(),
            TemplateError::MissingVariable("offer_id".into())
        );
    }

    #[test]
    fn locales_fall_back_to_their_language_then_the_default() {
        assert_eq!(fallbacks("de-AT"), ["de-AT", "de", "default"]);
        assert_eq!(fallbacks("zh-Hant-TW"), ["zh-Hant-TW", "zh-Hant", "zh", "default"]);
        assert_eq!(fallbacks("default"), ["default"]);
    }
}
