//! The outbox's rows: deliveries, their status history and feedback. Statuses (lower case here, upper
//! case in the API): `queued` (allowed, waiting for a worker), `deferred` (waiting for a time the gate
//! named), `sending` (claimed by a worker under a lease), `sent` (a provider accepted it, or it is in the
//! inbox), `delivered`, `bounced`, `suppressed` (the gate refused it), `dead_letter` (gave up).

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::Db;

/// Where a delivery stands; lower case in the database, upper case in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Queued,
    Deferred,
    Sending,
    Sent,
    Delivered,
    Bounced,
    Suppressed,
    DeadLetter,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Queued,
        Status::Deferred,
        Status::Sending,
        Status::Sent,
        Status::Delivered,
        Status::Bounced,
        Status::Suppressed,
        Status::DeadLetter,
    ];

    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Deferred => "deferred",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Bounced => "bounced",
            Status::Suppressed => "suppressed",
            Status::DeadLetter => "dead_letter",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A delivery as stored (the rendered content stays out of API answers; only the inbox shows it).
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub delivery_id: String,
    pub brand_id: String,
    pub player_id: String,
    #[serde(skip)]
    pub idempotency_key: String,
    #[serde(skip)]
    pub request_hash: String,
    pub channel: String,
    pub template_id: String,
    pub locale: String,
    pub class: String,
    pub product: Option<String>,
    pub bonus_offer: bool,
    pub priority: String,
    pub campaign_id: Option<String>,
    pub frequency_policy: String,
    #[serde(skip)]
    pub subject: Option<String>,
    #[serde(skip)]
    pub body: Option<String>,
    /// Upper case in the API (QUEUED, SENT).
    pub status: Status,
    pub reasons: Value,
    pub basis: Option<Value>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub counted_at: Option<i64>,
    pub attempts: i64,
    #[serde(serialize_with = "rfc3339_opt")]
    pub next_attempt_at: Option<i64>,
    #[serde(skip)]
    pub lease_until: Option<i64>,
    #[serde(skip)]
    pub provider_call_at: Option<i64>,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    pub last_error: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: i64,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: i64,
    #[serde(serialize_with = "rfc3339_opt")]
    pub read_at: Option<i64>,
    /// When the host accepted the event that caused it (a trigger's send), for event → provider latency.
    #[serde(skip)]
    pub caused_at: Option<i64>,
}

/// Times are milliseconds in the database and RFC 3339 in the API, as everywhere else.
fn rfc3339<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    match jiff::Timestamp::from_millisecond(*ms) {
        Ok(t) => s.collect_str(&t),
        Err(_) => s.serialize_i64(*ms),
    }
}

fn rfc3339_opt<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => rfc3339(ms, s),
        None => s.serialize_none(),
    }
}

const COLUMNS: &str = "delivery_id, brand_id, player_id, idempotency_key, request_hash, channel, template_id, locale,
    class, product, bonus_offer, priority, campaign_id, frequency_policy, subject, body, status, reasons, basis,
    counted_at, attempts, next_attempt_at, lease_until, provider_call_at, provider, provider_message_id,
    last_error, created_at, updated_at, read_at, caused_at";

fn row_to_delivery(r: &sqlx::any::AnyRow) -> anyhow::Result<Delivery> {
    let json = |s: Option<String>| -> anyhow::Result<Option<Value>> {
        Ok(s.map(|s| serde_json::from_str(&s)).transpose()?)
    };
    Ok(Delivery {
        delivery_id: r.try_get("delivery_id")?,
        brand_id: r.try_get("brand_id")?,
        player_id: r.try_get("player_id")?,
        idempotency_key: r.try_get("idempotency_key")?,
        request_hash: r.try_get("request_hash")?,
        channel: r.try_get("channel")?,
        template_id: r.try_get("template_id")?,
        locale: r.try_get("locale")?,
        class: r.try_get("class")?,
        product: r.try_get("product")?,
        bonus_offer: r.try_get::<i64, _>("bonus_offer")? != 0,
        priority: r.try_get("priority")?,
        campaign_id: r.try_get("campaign_id")?,
        frequency_policy: r.try_get("frequency_policy")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        status: {
            let s: String = r.try_get("status")?;
            Status::parse(&s)
                .ok_or_else(|| anyhow::anyhow!("a delivery status `{s}` this host does not know"))?
        },
        reasons: json(r.try_get("reasons")?)?.unwrap_or(Value::Array(vec![])),
        basis: json(r.try_get("basis")?)?,
        counted_at: r.try_get("counted_at")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        lease_until: r.try_get("lease_until")?,
        provider_call_at: r.try_get("provider_call_at")?,
        provider: r.try_get("provider")?,
        provider_message_id: r.try_get("provider_message_id")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        read_at: r.try_get("read_at")?,
        caused_at: r.try_get("caused_at")?,
    })
}

pub async fn get(conn: &mut sqlx::AnyConnection, delivery_id: &str) -> anyhow::Result<Option<Delivery>> {
    let row =
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM deliveries WHERE delivery_id = $1")))
            .bind(delivery_id)
            .fetch_optional(&mut *conn)
            .await?;
    row.as_ref().map(row_to_delivery).transpose()
}

pub async fn by_key(
    conn: &mut sqlx::AnyConnection,
    brand: &str,
    key: &str,
) -> anyhow::Result<Option<Delivery>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deliveries WHERE brand_id = $1 AND idempotency_key = $2"
    )))
    .bind(brand)
    .bind(key)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(row_to_delivery).transpose()
}

/// A player's latest deliveries, newest first: all of them, or the in-app messages that reached the
/// inbox.
pub async fn for_player(db: &Db, brand: &str, player: &str, inbox: bool) -> anyhow::Result<Vec<Delivery>> {
    let which = if inbox { "AND channel = 'in_app' AND status IN ('sent', 'delivered')" } else { "" };
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deliveries WHERE brand_id = $1 AND player_id = $2 {which}
         ORDER BY created_at DESC, delivery_id LIMIT 200"
    )))
    .bind(brand)
    .bind(player)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(row_to_delivery).collect()
}

/// Takes the player's send lock until the transaction ends (PostgreSQL: a row lock; SQLite's write
/// transaction is exclusive already, and the row is written all the same).
pub async fn lock_player(conn: &mut sqlx::AnyConnection, brand: &str, player: &str) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO send_locks (brand_id, player_id, sends) VALUES ($1, $2, 1)
         ON CONFLICT (brand_id, player_id) DO UPDATE SET sends = send_locks.sends + 1",
    )
    .bind(brand)
    .bind(player)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A message that counts against the player's caps (allowed and neither suppressed nor given up).
#[derive(Debug, Clone)]
pub struct Counted {
    pub delivery_id: String,
    pub channel: String,
    pub class: String,
    pub priority: String,
    pub template_id: String,
    pub campaign_id: Option<String>,
    pub counted_at: i64,
}

pub async fn counted_since(
    conn: &mut sqlx::AnyConnection,
    brand: &str,
    player: &str,
    since_ms: i64,
) -> anyhow::Result<Vec<Counted>> {
    let rows = sqlx::query(
        "SELECT delivery_id, channel, class, priority, template_id, campaign_id, counted_at FROM deliveries
         WHERE brand_id = $1 AND player_id = $2 AND counted_at >= $3
         AND (status NOT IN ('suppressed', 'dead_letter') OR in_doubt = 1)",
    )
    .bind(brand)
    .bind(player)
    .bind(since_ms)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Counted {
                delivery_id: r.try_get("delivery_id")?,
                channel: r.try_get("channel")?,
                class: r.try_get("class")?,
                priority: r.try_get("priority")?,
                template_id: r.try_get("template_id")?,
                campaign_id: r.try_get("campaign_id")?,
                counted_at: r.try_get("counted_at")?,
            })
        })
        .collect()
}

/// A new delivery, as the send path writes it.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub delivery_id: &'a str,
    pub brand: &'a str,
    pub player: &'a str,
    pub idempotency_key: &'a str,
    pub request_hash: &'a str,
    pub channel: &'a str,
    pub template_id: &'a str,
    pub locale: &'a str,
    pub class: &'a str,
    pub product: Option<&'a str>,
    pub bonus_offer: bool,
    pub priority: &'a str,
    pub campaign_id: Option<&'a str>,
    pub frequency_policy: &'a str,
    pub subject: Option<&'a str>,
    pub body: &'a str,
    pub caused_at: Option<i64>,
}

/// Writes a new delivery and answers it as written; None (nothing written) if its idempotency key is
/// taken.
pub async fn insert(
    conn: &mut sqlx::AnyConnection,
    d: &NewDelivery<'_>,
    gate: &Gated,
    now: i64,
) -> anyhow::Result<Option<Delivery>> {
    let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO deliveries (delivery_id, brand_id, player_id, idempotency_key, request_hash, channel,
             template_id, locale, class, product, bonus_offer, priority, campaign_id, frequency_policy, subject,
             body, status, reasons, basis, counted_at, attempts, next_attempt_at, created_at, updated_at, caused_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, 0, $21, $22, $22, $23)
         ON CONFLICT (brand_id, idempotency_key) DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(d.delivery_id)
    .bind(d.brand)
    .bind(d.player)
    .bind(d.idempotency_key)
    .bind(d.request_hash)
    .bind(d.channel)
    .bind(d.template_id)
    .bind(d.locale)
    .bind(d.class)
    .bind(d.product)
    .bind(i64::from(d.bonus_offer))
    .bind(d.priority)
    .bind(d.campaign_id)
    .bind(d.frequency_policy)
    .bind(d.subject)
    .bind(d.body)
    .bind(gate.status.as_str())
    .bind(gate.reasons.to_string())
    .bind(gate.basis.as_ref().map(Value::to_string))
    .bind(gate.counted_at)
    .bind(gate.next_attempt_at)
    .bind(now)
    .bind(d.caused_at)
    .fetch_optional(&mut *conn)
    .await?;
    inserted.as_ref().map(row_to_delivery).transpose()
}

/// What the gate made of a delivery, as stored.
#[derive(Debug, Clone)]
pub struct Gated {
    pub status: Status,
    pub reasons: Value,
    pub basis: Option<Value>,
    pub counted_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
}

/// Writes the gate's verdict on an existing delivery (the check right before sending). On allow, the
/// provider call is marked as started in the same write: if the host dies after this, the delivery is
/// known to be in doubt.
pub async fn regated(
    conn: &mut sqlx::AnyConnection,
    delivery_id: &str,
    gate: &Gated,
    provider_call: bool,
    now: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE deliveries SET status = $2, reasons = $3, basis = COALESCE($4, basis),
             counted_at = CASE WHEN $2 = 'deferred' THEN $5 ELSE COALESCE(counted_at, $5) END, next_attempt_at = $6,
             provider_call_at = CASE WHEN $7 = 1 THEN $8 ELSE provider_call_at END, updated_at = $8
         WHERE delivery_id = $1",
    )
    .bind(delivery_id)
    .bind(gate.status.as_str())
    .bind(gate.reasons.to_string())
    .bind(gate.basis.as_ref().map(Value::to_string))
    .bind(gate.counted_at)
    .bind(gate.next_attempt_at)
    .bind(i64::from(provider_call))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// How a worker's turn with a delivery ended, as it is written.
pub struct TurnEnd<'a> {
    pub status: Status,
    /// A provider was called (an attempt is counted).
    pub attempted: bool,
    pub provider: Option<&'a str>,
    pub provider_message_id: Option<&'a str>,
    pub error: Option<&'a str>,
    pub next_attempt_at: Option<i64>,
    /// Replace the reasons (a refusal); none keeps them.
    pub reasons: Option<Value>,
    /// Dead-lettered because it may have reached the relay: it keeps its place under the caps.
    pub in_doubt: bool,
}

/// Writes how a turn ended: the new status, the attempt, the provider's answer; the lease and the mark of
/// a provider call in flight are cleared.
pub async fn end_turn(
    conn: &mut sqlx::AnyConnection,
    delivery_id: &str,
    t: &TurnEnd<'_>,
    now: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE deliveries SET status = $2, attempts = attempts + $3, provider = COALESCE($4, provider),
             provider_message_id = COALESCE($5, provider_message_id), last_error = COALESCE($6, last_error),
             next_attempt_at = $7, reasons = COALESCE($8, reasons), lease_until = NULL, provider_call_at = NULL,
             updated_at = $9, in_doubt = $10
         WHERE delivery_id = $1",
    )
    .bind(delivery_id)
    .bind(t.status.as_str())
    .bind(i64::from(t.attempted))
    .bind(t.provider)
    .bind(t.provider_message_id)
    .bind(t.error)
    .bind(t.next_attempt_at)
    .bind(t.reasons.as_ref().map(Value::to_string))
    .bind(now)
    .bind(i64::from(t.in_doubt))
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a feedback report once; false if the same report was seen before.
pub async fn record_feedback(
    conn: &mut sqlx::AnyConnection,
    delivery_id: &str,
    event: &str,
    occurred_at: i64,
    source: &str,
    now: i64,
) -> anyhow::Result<bool> {
    Ok(sqlx::query(
        "INSERT INTO delivery_feedback (delivery_id, event, occurred_at, received_at, source)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(delivery_id)
    .bind(event)
    .bind(occurred_at)
    .bind(now)
    .bind(source)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// An in-app message read (the first time counts).
pub async fn mark_read(conn: &mut sqlx::AnyConnection, delivery_id: &str, at: i64) -> anyhow::Result<()> {
    sqlx::query("UPDATE deliveries SET read_at = COALESCE(read_at, $2) WHERE delivery_id = $1")
        .bind(delivery_id)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves a delivery's status to `to` if it is one of `from` now; whether it moved.
pub async fn advance(
    conn: &mut sqlx::AnyConnection,
    delivery_id: &str,
    from: &[Status],
    to: Status,
    now: i64,
) -> anyhow::Result<bool> {
    // Status names are this module's own, never input: safe in the text.
    let from = from.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
    let moved = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE deliveries SET status = $2, updated_at = $3 WHERE delivery_id = $1 AND status IN ({from})"
    )))
    .bind(delivery_id)
    .bind(to.as_str())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// One line of a delivery's history.
pub async fn event(
    conn: &mut sqlx::AnyConnection,
    delivery_id: &str,
    at: i64,
    status: &str,
    detail: Value,
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO delivery_events (delivery_id, at, status, detail) VALUES ($1, $2, $3, $4)")
        .bind(delivery_id)
        .bind(at)
        .bind(status)
        .bind(detail.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryLine {
    #[serde(serialize_with = "rfc3339")]
    pub at: i64,
    pub status: String,
    pub detail: Value,
}

pub async fn history(db: &Db, delivery_id: &str) -> anyhow::Result<Vec<HistoryLine>> {
    let rows =
        sqlx::query("SELECT at, status, detail FROM delivery_events WHERE delivery_id = $1 ORDER BY seq")
            .bind(delivery_id)
            .fetch_all(&db.pool)
            .await?;
    rows.iter()
        .map(|r| {
            Ok(HistoryLine {
                at: r.try_get("at")?,
                status: r.try_get("status")?,
                detail: serde_json::from_str(&r.try_get::<String, _>("detail")?)?,
            })
        })
        .collect()
}

/// Claims up to `limit` deliveries a worker may take now — due ones, and ones whose worker's lease
/// ran out — until `lease_until` (`Outbox::claim`).
pub async fn claim_due(db: &Db, now: i64, lease_until: i64, limit: i64) -> anyhow::Result<Vec<Delivery>> {
    const OUTBOX: super::Outbox =
        super::Outbox { table: "deliveries", key: "delivery_id", due: &["deferred", "queued"], also_set: "" };
    // In a write transaction, so that on SQLite the claim takes its turn with the process's writers.
    let mut tx = db.begin_write().await?;
    let rows = OUTBOX.claim(&mut tx, COLUMNS, (now, lease_until), limit).await?;
    tx.commit().await?;
    rows.iter().map(row_to_delivery).collect()
}

/// Counts of deliveries by status, for the queue-depth gauge.
pub async fn depth(db: &Db) -> anyhow::Result<Vec<(String, i64)>> {
    let rows = sqlx::query(
        "SELECT status, COUNT(*) AS n FROM deliveries WHERE status IN ('queued', 'deferred', 'sending')
         GROUP BY status",
    )
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(|r| Ok((r.try_get("status")?, r.try_get("n")?))).collect()
}

/// Erasure: messages not sent yet will not be (the player is gone); every delivery moves to the
/// pseudonym and loses its texts (a first name, an offer) and the caller's key (which may embed the id).
pub fn erasure_step<'a>(
    tx: &'a mut super::Tx,
    e: &'a super::erasure::Erased<'a>,
) -> super::erasure::StepFuture<'a> {
    Box::pin(async move {
        sqlx::query(
            "UPDATE deliveries SET status = 'suppressed', updated_at = $3,
                 reasons = '[{\"code\":\"player_erased\",\"detail\":\"the player was erased\"}]'
             WHERE brand_id = $1 AND player_id = $2 AND status IN ('queued', 'deferred')",
        )
        .bind(e.brand)
        .bind(e.player)
        .bind(e.at)
        .execute(&mut **tx)
        .await?;
        super::erasure::rename(tx, "deliveries", e).await?;
        super::erasure::rename(tx, "send_locks", e).await?;
        sqlx::query(
            "UPDATE deliveries SET subject = NULL, body = NULL, idempotency_key = 'erased_' || delivery_id
             WHERE brand_id = $1 AND player_id = $2",
        )
        .bind(e.brand)
        .bind(e.pseudonym)
        .execute(&mut **tx)
        .await?;
        Ok(())
    })
}
