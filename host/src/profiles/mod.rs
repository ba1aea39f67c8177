//! Player profiles (the CDP): state kept from the player's events by the `profiles` consumer, and the
//! features computed from it at read time (windows such as "30 days" are relative to when the profile is
//! read). Days are the player's own calendar days, in their time zone. The profile holds no personal data:
//! the age band comes from the encrypted birth date, which never leaves the contacts store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::{Timestamp, tz::TimeZone};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::bus::{Handler, LoggedEvent, Unapplicable};
use crate::model::{self as m, EventPayload, EventType as T};
use crate::store::contacts::{self, ContactsKey};
use crate::store::{Backend, Db, JSON_STATE, Players, consents, json_rows, rows_per_statement, values_list};

pub const CONSUMER: &str = "profiles";

const DAY_MS: i64 = 86_400_000;

/// What the consumer keeps per player besides the daily aggregates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct State {
    registered_at: Option<i64>,
    jurisdiction: String,
    locale: String,
    time_zone: String,
    currency: String,
    kyc: m::KycStatus,
    /// Every self-exclusion the player took or a register reported, each on its own: the player is
    /// excluded while any is in force, and an end names the one it ends.
    exclusions: Vec<Exclusion>,
    /// Before exclusions were kept one by one (state written by earlier versions): read, never written.
    #[serde(skip_serializing)]
    self_excluded: bool,
    #[serde(skip_serializing)]
    self_excluded_until: Option<i64>,
    #[serde(skip_serializing)]
    exclusion_registers: Vec<m::ExclusionRegister>,
    cooling_off_until: Option<i64>,
    harm_flag: bool,
    /// Local day (days since 1970-01-01 in the player's zone) of the last limit hit.
    limit_hit_day: Option<i64>,
    deposit_limit_daily_minor: Option<i64>,
    loss_limit_daily_minor: Option<i64>,
    last_seen_at: Option<i64>,
    last_deposit_at: Option<i64>,
    first_seen_at: Option<i64>,
}

/// One self-exclusion: who keeps it, how wide it is, from when, until when (none: indefinite).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Exclusion {
    register: m::ExclusionRegister,
    /// None for an exclusion kept by an earlier version, which did not record its scope: an end naming
    /// its register ends it, whatever the scope.
    scope: Option<m::ExclusionScope>,
    started_at: i64,
    until: Option<i64>,
    /// When a `self_exclusion.ended` naming it ended it.
    ended_at: Option<i64>,
}

impl Exclusion {
    fn in_force(&self, now: i64) -> bool {
        self.ended_at.is_none() && self.until.is_none_or(|u| u > now)
    }
}

impl State {
    /// Brings a state written by an earlier version to today's shape: its one exclusion becomes one per
    /// register it named.
    fn upgrade(mut self) -> State {
        if self.self_excluded && self.exclusions.is_empty() {
            let registers = if self.exclusion_registers.is_empty() {
                vec![m::ExclusionRegister::Own]
            } else {
                std::mem::take(&mut self.exclusion_registers)
            };
            for register in registers {
                self.exclusions.push(Exclusion {
                    register,
                    scope: None,
                    started_at: self.first_seen_at.unwrap_or(0),
                    until: self.self_excluded_until,
                    ended_at: None,
                });
            }
        }
        self.self_excluded = false;
        self.self_excluded_until = None;
        self.exclusion_registers.clear();
        self
    }
}

fn local_day(ms: i64, tz: &str) -> i64 {
    let tz = TimeZone::get(tz).unwrap_or(TimeZone::UTC);
    let ts = Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let date = ts.to_zoned_datetime(tz).date();
    let epoch = jiff::civil::date(1970, 1, 1);
    i64::from((date - epoch).get_days())
}

/// The consumer that keeps profiles up to date.
pub struct ProfileUpdater {
    pub cache: ProfileCache,
    /// The host's clock: when a consent change from an event is recorded.
    pub clock: crate::clock::Clock,
}

/// Profiles as last assembled, keyed by (brand, player); the consumer evicts a player when one of their
/// events is applied, so a read never sees a state older than what was committed before it.
pub type ProfileCache = Arc<moka::sync::Cache<(String, String), (crate::bus::Position, Arc<StoredProfile>)>>;

/// How long a read waits for the player's accepted events to be applied.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a profile cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("player not found")]
    NotFound,
    #[error("the player's latest events are still being applied; try again")]
    Behind,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// The profiles as every decision and send reads them: the player's accepted events applied first,
/// then through the cache the consumer keeps correct.
#[derive(Clone)]
pub struct Profiles {
    db: Db,
    key: ContactsKey,
    cache: ProfileCache,
    bus: Arc<dyn crate::bus::Bus>,
    /// Bumped by every `invalidate`: a profile read before a change outside the log (consents, erasure)
    /// is not cached after it.
    changes: Arc<std::sync::atomic::AtomicU64>,
}

impl Profiles {
    pub fn new(db: Db, key: ContactsKey, bus: Arc<dyn crate::bus::Bus>) -> Profiles {
        Profiles { db, key, cache: new_cache(), bus, changes: Default::default() }
    }

    /// The consumer that keeps these profiles, with the host's clock.
    pub fn updater(&self, clock: crate::clock::Clock) -> ProfileUpdater {
        ProfileUpdater { cache: self.cache.clone(), clock }
    }

    /// What is stored for a player now. Events already accepted for them are applied first (waiting at
    /// most a few seconds, hurrying the consumer): an unsubscribe or an exclusion posted a moment ago
    /// counts for this read.
    pub async fn current(&self, brand: &str, player: &str) -> Result<Arc<StoredProfile>, ProfileError> {
        let bus = self.bus.clone();
        let latest =
            crate::bus::caught_up(&self.db, &move || bus.notify(), CONSUMER, (brand, player), PATIENCE)
                .await?
                .ok_or(ProfileError::Behind)?;
        // A cached profile serves only if it was read with the player's latest event applied: the
        // consumer forgets a player right after its commit, and a read may come in between.
        let key = (brand.to_string(), player.to_string());
        if let Some((applied, p)) = self.cache.get(&key)
            && applied >= latest
        {
            return Ok(p);
        }
        let changes = self.changes.load(std::sync::atomic::Ordering::SeqCst);
        let p = Arc::new(load(&self.db, &self.key, brand, player).await?.ok_or(ProfileError::NotFound)?);
        if self.changes.load(std::sync::atomic::Ordering::SeqCst) == changes {
            self.cache.insert(key, (latest, p.clone()));
        }
        Ok(p)
    }

    /// Forgets a player's cached profile (their consents or contacts changed outside the consumer).
    pub fn invalidate(&self, brand: &str, player: &str) {
        self.changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.cache.invalidate(&(brand.to_string(), player.to_string()));
    }
}

pub fn new_cache() -> ProfileCache {
    Arc::new(
        moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(std::time::Duration::from_secs(60))
            .build(),
    )
}

impl Handler for ProfileUpdater {
    /// Applies a batch player by player: the batch's states are read in one query per brand, each
    /// player's events applied in memory (their day and stake sums added up first), and every row
    /// written back in a few multi-row statements — fewer round trips, a shorter write lock.
    async fn handle(
        &self,
        conn: &mut sqlx::AnyConnection,
        events: &[LoggedEvent],
        passed: &mut crate::bus::Passed,
    ) -> anyhow::Result<()> {
        passed.forget::<ReadInTx>();
        // By player, in the log's order (the consumer takes the platform's events only).
        let mut players: Vec<((&str, &str), Vec<&LoggedEvent>)> = Vec::new();
        let mut index: HashMap<(&str, &str), usize> = HashMap::new();
        for e in events {
            let key = (e.brand_id.as_str(), e.player_id.as_str());
            let i = *index.entry(key).or_insert_with(|| {
                players.push((key, Vec::new()));
                players.len() - 1
            });
            players[i].1.push(e);
        }
        let mut states = read_states(conn, players.iter().map(|(key, _)| *key)).await?;
        let mut days: Vec<(&str, &str, i64, Day)> = Vec::new();
        let mut stakes: Vec<(&str, &str, &'static str, String, i64)> = Vec::new();
        let mut written: Vec<(&str, &str, String, i64)> = Vec::new();
        for ((brand, player), events) in players {
            let mut s = states.remove(&(brand.to_string(), player.to_string())).unwrap_or_default();
            let mut player_days: BTreeMap<i64, Day> = BTreeMap::new();
            let mut player_stakes: BTreeMap<(&'static str, String), i64> = BTreeMap::new();
            let mut last_seq = 0;
            for e in events {
                let day = apply(&mut s, e, &mut player_stakes)?;
                if day != Day::default() {
                    player_days.entry(local_day(e.occurred_at, &s.time_zone)).or_default().add(&day)?;
                }
                if let Some(channel) = withdrawn_channel(e) {
                    // An unsubscribe or a complaint reported as an event withdraws that channel's
                    // marketing consent, as the same report through feedback does, in force from when the
                    // host learns it (a version is never back-dated under one already in force).
                    let at = self.clock.now_ms();
                    let source = format!("event:{}", crate::model::wire_name(e.event_type));
                    consents::record_in(conn, brand, player, &[("channel", channel, false)], &source, at)
                        .await?;
                }
                last_seq = e.seq;
            }
            days.extend(player_days.into_iter().map(|(d, day)| (brand, player, d, day)));
            stakes.extend(
                player_stakes.into_iter().map(|((kind, name), sum)| (brand, player, kind, name, sum)),
            );
            written.push((brand, player, serde_json::to_string(&s)?, last_seq));
        }
        let backend = Backend::of(conn);
        for chunk in days.chunks(rows_per_statement(backend, 9)) {
            let sql = format!(
                "INSERT INTO player_days (brand_id, player_id, day, deposits, deposit_sum, stakes, wins, bets, sessions)
                 VALUES {} ON CONFLICT (brand_id, player_id, day) DO UPDATE SET
                     deposits = player_days.deposits + excluded.deposits,
                     deposit_sum = player_days.deposit_sum + excluded.deposit_sum,
                     stakes = player_days.stakes + excluded.stakes,
                     wins = player_days.wins + excluded.wins,
                     bets = player_days.bets + excluded.bets,
                     sessions = player_days.sessions + excluded.sessions",
                values_list(chunk.len(), 9)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (brand, player, d, day) in chunk {
                q = q.bind(*brand).bind(*player).bind(*d).bind(day.deposits).bind(day.deposit_sum);
                q = q.bind(day.stakes).bind(day.wins).bind(day.bets).bind(day.sessions);
            }
            q.execute(&mut *conn).await?;
        }
        for chunk in stakes.chunks(rows_per_statement(backend, 5)) {
            let sql = format!(
                "INSERT INTO player_stakes (brand_id, player_id, kind, name, stake_sum) VALUES {}
                 ON CONFLICT (brand_id, player_id, kind, name) DO UPDATE SET stake_sum = player_stakes.stake_sum + excluded.stake_sum",
                values_list(chunk.len(), 5)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (brand, player, kind, name, sum) in chunk {
                q = q.bind(*brand).bind(*player).bind(*kind).bind(name.as_str()).bind(*sum);
            }
            q.execute(&mut *conn).await?;
        }
        for chunk in written.chunks(rows_per_statement(backend, 4)) {
            let sql = format!(
                "INSERT INTO profiles (brand_id, player_id, state, updated_seq) VALUES {}
                 ON CONFLICT (brand_id, player_id) DO UPDATE SET state = excluded.state, updated_seq = excluded.updated_seq",
                values_list(chunk.len(), 4)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (brand, player, state, seq) in chunk {
                q = q.bind(*brand).bind(*player).bind(state.as_str()).bind(*seq);
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }

    fn committed(&self, events: &[LoggedEvent]) {
        for e in events {
            self.cache.invalidate(&(e.brand_id.clone(), e.player_id.clone()));
        }
    }
}

/// The stored states of `players` (brand, player), read brand by brand in a few queries.
async fn read_states<'a>(
    conn: &mut sqlx::AnyConnection,
    players: impl Iterator<Item = (&'a str, &'a str)>,
) -> anyhow::Result<HashMap<(String, String), State>> {
    let mut by_brand: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (brand, player) in players {
        by_brand.entry(brand).or_default().push(player.to_string());
    }
    let mut states = HashMap::new();
    for (brand, ids) in by_brand {
        let which = Players::List(&ids);
        let sql = format!(
            "SELECT player_id, state FROM profiles WHERE brand_id = $1 AND {}",
            which.condition(Backend::of(conn), 2)
        );
        let rows =
            which.bind(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(brand)).fetch_all(&mut *conn).await?;
        for r in rows {
            let state = serde_json::from_str::<State>(&r.try_get::<String, _>("state")?)?.upgrade();
            states.insert((brand.to_string(), r.try_get("player_id")?), state);
        }
    }
    Ok(states)
}

/// The channel whose marketing consent an event withdraws (`crm.unsubscribed`, `crm.complained`).
fn withdrawn_channel(e: &LoggedEvent) -> Option<String> {
    match (&e.event_type, &e.payload) {
        (T::CrmUnsubscribed | T::CrmComplained, EventPayload::Crm(c)) => Some(c.channel.clone()),
        _ => None,
    }
}

/// `a + b`, or the event cannot be applied.
fn sum(a: i64, b: i64) -> Result<i64, Unapplicable> {
    a.checked_add(b).ok_or_else(|| Unapplicable(format!("a sum leaves the range of amounts ({a} + {b})")))
}

/// Applies one event to a player's state; returns what it adds to its day, and adds its stakes.
fn apply(
    s: &mut State,
    e: &LoggedEvent,
    stakes: &mut BTreeMap<(&'static str, String), i64>,
) -> Result<Day, Unapplicable> {
    let at = e.occurred_at;
    s.first_seen_at = Some(s.first_seen_at.map_or(at, |f| f.min(at)));
    let mut day = Day::default();
    match (&e.event_type, &e.payload) {
        (T::PlayerRegistered | T::PlayerUpdated, EventPayload::Player(p)) => {
            if e.event_type == T::PlayerRegistered {
                s.registered_at = Some(at);
            }
            let set = |field: &mut String, v: &Option<String>| {
                if let Some(v) = v {
                    field.clone_from(v);
                }
            };
            set(&mut s.jurisdiction, &p.jurisdiction);
            set(&mut s.locale, &p.locale);
            set(&mut s.time_zone, &p.time_zone);
            set(&mut s.currency, &p.currency);
        }
        (T::SessionStarted, _) => {
            day.sessions = 1;
            s.last_seen_at = Some(s.last_seen_at.map_or(at, |l| l.max(at)));
        }
        (T::SessionEnded, _) => s.last_seen_at = Some(s.last_seen_at.map_or(at, |l| l.max(at))),
        (T::BetPlaced, EventPayload::Bet(b)) => {
            day.bets = 1;
            day.stakes = b.stake.amount_minor;
            s.last_seen_at = Some(s.last_seen_at.map_or(at, |l| l.max(at)));
            for (kind, name) in [("provider", &b.provider), ("category", &b.category)] {
                if !name.is_empty() {
                    let total = stakes.entry((kind, name.clone())).or_default();
                    *total = sum(*total, b.stake.amount_minor)?;
                }
            }
        }
        (T::BetSettled, EventPayload::Bet(b)) => day.wins = b.win_minor.unwrap_or(0),
        (T::PaymentCaptured, EventPayload::Money(p)) => {
            day.deposits = 1;
            day.deposit_sum = p.amount.amount_minor;
            s.last_deposit_at = Some(s.last_deposit_at.map_or(at, |l| l.max(at)));
            s.last_seen_at = Some(s.last_seen_at.map_or(at, |l| l.max(at)));
        }
        (T::KycStatusChanged, EventPayload::Kyc(k)) => s.kyc = *k,
        (T::RgLimitSet, EventPayload::RgLimit(l)) if l.period == m::LimitPeriod::Day => match l.kind {
            m::LimitKind::Deposit => s.deposit_limit_daily_minor = l.amount_minor,
            m::LimitKind::Loss => s.loss_limit_daily_minor = l.amount_minor,
            _ => {}
        },
        (T::RgLimitHit, _) => s.limit_hit_day = Some(local_day(at, &s.time_zone)),
        (T::SelfExclusionStarted, EventPayload::SelfExclusion(x)) => {
            let new = Exclusion {
                register: x.register,
                scope: Some(x.scope),
                started_at: at,
                until: x.until.map(|u| u.as_millisecond()),
                ended_at: None,
            };
            if !s.exclusions.contains(&new) {
                s.exclusions.push(new);
            }
        }
        (T::SelfExclusionEnded, EventPayload::SelfExclusion(x)) => {
            // Ends the exclusions it names — same register, same scope — and no other: an own-brand
            // end never lifts a national register's flag, and a short exclusion ending leaves a longer
            // one in force.
            for ex in s.exclusions.iter_mut().filter(|ex| {
                ex.register == x.register
                    && ex.scope.is_none_or(|s| s == x.scope)
                    && ex.ended_at.is_none()
                    && ex.started_at <= at
            }) {
                ex.ended_at = Some(at);
            }
        }
        _ => {}
    }
    Ok(day)
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Day {
    deposits: i64,
    deposit_sum: i64,
    stakes: i64,
    wins: i64,
    bets: i64,
    sessions: i64,
}

impl Day {
    fn add(&mut self, o: &Day) -> Result<(), Unapplicable> {
        self.deposits = sum(self.deposits, o.deposits)?;
        self.deposit_sum = sum(self.deposit_sum, o.deposit_sum)?;
        self.stakes = sum(self.stakes, o.stakes)?;
        self.wins = sum(self.wins, o.wins)?;
        self.bets = sum(self.bets, o.bets)?;
        self.sessions = sum(self.sessions, o.sessions)?;
        Ok(())
    }
}

/// Erasure: the profile and its aggregates stay (they hold no personal data), under the pseudonym.
pub fn erasure_step<'a>(
    tx: &'a mut crate::store::Tx,
    e: &'a crate::store::erasure::Erased<'a>,
) -> crate::store::erasure::StepFuture<'a> {
    Box::pin(async move {
        for table in ["profiles", "player_days", "player_stakes"] {
            crate::store::erasure::rename(tx, table, e).await?;
        }
        Ok(())
    })
}

/// What is stored for a player, ready to be turned into a profile at any moment.
#[derive(Debug, Clone)]
pub struct StoredProfile {
    state: State,
    /// (day, deposits, deposit_sum, stakes, wins, bets, sessions), last 30 days at load time and older
    /// ones as one total for the average stake.
    days: Vec<[i64; 7]>,
    providers: Vec<(String, i64)>,
    categories: Vec<(String, i64)>,
    birth_date: Option<jiff::civil::Date>,
    consents: m::Consents,
    consent_version: i64,
    /// Every consent version, for the gate (which asks what was in force at send time).
    pub consent_history: Vec<crate::store::consents::ConsentRecord>,
    /// The log seq of the last event applied to the profile: a profile read with the same one has not
    /// changed since (a sweep checks it before writing what it decided).
    pub updated_seq: i64,
}

/// Loads what is stored for a player; `None` if no event of theirs was applied yet.
pub async fn load(
    db: &Db,
    key: &ContactsKey,
    brand: &str,
    player: &str,
) -> anyhow::Result<Option<StoredProfile>> {
    read(&mut *db.pool.acquire().await?, key, brand, player, true).await
}

/// `load` on the caller's connection: a bus consumer reads inside the transaction it writes in, and
/// takes no second connection from the pool while it holds the write lock.
pub async fn load_in(
    conn: &mut sqlx::AnyConnection,
    key: &ContactsKey,
    brand: &str,
    player: &str,
) -> anyhow::Result<Option<StoredProfile>> {
    read(conn, key, brand, player, true).await
}

/// The player's state, age and consents without their activity (features read as zero): what the
/// policy gate decides from, in fewer reads.
pub async fn load_without_activity(
    db: &Db,
    key: &ContactsKey,
    brand: &str,
    player: &str,
) -> anyhow::Result<Option<StoredProfile>> {
    read(&mut *db.pool.acquire().await?, key, brand, player, false).await
}

async fn read(
    conn: &mut sqlx::AnyConnection,
    key: &ContactsKey,
    brand: &str,
    player: &str,
    activity: bool,
) -> anyhow::Result<Option<StoredProfile>> {
    let Some(row) =
        sqlx::query("SELECT state, updated_seq FROM profiles WHERE brand_id = $1 AND player_id = $2")
            .bind(brand)
            .bind(player)
            .fetch_optional(&mut *conn)
            .await?
    else {
        return Ok(None);
    };
    let state = serde_json::from_str::<State>(&row.try_get::<String, _>("state")?)?.upgrade();
    let updated_seq = row.try_get("updated_seq")?;
    let mut days = Vec::new();
    let mut providers = Vec::new();
    let mut categories = Vec::new();
    if activity {
        days = sqlx::query(
            "SELECT day, deposits, deposit_sum, stakes, wins, bets, sessions FROM player_days
             WHERE brand_id = $1 AND player_id = $2 ORDER BY day",
        )
        .bind(brand)
        .bind(player)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(day_of)
        .collect::<Result<Vec<_>, _>>()?;
        for r in sqlx::query(
            "SELECT kind, name, stake_sum FROM player_stakes WHERE brand_id = $1 AND player_id = $2",
        )
        .bind(brand)
        .bind(player)
        .fetch_all(&mut *conn)
        .await?
        {
            let kind: String = r.try_get("kind")?;
            let entry = (r.try_get::<String, _>("name")?, r.try_get::<i64, _>("stake_sum")?);
            if kind == "provider" { providers.push(entry) } else { categories.push(entry) }
        }
    }
    let birth_date =
        contacts::get(&mut *conn, key, brand, player, "birth_date").await?.and_then(|d| d.parse().ok());
    let consent_history = crate::store::consents::history(conn, brand, player).await?;
    let (consents, consent_version) = crate::store::consents::current(&consent_history);
    Ok(Some(StoredProfile {
        state,
        days,
        providers,
        categories,
        birth_date,
        consents,
        consent_version,
        updated_seq,
        consent_history,
    }))
}

fn day_of(r: &sqlx::any::AnyRow) -> Result<[i64; 7], sqlx::Error> {
    Ok([
        r.try_get("day")?,
        r.try_get("deposits")?,
        r.try_get("deposit_sum")?,
        r.try_get("stakes")?,
        r.try_get("wins")?,
        r.try_get("bets")?,
        r.try_get("sessions")?,
    ])
}

/// Pages of a population read at once, each by its own task on its own connection.
const READ_AHEAD: usize = 2;

/// One page of a brand's population: the players with ids in (`after`, `last`] (erased players'
/// pseudonyms left out).
pub struct PopulationPage {
    pub after: String,
    pub last: String,
    pub profiles: Vec<(String, StoredProfile)>,
    /// How long reading it took (from when its reader started).
    pub took: std::time::Duration,
}

/// A brand's whole population, page by page in player-id order, read without any lock: what sweeps
/// and impact reports go through. A walker finds where each page ends (an index-only read) and hands
/// the page to a reader task of its own, so `READ_AHEAD` pages are read at once — on as many
/// connections and cores — while the caller works on the one before. Each reader also turns its page
/// into what the caller needs (`shape`), off the caller's task. Dropping it stops the reading.
pub struct Population<T> {
    pages: tokio::sync::mpsc::Receiver<tokio::task::JoinHandle<anyhow::Result<T>>>,
    walker: tokio::task::JoinHandle<()>,
}

impl<T: Send + 'static> Population<T> {
    pub fn read(
        db: Db,
        key: ContactsKey,
        brand: String,
        size: i64,
        shape: impl Fn(PopulationPage) -> T + Send + Sync + 'static,
    ) -> Population<T> {
        let (pages, receiver) = tokio::sync::mpsc::channel(READ_AHEAD - 1);
        let shape = Arc::new(shape);
        let walker = tokio::spawn(async move {
            let mut after = String::new();
            loop {
                let last = match page_end(&db, &brand, &after, size).await {
                    Ok(Some(last)) => last,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = pages.send(tokio::spawn(async move { Err(e) })).await;
                        return;
                    }
                };
                let after = std::mem::replace(&mut after, last.clone());
                let (db, key, brand, shape) = (db.clone(), key.clone(), brand.clone(), shape.clone());
                let read = tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let which = Players::Range(&after, &last);
                    let profiles = load_players(&mut *db.pool.acquire().await?, &key, &brand, which).await?;
                    Ok(shape(PopulationPage { after, last, profiles, took: started.elapsed() }))
                });
                if pages.send(read).await.is_err() {
                    return;
                }
            }
        });
        Population { pages: receiver, walker }
    }

    /// The next page; `None` after the last.
    pub async fn next(&mut self) -> anyhow::Result<Option<T>> {
        match self.pages.recv().await {
            Some(read) => Ok(Some(read.await??)),
            None => Ok(None),
        }
    }
}

impl<T> Drop for Population<T> {
    fn drop(&mut self) {
        self.walker.abort();
    }
}

/// The last player id of the page of `size` after `after` (the brand's last one if fewer are left).
async fn page_end(db: &Db, brand: &str, after: &str, size: i64) -> anyhow::Result<Option<String>> {
    let row = sqlx::query(
        "SELECT COALESCE(
             (SELECT player_id FROM profiles WHERE brand_id = $1 AND player_id > $2
              ORDER BY player_id LIMIT 1 OFFSET $3),
             (SELECT MAX(player_id) FROM profiles WHERE brand_id = $1 AND player_id > $2)) AS last",
    )
    .bind(brand)
    .bind(after)
    .bind(size - 1)
    .fetch_one(&db.pool)
    .await?;
    Ok(row.try_get("last")?)
}

/// `load_in` for many players at once, in a handful of queries (a bus consumer's batch): those with a
/// profile, in no particular order. A profile a consumer before this one read in the same transaction
/// is passed on (`passed`) instead of read again; those read here are passed on in turn.
pub async fn load_many_in(
    conn: &mut sqlx::AnyConnection,
    key: &ContactsKey,
    brand: &str,
    players: &[String],
    passed: &mut crate::bus::Passed,
) -> anyhow::Result<Vec<(String, Arc<StoredProfile>)>> {
    let read: &mut ReadInTx = passed.get();
    let mut out = Vec::with_capacity(players.len());
    let mut missing = Vec::new();
    for p in players {
        match read.0.get(&(brand.to_string(), p.clone())) {
            Some(stored) => out.push((p.clone(), stored.clone())),
            None => missing.push(p.clone()),
        }
    }
    if !missing.is_empty() {
        for (p, stored) in load_players(conn, key, brand, Players::List(&missing)).await? {
            let stored = Arc::new(stored);
            read.0.insert((brand.to_string(), p.clone()), stored.clone());
            out.push((p, stored));
        }
    }
    Ok(out)
}

/// The profiles read in a consumer's transaction, by (brand, player), passed on to the consumers after
/// it; the profile consumer, which changes them, takes them out first.
#[derive(Default)]
struct ReadInTx(HashMap<(String, String), Arc<StoredProfile>>);

/// The stored profiles of `which` players (those with a profile), in a handful of queries.
async fn load_players(
    conn: &mut sqlx::AnyConnection,
    key: &ContactsKey,
    brand: &str,
    which: Players<'_>,
) -> anyhow::Result<Vec<(String, StoredProfile)>> {
    let from = format!("profiles WHERE brand_id = $1 AND {}", which.condition(Backend::of(conn), 2));
    let columns = format!("player_id, updated_seq, {JSON_STATE}");
    let rows = json_rows(conn, &columns, &from, "player_id", |q| which.bind(q.bind(brand))).await?;
    assemble(conn, key, brand, which, rows).await
}

/// The stored profiles of `rows` (player_id, updated_seq, state): their days, stakes, birth dates and consents read
/// for `which` players at once.
async fn assemble(
    conn: &mut sqlx::AnyConnection,
    key: &ContactsKey,
    brand: &str,
    which: Players<'_>,
    rows: Vec<(String, i64, State)>,
) -> anyhow::Result<Vec<(String, StoredProfile)>> {
    let mut days: HashMap<String, Vec<[i64; 7]>> = HashMap::new();
    type Day = (String, i64, i64, i64, i64, i64, i64, i64);
    let columns = "player_id, day, deposits, deposit_sum, stakes, wins, bets, sessions";
    let from = format!("player_days WHERE brand_id = $1 AND {}", which.condition(Backend::of(conn), 2));
    for (player, day, deposits, deposit_sum, stakes, wins, bets, sessions) in
        json_rows::<Day>(conn, columns, &from, "player_id, day", |q| which.bind(q.bind(brand))).await?
    {
        days.entry(player).or_default().push([day, deposits, deposit_sum, stakes, wins, bets, sessions]);
    }
    // By player: (providers, categories), each (name, stake sum).
    type Stakes = (Vec<(String, i64)>, Vec<(String, i64)>);
    let mut stakes: HashMap<String, Stakes> = HashMap::new();
    let from = format!("player_stakes WHERE brand_id = $1 AND {}", which.condition(Backend::of(conn), 2));
    type Stake = (String, String, String, i64);
    for (player, kind, name, sum) in
        json_rows::<Stake>(conn, "player_id, kind, name, stake_sum", &from, "player_id, kind, name", |q| {
            which.bind(q.bind(brand))
        })
        .await?
    {
        let e = stakes.entry(player).or_default();
        if kind == "provider" { e.0.push((name, sum)) } else { e.1.push((name, sum)) }
    }
    let births = contacts::of_players(&mut *conn, key, brand, which, "birth_date").await?;
    let mut consents = crate::store::consents::histories(conn, brand, which).await?;
    let mut out = Vec::with_capacity(rows.len());
    for (player, updated_seq, state) in rows {
        if crate::store::erasure::is_pseudonym(&player) {
            continue;
        }
        let state = state.upgrade();
        let consent_history = consents.remove(&player).unwrap_or_default();
        let (c, consent_version) = crate::store::consents::current(&consent_history);
        let (providers, categories) = stakes.remove(&player).unwrap_or_default();
        out.push((
            player.clone(),
            StoredProfile {
                state,
                days: days.remove(&player).unwrap_or_default(),
                providers,
                categories,
                birth_date: births.get(&player).and_then(|d| d.parse().ok()),
                consents: c,
                consent_version,
                consent_history,
                updated_seq,
            },
        ));
    }
    Ok(out)
}

/// A churn score in [0, 1] from recency, activity trend and deposit frequency: a logistic of documented
/// inputs until an ML score is fed in (features.churn_inputs in the API response).
fn churn_score(days_since_seen: u32, sessions_7d: u32, sessions_30d: u32, deps_30d: u32) -> f64 {
    let weekly_avg = f64::from(sessions_30d) / 30.0 * 7.0;
    let trend = if weekly_avg > 0.0 { f64::from(sessions_7d) / weekly_avg } else { 0.0 };
    let z = -1.5 + 0.15 * f64::from(days_since_seen.min(60))
        - 0.8 * trend.min(2.0)
        - 0.3 * f64::from(deps_30d.min(5));
    let s = 1.0 / (1.0 + (-z).exp());
    (s * 1000.0).round() / 1000.0
}

/// Whole years of age on `today` (a birthday on 29 February turns on 1 March in other years).
pub fn age_on(birth: jiff::civil::Date, today: jiff::civil::Date) -> i32 {
    let mut age = i32::from(today.year()) - i32::from(birth.year());
    if (today.month(), today.day()) < (birth.month(), birth.day()) {
        age -= 1;
    }
    age
}

fn age_band(birth: jiff::civil::Date, today: jiff::civil::Date) -> m::AgeBand {
    match age_on(birth, today) {
        ..18 => m::AgeBand::Unknown,
        18..=20 => m::AgeBand::Age18To20,
        21..=23 => m::AgeBand::Age21To23,
        24..=25 => m::AgeBand::Age24To25,
        26..=34 => m::AgeBand::Age26To34,
        35..=54 => m::AgeBand::Age35To54,
        _ => m::AgeBand::Age55Plus,
    }
}

/// The profile as of `now`, with its RG status and consents as the host knows them.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileView {
    #[serde(flatten)]
    pub profile: m::Profile,
    pub last_seen_at: Option<Timestamp>,
    pub last_deposit_at: Option<Timestamp>,
    pub registered_at: Option<Timestamp>,
    pub self_exclusion_registers: Vec<m::ExclusionRegister>,
    /// The exact age on the player's own date today (from the encrypted birth date; none if unknown):
    /// what the gate checks against each jurisdiction's minimum. Not shown: the band is.
    #[serde(skip)]
    pub age: Option<i32>,
    /// The consent version in force (0: none recorded).
    pub consent_version: i64,
    pub churn_inputs: serde_json::Value,
}

impl StoredProfile {
    pub fn at(&self, brand: &str, player: &str, now: Timestamp) -> ProfileView {
        let s = &self.state;
        let today = local_day(now.as_millisecond(), &s.time_zone);
        // Sums saturate: a profile must read whatever its totals, never fail.
        let window = |n: i64, col: usize| -> i64 {
            self.days
                .iter()
                .filter(|d| d[0] > today - n && d[0] <= today)
                .fold(0, |a, d| a.saturating_add(d[col]))
        };
        let ms_days =
            |ms: i64| u32::try_from((now.as_millisecond() - ms).max(0) / DAY_MS).unwrap_or(u32::MAX);
        let days_since_seen = s.last_seen_at.or(s.first_seen_at).map_or(0, ms_days);
        let total_bets = self.days.iter().fold(0i64, |a, d| a.saturating_add(d[5]));
        let total_stakes = self.days.iter().fold(0i64, |a, d| a.saturating_add(d[3]));
        let (sessions_7d, sessions_30d, deps_30d) =
            (window(7, 6) as u32, window(30, 6) as u32, window(30, 1) as u32);
        let ranked = |v: &[(String, i64)]| {
            let mut v = v.to_vec();
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.into_iter().take(5).map(|(n, _)| n).collect::<Vec<_>>()
        };
        let tz = TimeZone::get(&s.time_zone).unwrap_or(TimeZone::UTC);
        let local_today = now.to_zoned_datetime(tz.clone()).date();
        let features = m::Features {
            tenure_days: s.registered_at.or(s.first_seen_at).map_or(0, ms_days),
            dep_count_30d: deps_30d,
            dep_sum_30d_minor: window(30, 2),
            net_loss_today_minor: window(1, 3).saturating_sub(window(1, 4)),
            net_loss_7d_minor: window(7, 3).saturating_sub(window(7, 4)),
            net_loss_30d_minor: window(30, 3).saturating_sub(window(30, 4)),
            bets_7d: window(7, 5) as u32,
            sessions_7d,
            avg_stake_minor: if total_bets > 0 { total_stakes / total_bets } else { 0 },
            days_since_last_deposit: s.last_deposit_at.map(ms_days),
            days_since_last_seen: days_since_seen,
            churn_score: churn_score(days_since_seen, sessions_7d, sessions_30d, deps_30d),
            fav_providers: ranked(&self.providers),
            fav_categories: ranked(&self.categories),
        };
        let ts = |ms: Option<i64>| ms.and_then(|v| Timestamp::from_millisecond(v).ok());
        let in_force: Vec<&Exclusion> =
            s.exclusions.iter().filter(|x| x.in_force(now.as_millisecond())).collect();
        let excluded = !in_force.is_empty();
        // Until the last of them ends; none if any is indefinite.
        let excluded_until = if in_force.iter().any(|x| x.until.is_none()) {
            None
        } else {
            in_force.iter().filter_map(|x| x.until).max()
        };
        let mut registers: Vec<m::ExclusionRegister> = Vec::new();
        for x in &in_force {
            if !registers.contains(&x.register) {
                registers.push(x.register);
            }
        }
        ProfileView {
            profile: m::Profile {
                player_id: player.to_string(),
                brand_id: brand.to_string(),
                jurisdiction: s.jurisdiction.clone(),
                locale: s.locale.clone(),
                time_zone: s.time_zone.clone(),
                currency: s.currency.clone(),
                age_band: self.birth_date.map_or(m::AgeBand::Unknown, |b| age_band(b, local_today)),
                kyc: s.kyc,
                rg: m::RgStatus {
                    self_excluded: excluded,
                    self_excluded_until: ts(excluded_until),
                    cooling_off: s.cooling_off_until.is_some_and(|u| u > now.as_millisecond()),
                    harm_flag: s.harm_flag,
                    limit_hit_today: s.limit_hit_day == Some(today),
                    deposit_limit_daily_minor: s.deposit_limit_daily_minor,
                    loss_limit_daily_minor: s.loss_limit_daily_minor,
                },
                consents: self.consents.clone(),
                features,
            },
            last_seen_at: ts(s.last_seen_at),
            last_deposit_at: ts(s.last_deposit_at),
            registered_at: ts(s.registered_at),
            self_exclusion_registers: registers,
            age: self.birth_date.map(|b| age_on(b, local_today)),
            consent_version: self.consent_version,
            churn_inputs: serde_json::json!({
                "days_since_last_seen": days_since_seen, "sessions_7d": sessions_7d,
                "sessions_30d": sessions_30d, "dep_count_30d": deps_30d,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_bands_turn_on_the_birthday() {
        let b = jiff::civil::date(2002, 6, 15);
        assert_eq!(age_band(b, jiff::civil::date(2026, 6, 14)), m::AgeBand::Age21To23);
        assert_eq!(age_band(b, jiff::civil::date(2026, 6, 15)), m::AgeBand::Age24To25);
        assert_eq!(
            age_band(jiff::civil::date(2010, 1, 1), jiff::civil::date(2026, 6, 15)),
            m::AgeBand::Unknown
        );
    }

    #[test]
    fn days_are_the_players_own() {
        // 23:30 UTC on 23 Nov is already 24 Nov in Berlin.
        let ms = "2026-11-23T23:30:00Z".parse::<Timestamp>().unwrap().as_millisecond();
        assert_eq!(local_day(ms, "Europe/Berlin"), local_day(ms, "UTC") + 1);
    }

    #[test]
    fn an_exclusion_kept_before_scopes_were_recorded_still_ends() {
        let old: State = serde_json::from_str(
            r#"{"self_excluded": true, "self_excluded_until": null, "exclusion_registers": ["own"]}"#,
        )
        .unwrap();
        let mut s = old.upgrade();
        assert_eq!(s.exclusions.len(), 1);
        assert!(s.exclusions[0].in_force(0));
        let end = LoggedEvent {
            seq: 9,
            tx: 0,
            brand_id: "A".into(),
            event_id: "e9".into(),
            player_id: "p".into(),
            event_type: T::SelfExclusionEnded,
            occurred_at: 1_000,
            received_at: 1_000,
            payload: EventPayload::SelfExclusion(m::SelfExclusion {
                scope: m::ExclusionScope::Brand,
                register: m::ExclusionRegister::Own,
                until: None,
            }),
        };
        apply(&mut s, &end, &mut BTreeMap::new()).unwrap();
        assert!(!s.exclusions[0].in_force(2_000), "ended by the end naming its register");
        // Written back, the state keeps the exclusion list only.
        let written = serde_json::to_value(&s).unwrap();
        assert!(written.get("self_excluded").is_none() && written["exclusions"].is_array(), "{written}");
    }

    #[test]
    fn churn_rises_with_absence() {
        assert!(churn_score(30, 0, 2, 0) > 0.9);
        assert!(churn_score(1, 5, 20, 3) < 0.1);
    }
}
