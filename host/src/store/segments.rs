//! The tables of segment memberships: spans (entered, left) with what decided each end, the
//! `segment.*` events written with each change, and the player's share of an erasure. The segments
//! capability (the `segments` module) is their one writer; they live here so that the core's erasure can
//! reach them without knowing the capability.

use std::collections::HashMap;

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Db, Players, Tx};
use crate::model as m;

/// Current members by jurisdiction, for each of a brand's segments.
pub async fn counts(db: &Db, brand: &str) -> anyhow::Result<Vec<(String, String, i64)>> {
    let rows = sqlx::query(
        "SELECT segment_id, jurisdiction, COUNT(*) AS n FROM segment_members
         WHERE brand_id = $1 AND left_at IS NULL GROUP BY segment_id, jurisdiction ORDER BY segment_id, jurisdiction",
    )
    .bind(brand)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(|r| Ok((r.try_get("segment_id")?, r.try_get("jurisdiction")?, r.try_get("n")?))).collect()
}

/// One membership span, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Membership {
    pub segment_id: String,
    pub player_id: String,
    pub jurisdiction: String,
    pub entered_at: i64,
    /// What decided the entry: the plugin version and binding, the event or sweep, the reason, score
    /// and (for a decision taken on an event) its record.
    pub plugin_id: String,
    pub binding_id: String,
    pub via: String,
    pub reason: Option<String>,
    pub score: Option<f64>,
    pub decision_seq: Option<i64>,
    pub left_at: Option<i64>,
    pub left_via: Option<String>,
    pub left_reason: Option<String>,
    pub left_decision_seq: Option<i64>,
}

const MEMBER_COLUMNS: &str = "segment_id, player_id, jurisdiction, entered_at, plugin_id, binding_id, via, reason, score, decision_seq, left_at, left_via, left_reason, left_decision_seq";

fn row_to_membership(r: &sqlx::any::AnyRow) -> Result<Membership, sqlx::Error> {
    Ok(Membership {
        segment_id: r.try_get("segment_id")?,
        player_id: r.try_get("player_id")?,
        jurisdiction: r.try_get("jurisdiction")?,
        entered_at: r.try_get("entered_at")?,
        plugin_id: r.try_get("plugin_id")?,
        binding_id: r.try_get("binding_id")?,
        via: r.try_get("via")?,
        reason: r.try_get("reason")?,
        score: r.try_get("score")?,
        decision_seq: r.try_get("decision_seq")?,
        left_at: r.try_get("left_at")?,
        left_via: r.try_get("left_via")?,
        left_reason: r.try_get("left_reason")?,
        left_decision_seq: r.try_get("left_decision_seq")?,
    })
}

/// Current members after `cursor` (a player id), in player-id order.
pub async fn members(db: &Db, segment: &str, cursor: &str, limit: i64) -> anyhow::Result<Vec<Membership>> {
    let sql = format!(
        "SELECT {MEMBER_COLUMNS} FROM segment_members WHERE segment_id = $1 AND left_at IS NULL AND player_id > $2
         ORDER BY player_id LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(segment)
        .bind(cursor)
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    Ok(rows.iter().map(row_to_membership).collect::<Result<_, _>>()?)
}

/// A player's memberships, current and past, newest first.
pub async fn of_player(db: &Db, brand: &str, player: &str, limit: i64) -> anyhow::Result<Vec<Membership>> {
    let sql = format!(
        "SELECT {MEMBER_COLUMNS} FROM segment_members WHERE brand_id = $1 AND player_id = $2
         ORDER BY entered_at DESC, id DESC LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(brand)
        .bind(player)
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    Ok(rows.iter().map(row_to_membership).collect::<Result<_, _>>()?)
}

/// What decides a player's membership in one segment, at one moment.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub member: bool,
    pub reason: Option<String>,
    pub score: Option<f64>,
    /// The version and binding that decided; empty when the host decided alone (RG, no rule bound).
    pub plugin_id: String,
    pub binding_id: String,
}

impl Verdict {
    /// The host's own: the player is out, for `reason`.
    pub fn host_out(reason: String) -> Verdict {
        Verdict {
            member: false,
            reason: Some(reason),
            score: None,
            plugin_id: String::new(),
            binding_id: String::new(),
        }
    }
}

/// The segment a change is about.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub id: &'a str,
    pub brand_id: &'a str,
    pub name: &'a str,
}

/// A change made to a membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Entered,
    Left,
}

/// The open spans of `players` in a segment: by player, the span's id and the jurisdiction they are
/// counted in.
pub async fn open_spans(
    conn: &mut sqlx::AnyConnection,
    segment: &str,
    players: Players<'_>,
) -> anyhow::Result<HashMap<String, (i64, String)>> {
    let from = format!(
        "segment_members WHERE segment_id = $1 AND left_at IS NULL AND {}",
        players.condition(super::Backend::of(conn), 2)
    );
    let rows: Vec<(String, i64, String)> =
        super::json_rows(conn, "player_id, id, jurisdiction", &from, "player_id", |q| {
            players.bind(q.bind(segment))
        })
        .await?;
    Ok(rows.into_iter().map(|(player, id, jurisdiction)| (player, (id, jurisdiction))).collect())
}

/// Applies a verdict to the player's membership, whose open span (from [`open_spans`]) is `open`, in the
/// caller's transaction: opens or closes the span and writes `segment.entered` / `segment.left` to the
/// log, or moves the span to the player's jurisdiction now. The change and its span, or `None` when
/// the player neither entered nor left.
pub async fn apply(
    conn: &mut sqlx::AnyConnection,
    segment: Target<'_>,
    (player, jurisdiction): (&str, &str),
    verdict: &Verdict,
    open: Option<&(i64, String)>,
    via: &str,
    at: i64,
) -> anyhow::Result<Option<(Change, i64)>> {
    let applied = match (verdict.member, open) {
        (true, None) => apply_many(conn, segment, &[(player, jurisdiction, verdict)], &[], via, at).await?,
        (false, Some((id, _))) => apply_many(conn, segment, &[], &[(*id, verdict)], via, at).await?,
        (true, Some((id, was))) => {
            if was != jurisdiction {
                sqlx::query("UPDATE segment_members SET jurisdiction = $2 WHERE id = $1")
                    .bind(id)
                    .bind(jurisdiction)
                    .execute(&mut *conn)
                    .await?;
            }
            Vec::new()
        }
        (false, None) => Vec::new(),
    };
    Ok(applied.first().map(|(change, span, _)| (*change, *span)))
}

/// `apply` for many players of one segment at once (a sweep's page), in a few multi-row statements:
/// `enter` are players not in the segment who enter it, `leave` the open spans that close. A player
/// another writer moved meanwhile is left as that writer left them. The changes made: (change, span,
/// player), entries first.
pub async fn apply_many(
    conn: &mut sqlx::AnyConnection,
    segment: Target<'_>,
    enter: &[(&str, &str, &Verdict)],
    leave: &[(i64, &Verdict)],
    via: &str,
    at: i64,
) -> anyhow::Result<Vec<(Change, i64, String)>> {
    let mut changes: Vec<(Change, i64, String, &Verdict)> = Vec::new();
    let backend = super::Backend::of(conn);
    if !enter.is_empty() {
        // Every entry in one statement, its rows one JSON parameter: [player, jurisdiction, plugin,
        // binding, reason, score].
        let rows: Vec<serde_json::Value> = enter
            .iter()
            .map(|(p, j, v)| serde_json::json!([p, j, v.plugin_id, v.binding_id, v.reason, v.score]))
            .collect();
        let insert = format!(
            "INSERT INTO segment_members (segment_id, brand_id, player_id, jurisdiction, entered_at, plugin_id, binding_id,
                 via, reason, score, decision_seq)
             SELECT $1, $2, j.value ->> 0, j.value ->> 1, $3, j.value ->> 2, j.value ->> 3, $4, j.value ->> 4, {}, NULL
             FROM {} WHERE true ON CONFLICT DO NOTHING",
            json_real(backend, "j.value ->> 5"),
            json_array_rows(backend, 5)
        );
        let rows = serde_json::to_string(&rows)?;
        // A player it passes over has an open span by another writer.
        let written = "segment_id = $1 AND brand_id = $2 AND entered_at = $3 AND via = $4 AND left_at IS NULL
             AND player_id IN (SELECT j.value ->> 0 FROM json_each($5) AS j)";
        let opened = written_spans(conn, &insert, written, |sql| {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(segment.id)
                .bind(segment.brand_id)
                .bind(at)
                .bind(via)
                .bind(&rows)
        })
        .await?;
        let verdicts: HashMap<&str, &Verdict> = enter.iter().map(|(p, _, v)| (*p, *v)).collect();
        for (span, player) in opened {
            let verdict = verdicts.get(player.as_str()).copied().expect("a player entered");
            changes.push((Change::Entered, span, player, verdict));
        }
    }
    if !leave.is_empty() {
        // Every exit in one statement, its rows one JSON parameter: [span, reason].
        let rows: Vec<serde_json::Value> =
            leave.iter().map(|(span, v)| serde_json::json!([span, v.reason])).collect();
        let rows = serde_json::to_string(&rows)?;
        let update = format!(
            "UPDATE segment_members SET left_at = $1, left_via = $2, left_reason = j.value ->> 1 FROM {}
             WHERE segment_members.id = CAST(j.value ->> 0 AS BIGINT) AND segment_members.left_at IS NULL",
            json_array_rows(backend, 3)
        );
        let written =
            "left_at = $1 AND left_via = $2 AND id IN (SELECT j.value ->> 0 FROM json_each($3) AS j)";
        let closed = written_spans(conn, &update, written, |sql| {
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at).bind(via).bind(&rows)
        })
        .await?;
        let verdicts: HashMap<i64, &Verdict> = leave.iter().map(|(span, v)| (*span, *v)).collect();
        for (span, player) in closed {
            let verdict = verdicts.get(&span).copied().expect("a span closed");
            changes.push((Change::Left, span, player, verdict));
        }
    }
    let logged: Vec<(Change, i64, &str, &Verdict)> =
        changes.iter().map(|(c, s, p, v)| (*c, *s, p.as_str(), *v)).collect();
    log_changes(conn, segment, &logged, via, at).await?;
    Ok(changes.into_iter().map(|(c, s, p, _)| (c, s, p)).collect())
}

/// Runs `write`, an `INSERT` into or `UPDATE` of `segment_members`, and answers the (span, player) of
/// the rows it wrote, read as one value: a `RETURNING` row costs more through sqlx than writing it (a
/// sweep's page of 1,400 entries spent 14 ms on SQLite with them, 10 ms without). PostgreSQL returns
/// them from a `WITH` around the statement; SQLite, which takes no `INSERT` or `UPDATE` inside `WITH`,
/// reads back the rows that match `written` (a condition on the same parameters that, with one writer
/// at a time, only the rows it wrote meet). `query` makes a statement with the parameters bound.
async fn written_spans<'q>(
    conn: &mut sqlx::AnyConnection,
    write: &str,
    written: &str,
    query: impl Fn(String) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
) -> anyhow::Result<Vec<(i64, String)>> {
    let json: String = match super::Backend::of(conn) {
        super::Backend::Postgres => {
            let sql = format!(
                "WITH written AS ({write} RETURNING segment_members.id AS id, segment_members.player_id AS player_id)
                 SELECT COALESCE(json_agg(json_build_array(id, player_id) ORDER BY id), '[]')::text FROM written"
            );
            query(sql).fetch_one(&mut *conn).await?.try_get(0)?
        }
        super::Backend::Sqlite => {
            query(write.to_string()).execute(&mut *conn).await?;
            let sql = format!(
                "SELECT json_group_array(json_array(id, player_id) ORDER BY id) FROM segment_members WHERE {written}"
            );
            query(sql).fetch_one(&mut *conn).await?.try_get(0)?
        }
    };
    Ok(serde_json::from_str(&json)?)
}

/// Writes `segment.entered` / `segment.left` for changes made, to the log (one statement).
async fn log_changes(
    conn: &mut sqlx::AnyConnection,
    segment: Target<'_>,
    changes: &[(Change, i64, &str, &Verdict)],
    via: &str,
    at: i64,
) -> anyhow::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    // One statement, the events one JSON parameter: [event id, player, type, payload, body hash].
    let mut rows = Vec::with_capacity(changes.len());
    for (change, span, player, verdict) in changes {
        let event_type = match change {
            Change::Entered => m::EventType::SegmentEntered,
            Change::Left => m::EventType::SegmentLeft,
        };
        let payload = serde_json::to_string(&m::EventPayload::Segment(m::SegmentChange {
            segment_id: segment.id.to_string(),
            segment: segment.name.to_string(),
            plugin_id: verdict.plugin_id.clone(),
            via: via.to_string(),
            reason: verdict.reason.clone(),
            score: verdict.score,
        }))?;
        let name = m::wire_name(event_type);
        let hash = hex::encode(Sha256::digest(payload.as_bytes()));
        rows.push(serde_json::json!([format!("{name}:{}:{span}", segment.id), player, name, payload, hash]));
    }
    let backend = super::Backend::of(conn);
    let sql = format!(
        "INSERT INTO events (brand_id, event_id, player_id, event_type, occurred_at, received_at, trace_id, payload, body_hash)
         SELECT $1, j.value ->> 0, j.value ->> 1, j.value ->> 2, $2, $3, NULL, j.value ->> 3, j.value ->> 4
         FROM {} WHERE true ON CONFLICT (brand_id, event_id) DO NOTHING",
        json_array_rows(backend, 4)
    );
    let q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(segment.brand_id)
        .bind(at)
        .bind(crate::store::now_ms())
        .bind(serde_json::to_string(&rows)?);
    q.execute(conn).await?;
    Ok(())
}

/// The rows of a JSON array bound as parameter `$n`, each `j.value`, for `INSERT … SELECT`: many rows
/// in one statement with one parameter (binding hundreds of parameters costs more on SQLite than
/// inserting the rows, see `rows_per_statement`).
fn json_array_rows(backend: super::Backend, n: usize) -> String {
    match backend {
        super::Backend::Sqlite => format!("json_each(${n}) AS j"),
        super::Backend::Postgres => format!("jsonb_array_elements(${n}::jsonb) AS j"),
    }
}

/// A number taken out of a JSON row as text (`->>`), as a float column takes it.
fn json_real(backend: super::Backend, text: &str) -> String {
    match backend {
        super::Backend::Sqlite => text.to_string(),
        super::Backend::Postgres => format!("({text})::double precision"),
    }
}

/// Links a change to the record of the decision that made it.
pub async fn link_decision(
    conn: &mut sqlx::AnyConnection,
    (change, span): (Change, i64),
    decision_seq: i64,
) -> anyhow::Result<()> {
    let column = match change {
        Change::Entered => "decision_seq",
        Change::Left => "left_decision_seq",
    };
    sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE segment_members SET {column} = $2 WHERE id = $1")))
        .bind(span)
        .bind(decision_seq)
        .execute(conn)
        .await?;
    Ok(())
}

/// Erasure: the player's memberships go (an erased player is in no segment, and nothing of theirs is
/// kept here).
pub fn erasure_step<'a>(
    tx: &'a mut Tx,
    e: &'a crate::store::erasure::Erased<'a>,
) -> crate::store::erasure::StepFuture<'a> {
    Box::pin(async move {
        sqlx::query("DELETE FROM segment_members WHERE brand_id = $1 AND player_id = $2")
            .bind(e.brand)
            .bind(e.player)
            .execute(&mut **tx)
            .await?;
        Ok(())
    })
}
