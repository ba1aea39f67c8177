//! Sweeps: a segment decided again over the brand's whole population, with the batch form of the
//! segment world — for conditions that change with time and no event ("last seen more than 14 days
//! ago"). A sweep runs on the segment's schedule, on demand (`POST /admin/segments/{id}/refresh`) and
//! when the bindings of the segment's rule change (a swap, a rollback), on whichever host claims it
//! first. Profiles are read in pages without a lock; each page's changes are written in one short
//! transaction, with their `segment.*` events. A sweep whose host died is taken up again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::sync::watch;

use super::{Segment, Verdict};
use crate::bus::Bus;
use crate::core::Core;
use crate::model as m;
use crate::plugins::registry::bindings::ActiveBinding;
use crate::plugins::{CallOptions, World};
use crate::store::{Db, now_ms};

/// Players read per page.
pub const PAGE: i64 = 4096;

/// A running sweep that has not moved for this long lost its host: another takes it up.
const STALE_MS: i64 = 60_000;

/// A running sweep writes its progress (heartbeat and figures) at least this often, and with every page
/// that changes memberships.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The first failures a sweep's figures keep (all are counted).
const MAX_FAILURES: usize = 10;

/// What a sweep did, as it goes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Figures {
    /// Players read and decided.
    pub players: u64,
    /// Members when it ended (of the players it read).
    pub members: u64,
    pub entered: u64,
    pub left: u64,
    /// Players the host took out on its own (RG, no rule bound).
    pub host_out: u64,
    /// Players whose rule failed (membership unchanged), and the first failures.
    pub failed: u64,
    pub failures: Vec<String>,
    pub fuel: u64,
    pub read_ms: u64,
    pub evaluate_ms: u64,
    pub write_ms: u64,
}

impl Figures {
    /// Adds the figures of a part of the sweep counted apart (a page decided while another was written).
    fn add(&mut self, part: Figures) {
        self.players += part.players;
        self.members += part.members;
        self.entered += part.entered;
        self.left += part.left;
        self.host_out += part.host_out;
        self.failed += part.failed;
        let room = MAX_FAILURES.saturating_sub(self.failures.len());
        self.failures.extend(part.failures.into_iter().take(room));
        self.fuel += part.fuel;
        self.read_ms += part.read_ms;
        self.evaluate_ms += part.evaluate_ms;
        self.write_ms += part.write_ms;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    pub id: String,
    pub segment_id: String,
    /// `schedule`, `request`, `binding`.
    pub cause: String,
    pub requested_by: String,
    /// `queued`, `running`, `done`, `failed`.
    pub state: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub figures: Figures,
    pub error: Option<String>,
}

const COLUMNS: &str = "id, segment_id, cause, requested_by, state, started_at, finished_at, figures, error";

fn row_to_sweep(r: &sqlx::any::AnyRow) -> Result<Sweep, sqlx::Error> {
    Ok(Sweep {
        id: r.try_get("id")?,
        segment_id: r.try_get("segment_id")?,
        cause: r.try_get("cause")?,
        requested_by: r.try_get("requested_by")?,
        state: r.try_get("state")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        figures: serde_json::from_str(&r.try_get::<String, _>("figures")?).unwrap_or_default(),
        error: r.try_get("error")?,
    })
}

/// Queues a sweep of `segment`; its id. The scheduler of some host runs it within a second.
pub async fn request(
    conn: &mut sqlx::AnyConnection,
    segment: &str,
    cause: &str,
    by: &str,
) -> anyhow::Result<String> {
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = format!("sw_{}", hex::encode(rnd));
    sqlx::query(
        "INSERT INTO segment_sweeps (id, segment_id, cause, requested_by, state, started_at, figures)
         VALUES ($1, $2, $3, $4, 'queued', $5, '{}')",
    )
    .bind(&id)
    .bind(segment)
    .bind(cause)
    .bind(by)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(id)
}

pub async fn get(db: &Db, id: &str) -> anyhow::Result<Option<Sweep>> {
    let sql = format!("SELECT {COLUMNS} FROM segment_sweeps WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&db.pool).await?;
    Ok(row.as_ref().map(row_to_sweep).transpose()?)
}

/// A segment's sweeps, newest first.
pub async fn of_segment(db: &Db, segment: &str, limit: i64) -> anyhow::Result<Vec<Sweep>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM segment_sweeps WHERE segment_id = $1 ORDER BY started_at DESC, id LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(segment).bind(limit).fetch_all(&db.pool).await?;
    Ok(rows.iter().map(row_to_sweep).collect::<Result<_, _>>()?)
}

/// The live bindings of a segment's rule, as one string: when it changes, the segment is swept.
pub fn binding_mark(core: &Core, segment: &Segment) -> String {
    let live = core.registry.snapshot().slot(&segment.brand_id, World::Segment, &segment.name);
    live.iter().map(|(j, b)| format!("{j}={}", b.binding_id)).collect::<Vec<_>>().join(",")
}

/// Runs due, requested and binding-changed sweeps until `stop` turns true.
pub async fn scheduler(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = tick(&core, &stop).await {
            tracing::error!(error = %format!("{e:#}"), "segment sweeps");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn tick(core: &Core, stop: &watch::Receiver<bool>) -> anyhow::Result<()> {
    let db = &core.db;
    db.execute(
        sqlx::query(
            "UPDATE segment_sweeps SET state = 'queued' WHERE state = 'running' AND heartbeat_at < $1",
        )
        .bind(now_ms() - STALE_MS),
    )
    .await?;
    let now = core.clock().now_ms();
    for seg in super::all(db).await? {
        let mark = binding_mark(core, &seg);
        let changed = mark != seg.binding_mark;
        if !changed && now < seg.next_sweep_at {
            continue;
        }
        // Claimed by whichever host moves the schedule first.
        let mut tx = db.begin_write().await?;
        let claimed = sqlx::query(
            "UPDATE segments SET next_sweep_at = $2, binding_mark = $3
             WHERE id = $1 AND next_sweep_at = $4 AND binding_mark = $5",
        )
        .bind(&seg.id)
        .bind(now + seg.sweep_minutes * 60_000)
        .bind(&mark)
        .bind(seg.next_sweep_at)
        .bind(&seg.binding_mark)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 1 {
            request(&mut tx, &seg.id, if changed { "binding" } else { "schedule" }, "scheduler").await?;
        }
        tx.commit().await?;
    }
    while !*stop.borrow() {
        let Some((sweep, segment)) = claim_next(db).await? else { break };
        let started = Instant::now();
        let outcome = run(core, &sweep, &segment).await;
        let (state, figures, error) = match outcome {
            Ok(f) => ("done", f, None),
            Err((f, e)) => ("failed", f, Some(format!("{e:#}"))),
        };
        tracing::info!(sweep, segment = %segment.name, state, ms = started.elapsed().as_millis() as u64,
            players = figures.players, entered = figures.entered, left = figures.left, error = error.as_deref(),
            "segment swept");
        let mut tx = db.begin_write().await?;
        sqlx::query(
            "UPDATE segment_sweeps SET state = $2, finished_at = $3, figures = $4, error = $5 WHERE id = $1",
        )
        .bind(&sweep)
        .bind(state)
        .bind(now_ms())
        .bind(serde_json::to_string(&figures)?)
        .bind(&error)
        .execute(&mut *tx)
        .await?;
        if error.is_some() {
            // Swept again within a minute, whatever its schedule.
            sqlx::query("UPDATE segments SET next_sweep_at = $2 WHERE id = $1 AND next_sweep_at > $2")
                .bind(&segment.id)
                .bind(core.clock().now_ms() + 60_000)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Takes the oldest queued sweep, if another host did not take it first.
async fn claim_next(db: &Db) -> anyhow::Result<Option<(String, Segment)>> {
    loop {
        let Some(row) = sqlx::query(
            "SELECT id, segment_id FROM segment_sweeps WHERE state = 'queued' ORDER BY started_at, id LIMIT 1",
        )
        .fetch_optional(&db.pool)
        .await?
        else {
            return Ok(None);
        };
        let (id, segment): (String, String) = (row.try_get("id")?, row.try_get("segment_id")?);
        let claimed = db
            .execute(
                sqlx::query(
                    "UPDATE segment_sweeps SET state = 'running', heartbeat_at = $2 WHERE id = $1 AND state = 'queued'",
                )
                .bind(&id)
                .bind(now_ms()),
            )
            .await?;
        if claimed.rows_affected() == 1 {
            match super::get(db, &segment).await? {
                Some(s) => return Ok(Some((id, s))),
                None => continue,
            }
        }
    }
}

/// Sweeps one segment: page by page, decide everyone, write what changed.
pub async fn run(core: &Core, sweep: &str, segment: &Segment) -> Result<Figures, (Figures, anyhow::Error)> {
    let mut figures = Figures::default();
    match pages(core, sweep, segment, &mut figures).await {
        Ok(()) => Ok(figures),
        Err(e) => Err((figures, e)),
    }
}

async fn pages(core: &Core, sweep: &str, segment: &Segment, figures: &mut Figures) -> anyhow::Result<()> {
    let (brand, clock) = (segment.brand_id.clone(), core.clock().clone());
    // Pages are read ahead, by other tasks; each is decided while the one before is written, so the
    // evaluation on the cores and the write in the database overlap.
    let mut pages = crate::profiles::Population::read(
        core.db.clone(),
        core.contacts_key.clone(),
        segment.brand_id.clone(),
        PAGE,
        move |page| Read::of(page, &brand, clock.now()),
    );
    let mut progressed = Instant::now();
    let mut decided: Option<(Read, Vec<Option<Verdict>>)> = None;
    loop {
        let mut next_figures = Figures::default();
        let decide_next = async {
            let Some(page) = pages.next().await? else { return anyhow::Ok(None) };
            next_figures.read_ms += page.took.as_millis() as u64;
            let verdicts = decide(core, segment, &page, &mut next_figures).await?;
            Ok(Some((page, verdicts)))
        };
        let write_last = async {
            match &decided {
                Some((page, verdicts)) => {
                    write(core, sweep, segment, page, verdicts, figures, &mut progressed).await
                }
                None => Ok(()),
            }
        };
        let (next, written) = tokio::join!(decide_next, write_last);
        written?;
        figures.add(next_figures);
        match next? {
            Some(next) => decided = Some(next),
            None => return Ok(()),
        }
    }
}

/// A page of the brand's players, as profiles at the host's time when it was read.
struct Read {
    /// Player ids in (after, last].
    range: (String, String),
    profiles: Vec<(String, Arc<m::Profile>)>,
    /// Each profile's `updated_seq` as read.
    seqs: Vec<i64>,
    now: jiff::Timestamp,
    /// How long reading it took, and making its profiles.
    took: Duration,
}

impl Read {
    fn of(page: crate::profiles::PopulationPage, brand: &str, now: jiff::Timestamp) -> Read {
        let started = Instant::now();
        let seqs = page.profiles.iter().map(|(_, s)| s.updated_seq).collect();
        let profiles = page
            .profiles
            .into_iter()
            .map(|(p, s)| {
                let v = s.at(brand, &p, now).profile;
                (p, Arc::new(v))
            })
            .collect();
        Read { range: (page.after, page.last), profiles, seqs, now, took: page.took + started.elapsed() }
    }
}

/// A verdict per profile of a page (`None`: the rule failed for that player, counted in `figures`).
async fn decide(
    core: &Core,
    segment: &Segment,
    read: &Read,
    figures: &mut Figures,
) -> anyhow::Result<Vec<Option<Verdict>>> {
    let t = Instant::now();
    let (bound, fuel) = decide_bound(core, segment, &read.profiles, read.now).await?;
    figures.fuel += fuel;
    let mut verdicts = Vec::with_capacity(bound.len());
    for ((player, _), b) in read.profiles.iter().zip(bound) {
        figures.host_out += u64::from(b.binding.is_none());
        verdicts.push(match b.outcome {
            Ok(v) => Some(v),
            Err((_, why)) => {
                let rule = b.binding.map(|b| format!("{} {}", b.name, b.version)).unwrap_or_default();
                fail(figures, format!("{rule} for {player}: {why}"));
                None
            }
        });
    }
    figures.evaluate_ms += t.elapsed().as_millis() as u64;
    Ok(verdicts)
}

/// Writes what a decided page changed, with the sweep's progress.
async fn write(
    core: &Core,
    sweep: &str,
    segment: &Segment,
    read: &Read,
    verdicts: &[Option<Verdict>],
    figures: &mut Figures,
    progressed: &mut Instant,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let via = format!("sweep:{sweep}");
    let page = Page {
        range: (&read.range.0, &read.range.1),
        profiles: &read.profiles,
        seqs: &read.seqs,
        verdicts,
        via: &via,
        at: read.now.as_millisecond(),
    };
    // A write that loses to the real-time consumer on the same players (a deadlock on PostgreSQL)
    // is tried again on the memberships as they are then.
    let mut attempt = 0;
    let done = loop {
        let mut counted = figures.clone();
        match write_page(core, sweep, segment, &page, &mut counted, progressed).await {
            Ok(changed) => {
                *figures = counted;
                break changed;
            }
            Err(e) if attempt < 4 => {
                attempt += 1;
                tracing::warn!(sweep, error = %format!("{e:#}"), attempt, "writing a sweep's page; trying again");
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    };
    if done {
        core.bus.notify();
    }
    figures.write_ms += t.elapsed().as_millis() as u64;
    Ok(())
}

/// One page of a sweep, decided.
struct Page<'a> {
    range: (&'a str, &'a str),
    profiles: &'a [(String, Arc<m::Profile>)],
    seqs: &'a [i64],
    verdicts: &'a [Option<Verdict>],
    via: &'a str,
    at: i64,
}

/// What a page changes, against the memberships open now.
struct Plan<'a> {
    players: u64,
    members: u64,
    enter: Vec<(&'a str, &'a str, &'a Verdict)>,
    leave: Vec<(i64, &'a Verdict)>,
    /// Still in, now counted in another jurisdiction: (player, jurisdiction, verdict, open span).
    moves: Vec<(&'a str, &'a str, &'a Verdict, (i64, String))>,
}

impl<'a> Plan<'a> {
    /// `moved`: players whose profile changed since the page was read, left as the real-time consumer
    /// left them (it decided on the newer profile).
    fn of(page: &Page<'a>, current: &HashMap<String, (i64, String)>, moved: &HashSet<&str>) -> Plan<'a> {
        let mut plan =
            Plan { players: 0, members: 0, enter: Vec::new(), leave: Vec::new(), moves: Vec::new() };
        for ((player, profile), verdict) in page.profiles.iter().zip(page.verdicts) {
            plan.players += 1;
            let open = current.get(player);
            let Some(verdict) = verdict.as_ref().filter(|_| !moved.contains(player.as_str())) else {
                plan.members += u64::from(open.is_some());
                continue;
            };
            plan.members += u64::from(verdict.member);
            let jurisdiction = profile.jurisdiction.as_str();
            match (verdict.member, open) {
                (true, None) => plan.enter.push((player, jurisdiction, verdict)),
                (false, Some((span, _))) => plan.leave.push((*span, verdict)),
                (true, Some(o)) if o.1 != *jurisdiction => {
                    plan.moves.push((player, jurisdiction, verdict, o.clone()));
                }
                _ => {}
            }
        }
        plan
    }

    fn changes_nothing(&self) -> bool {
        self.enter.is_empty() && self.leave.is_empty() && self.moves.is_empty()
    }
}

/// The players of a page whose profile changed since it was read (an event applied, an erasure).
async fn moved_since<'a>(
    conn: &mut sqlx::AnyConnection,
    brand: &str,
    page: &Page<'a>,
) -> anyhow::Result<HashSet<&'a str>> {
    let (after, last) = page.range;
    let range = crate::store::Players::Range(after, last);
    let from =
        format!("profiles WHERE brand_id = $1 AND {}", range.condition(crate::store::Backend::of(conn), 2));
    let now: HashMap<String, i64> =
        crate::store::json_rows::<(String, i64)>(conn, "player_id, updated_seq", &from, "player_id", |q| {
            range.bind(q.bind(brand))
        })
        .await?
        .into_iter()
        .collect();
    Ok(page
        .profiles
        .iter()
        .zip(page.seqs)
        .filter(|((player, _), seq)| now.get(player) != Some(*seq))
        .map(|((player, _), _)| player.as_str())
        .collect())
}

/// Writes what changed in a page, in one transaction with the sweep's progress; whether anything did.
/// A page that changes nothing takes no write lock, unless the progress written at `progressed` is
/// `PROGRESS_EVERY` old.
async fn write_page(
    core: &Core,
    sweep: &str,
    segment: &Segment,
    page: &Page<'_>,
    figures: &mut Figures,
    progressed: &mut Instant,
) -> anyhow::Result<bool> {
    let (after, last) = page.range;
    let range = crate::store::Players::Range(after, last);
    if progressed.elapsed() < PROGRESS_EVERY {
        let mut conn = core.db.pool.acquire().await?;
        let spans = crate::store::segments::open_spans(&mut conn, &segment.id, range).await?;
        let plan = Plan::of(page, &spans, &HashSet::new());
        if plan.changes_nothing() {
            figures.players += plan.players;
            figures.members += plan.members;
            return Ok(false);
        }
    }
    let mut tx = core.db.begin_write().await?;
    let spans = crate::store::segments::open_spans(&mut tx, &segment.id, range).await?;
    let plan = Plan::of(page, &spans, &moved_since(&mut tx, &segment.brand_id, page).await?);
    figures.players += plan.players;
    figures.members += plan.members;
    for (player, jurisdiction, verdict, open) in &plan.moves {
        let target = (*player, *jurisdiction);
        super::apply(&mut tx, segment.target(), target, verdict, Some(open), page.via, page.at).await?;
    }
    let applied = crate::store::segments::apply_many(
        &mut tx,
        segment.target(),
        &plan.enter,
        &plan.leave,
        page.via,
        page.at,
    )
    .await?;
    let entered = applied.iter().filter(|(c, _, _)| *c == super::Change::Entered).count();
    figures.entered += entered as u64;
    figures.left += (applied.len() - entered) as u64;
    let changed = !applied.is_empty();
    sqlx::query("UPDATE segment_sweeps SET heartbeat_at = $2, figures = $3 WHERE id = $1")
        .bind(sweep)
        .bind(now_ms())
        .bind(serde_json::to_string(&figures)?)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    *progressed = Instant::now();
    Ok(changed)
}

/// One player's membership as the rules bound today decide it.
pub struct Bound {
    /// The binding whose rule decided; none when the host decided alone (its RG rule, no rule bound).
    pub binding: Option<Arc<ActiveBinding>>,
    /// The verdict, or the rule's failure as (code, message): the membership then stays as it was.
    pub outcome: Result<Verdict, (&'static str, String)>,
}

/// Decides `profiles` with the rules bound today for `segment`: the host's rule first, then the batch
/// form of each jurisdiction's rule (none bound: out). One `Bound` per profile, in order, and the fuel
/// spent. Sweeps write what it decides; impact reports compare a candidate with it.
pub async fn decide_bound(
    core: &Core,
    segment: &Segment,
    profiles: &[(String, Arc<m::Profile>)],
    now: jiff::Timestamp,
) -> anyhow::Result<(Vec<Bound>, u64)> {
    let snapshot = core.registry.snapshot();
    let host = |reason| Bound { binding: None, outcome: Ok(Verdict::host_out(reason)) };
    let mut bound: Vec<Option<Bound>> = Vec::with_capacity(profiles.len());
    let mut groups: HashMap<String, (Arc<ActiveBinding>, Vec<usize>)> = HashMap::new();
    for (i, (_, profile)) in profiles.iter().enumerate() {
        let decided = match super::host_rule(segment, profile) {
            Some(reason) => Some(host(reason)),
            None => match snapshot.resolve(
                &segment.brand_id,
                &profile.jurisdiction,
                World::Segment,
                &segment.name,
            ) {
                Some(b) => {
                    groups.entry(b.binding_id.clone()).or_insert_with(|| (b, Vec::new())).1.push(i);
                    None
                }
                None => Some(host(super::no_rule(&profile.jurisdiction))),
            },
        };
        bound.push(decided);
    }
    let mut fuel = 0;
    for (binding, indices) in groups.into_values() {
        let plugin = match &binding.plugin {
            Ok(p) => p.clone(),
            Err(why) => {
                for &i in &indices {
                    let failure = ("integrity_failed", format!("integrity check failed: {why}"));
                    bound[i] = Some(Bound { binding: Some(binding.clone()), outcome: Err(failure) });
                }
                continue;
            }
        };
        let opts = CallOptions { limits: binding.limits, now, config: binding.config.clone() };
        let input: Vec<Arc<m::Profile>> = indices.iter().map(|&i| profiles[i].1.clone()).collect();
        let (outcomes, spent) = super::batch(core.registry.runtime(), &plugin, &opts, input).await?;
        fuel += spent;
        for (&i, outcome) in indices.iter().zip(outcomes) {
            let outcome = match outcome {
                Ok(ms) => Ok(Verdict {
                    member: ms.member,
                    reason: ms.reason,
                    score: ms.score,
                    plugin_id: binding.plugin_id.clone(),
                    binding_id: binding.binding_id.clone(),
                }),
                Err(e) => Err((e.code(), e.to_string())),
            };
            bound[i] = Some(Bound { binding: Some(binding.clone()), outcome });
        }
    }
    Ok((bound.into_iter().map(|b| b.expect("every profile decided")).collect(), fuel))
}

fn fail(figures: &mut Figures, why: String) {
    figures.failed += 1;
    if figures.failures.len() < MAX_FAILURES {
        figures.failures.push(why);
    }
}
