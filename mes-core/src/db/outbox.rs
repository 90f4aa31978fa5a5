//! `chain_outbox`: the transactional outbox of messages to the chain.
//!
//! A change and the message announcing it are committed together ([`enqueue`] inside the
//! caller's transaction); a relay then [`claim_due`]s rows, publishes them and settles
//! each with [`mark_done`], [`retry_later`] or [`mark_failed`]. Nothing is lost while
//! Kafka or the server is down, a crashed relay's rows come back when their lease ends,
//! and rows sharing an ordering key are delivered one at a time, in id order.

use chrono::{Duration, NaiveDateTime};
use diesel::dsl::count_star;
use diesel::prelude::*;
use diesel::sql_types::Bool;

use super::schema::chain_outbox;
use super::{DbConnection, now, returning};

/// Waiting for its first or next attempt.
pub const PENDING: &str = "pending";
/// Claimed by a relay until `locked_until`.
pub const IN_FLIGHT: &str = "in_flight";
/// Delivered; the chain's answer is in `chain_message`.
pub const DONE: &str = "done";
/// The chain answered with an error, or the row reached a cap
/// ([`fail_overdue`]): nothing retries it until an operator does ([`retry_failed`]).
pub const FAILED: &str = "failed";
/// A failed row an operator gave up on ([`discard_failed`]), with who and why: it stays
/// as the record of that decision and is never sent.
pub const DISCARDED: &str = "discarded";

/// Every status, in the order a row can go through them.
pub const STATUSES: [&str; 5] = [PENDING, IN_FLIGHT, DONE, FAILED, DISCARDED];

/// A stored outbox message.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = chain_outbox)]
pub struct OutboxRow {
    /// Database id; also the delivery order within an ordering key.
    pub id: i64,
    /// Kafka topic to publish to (e.g. `BLK_Rec`).
    pub topic: String,
    /// Identifies the message across retries and restarts: enqueuing it again is a no-op.
    pub dedup_key: String,
    /// Rows sharing it are delivered one at a time, in id order (e.g. one unit's updates).
    pub ordering_key: String,
    /// JSON of the envelope body.
    pub payload: String,
    /// One of [`STATUSES`].
    pub status: String,
    /// How many times a relay has claimed the row.
    pub attempts: i32,
    /// A pending row is not claimed before this time (UTC).
    pub next_attempt_at: NaiveDateTime,
    /// An in-flight row is someone's until this time (UTC), then claimable again.
    pub locked_until: Option<NaiveDateTime>,
    /// Why the last attempt did not succeed.
    pub last_error: Option<String>,
    /// The chain's answer once delivered.
    pub chain_message: Option<String>,
    /// When the row was enqueued (UTC).
    pub created_at: NaiveDateTime,
    /// When the row last changed (UTC).
    pub updated_at: NaiveDateTime,
    /// When the chain acknowledged the message (UTC).
    pub delivered_at: Option<NaiveDateTime>,
    /// The W3C `traceparent` of the work that enqueued the row: the record the relay
    /// sends for it continues that trace ([`crate::trace`]). `None` on rows enqueued
    /// before traces were kept.
    pub traceparent: Option<String>,
    /// Who discarded the row (the operator's name), for [`DISCARDED`] rows.
    pub discarded_by: Option<String>,
    /// Why it was discarded, in the operator's words.
    pub discard_reason: Option<String>,
    /// When it was discarded (UTC).
    pub discarded_at: Option<NaiveDateTime>,
    /// When an operator last put it back to pending ([`retry_failed`]); the age cap
    /// counts from then rather than from `created_at`.
    pub retried_at: Option<NaiveDateTime>,
    /// When retention emptied its payload ([`purge_delivered`]); the row stays, a
    /// tombstone whose `dedup_key` still refuses a second enqueue.
    pub purged_at: Option<NaiveDateTime>,
    /// The row failed on the chain's answer (or is no request), not on a cap: a retry
    /// sends it under a new idempotency key ([`OutboxRow::idem_key`]).
    pub refused: bool,
    /// The idempotency key a retry of a refused row is sent under; `None`: the
    /// `dedup_key`.
    pub idem: Option<String>,
}

impl OutboxRow {
    /// The idempotency key (`idem`) the relay sends the row with: its `dedup_key`, until
    /// an operator retried it after the chain refused it. A gateway answers a key it has
    /// seen with its first answer (docs/protocol.md §2), so the same key would only
    /// fetch the refusal again; a refusal applied nothing, so a new key cannot apply
    /// anything twice. A row failed on a cap keeps its key: its last send may have
    /// arrived, and the same key makes sending it again harmless.
    pub fn idem_key(&self) -> &str {
        self.idem.as_deref().unwrap_or(&self.dedup_key)
    }
}

/// A message to [`enqueue`]; it becomes due at once.
#[derive(Debug, Clone, Copy, Insertable)]
#[diesel(table_name = chain_outbox)]
pub struct NewOutboxRow<'a> {
    /// See [`OutboxRow::topic`].
    pub topic: &'a str,
    /// See [`OutboxRow::dedup_key`].
    pub dedup_key: &'a str,
    /// See [`OutboxRow::ordering_key`].
    pub ordering_key: &'a str,
    /// See [`OutboxRow::payload`].
    pub payload: &'a str,
    /// See [`OutboxRow::traceparent`].
    pub traceparent: Option<&'a str>,
}

/// Rows per status, for metrics and the console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    /// Rows waiting for an attempt.
    pub pending: i64,
    /// Rows claimed by a relay.
    pub in_flight: i64,
    /// Delivered rows.
    pub done: i64,
    /// Rows the chain refused, or that reached a cap.
    pub failed: i64,
    /// Failed rows an operator discarded.
    pub discarded: i64,
}

impl OutboxDepth {
    /// Each status with its count, in [`STATUSES`] order: what `/metrics` and the
    /// console show.
    pub fn by_status(&self) -> [(&'static str, i64); 5] {
        [
            (PENDING, self.pending),
            (IN_FLIGHT, self.in_flight),
            (DONE, self.done),
            (FAILED, self.failed),
            (DISCARDED, self.discarded),
        ]
    }
}

/// Adds `new` unless a row with its `dedup_key` exists; returns whether it inserted.
///
/// `ON CONFLICT DO NOTHING` raises no error, so this is safe inside the caller's
/// transaction on PostgreSQL (a failed insert would abort it).
pub fn enqueue(conn: &mut DbConnection, new: &NewOutboxRow<'_>) -> QueryResult<bool> {
    let at = now();
    let statement = diesel::insert_into(chain_outbox::table)
        .values((
            new,
            chain_outbox::status.eq(PENDING),
            chain_outbox::attempts.eq(0),
            chain_outbox::next_attempt_at.eq(at),
            chain_outbox::created_at.eq(at),
            chain_outbox::updated_at.eq(at),
        ))
        .on_conflict(chain_outbox::dedup_key)
        .do_nothing();
    per_backend!(conn, |c| statement.execute(c)).map(|inserted| inserted > 0)
}

/// True for a row that no earlier unsettled row of its ordering key holds back.
const HEAD_OF_ORDERING_KEY: &str = "NOT EXISTS (SELECT 1 FROM chain_outbox AS earlier \
     WHERE earlier.ordering_key = chain_outbox.ordering_key \
     AND earlier.id < chain_outbox.id \
     AND earlier.status IN ('pending', 'in_flight'))";

/// Ids of the rows [`claim_due`] may take at `$now`, oldest first, leaving the rows of
/// the topics `$held` alone.
macro_rules! due_ids {
    ($now:expr, $limit:expr, $held:expr) => {
        chain_outbox::table
            .filter(chain_outbox::topic.ne_all($held))
            .filter(
                chain_outbox::status
                    .eq(PENDING)
                    .and(chain_outbox::next_attempt_at.le($now))
                    .nullable()
                    .or(chain_outbox::status
                        .eq(IN_FLIGHT)
                        .nullable()
                        .and(chain_outbox::locked_until.lt($now))),
            )
            .filter(diesel::dsl::sql::<Bool>(HEAD_OF_ORDERING_KEY))
            .order(chain_outbox::id)
            .limit($limit)
            .select(chain_outbox::id)
    };
}

/// Marks the rows `$ids` in flight until `$until` and returns them.
macro_rules! take {
    ($conn:expr, $ids:expr, $until:expr) => {
        diesel::update(chain_outbox::table.filter(chain_outbox::id.eq_any($ids)))
            .set((
                chain_outbox::status.eq(IN_FLIGHT),
                chain_outbox::locked_until.eq(Some($until)),
                chain_outbox::attempts.eq(chain_outbox::attempts + 1),
                chain_outbox::updated_at.eq(now()),
            ))
            .returning(chain_outbox::all_columns)
            .get_results::<OutboxRow>($conn)
    };
}

/// Atomically claims up to `limit` due rows for `lease`, oldest first.
///
/// A row is due when it is pending with `next_attempt_at <= now`, or in flight with a
/// lease that ended before `now` (its relay crashed), and no earlier pending or
/// in-flight row shares its ordering key. Claimed rows are in flight until
/// `now + lease`, with `attempts` incremented.
///
/// PostgreSQL locks the chosen rows with `FOR UPDATE SKIP LOCKED`, so relays sharing a
/// database never claim the same row; SQLite takes the write lock up front
/// (`BEGIN IMMEDIATE`) since it has no row locks.
pub fn claim_due(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    limit: i64,
    lease: Duration,
) -> QueryResult<Vec<OutboxRow>> {
    claim_due_except(conn, now, limit, lease, &[])
}

/// [`claim_due`], but rows whose topic is in `held` are neither claimed nor charged an
/// attempt: the relay's circuit breaker holds a topic the chain does not answer this
/// way. Rows after a held row in its ordering key stay behind it, as always.
pub fn claim_due_except(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    limit: i64,
    lease: Duration,
    held: &[String],
) -> QueryResult<Vec<OutboxRow>> {
    claim(conn, now, limit, lease, held, None)
}

/// Claims the next due row of `ordering_key` for `lease`, as [`claim_due_except`] would
/// if it were the only key: the relay calls it when it has just settled that key's
/// previous row, so a backlog on one key goes out back to back instead of one row per
/// batch. `None` when the key has no due row (or another relay holds it).
pub fn claim_next_of_key(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    ordering_key: &str,
    lease: Duration,
    held: &[String],
) -> QueryResult<Option<OutboxRow>> {
    Ok(claim(conn, now, 1, lease, held, Some(ordering_key))?
        .into_iter()
        .next())
}

/// What [`settle_then_claim_next`] claims after the settlement: the next due row of
/// `ordering_key`, as [`claim_next_of_key`] would.
#[derive(Debug, Clone, Copy)]
pub struct NextOfKey<'a> {
    /// The settled row's ordering key.
    pub ordering_key: &'a str,
    /// The claim's clock.
    pub now: NaiveDateTime,
    /// How long the claimed row is the relay's.
    pub lease: Duration,
    /// Topics on hold, as for [`claim_due_except`].
    pub held: &'a [String],
}

/// Settles a row with `settle` ([`mark_done`], [`mark_failed`], …) and claims the next
/// due row of its ordering key, in one transaction: a backlog on one key pays one commit
/// per delivered row instead of two, and the relay's next send waits for one database
/// round trip instead of two.
///
/// The claim runs in a savepoint: when it fails, the settlement still commits and the
/// claim's error comes back beside the settled row. `settle`'s error (`NotFound`: the
/// row was settled by someone else) rolls everything back and claims nothing.
pub fn settle_then_claim_next(
    conn: &mut DbConnection,
    settle: impl FnOnce(&mut DbConnection) -> QueryResult<OutboxRow>,
    next: NextOfKey<'_>,
) -> QueryResult<(OutboxRow, QueryResult<Option<OutboxRow>>)> {
    conn.transaction(|conn| {
        let settled = settle(conn)?;
        let claimed = claim(
            conn,
            next.now,
            1,
            next.lease,
            next.held,
            Some(next.ordering_key),
        )
        .map(|rows| rows.into_iter().next());
        Ok((settled, claimed))
    })
}

/// The claim of [`claim_due_except`] and [`claim_next_of_key`]: all keys, or one.
fn claim(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    limit: i64,
    lease: Duration,
    held: &[String],
    key: Option<&str>,
) -> QueryResult<Vec<OutboxRow>> {
    let until = now + lease;
    // The due rows' ids, of every key or of `key` alone, on one backend.
    macro_rules! due {
        ($conn:expr, |$query:ident| $lock:expr) => {
            match key {
                None => {
                    let $query = due_ids!(now, limit, held);
                    $lock.load::<i64>($conn)
                }
                Some(key) => {
                    let $query =
                        due_ids!(now, limit, held).filter(chain_outbox::ordering_key.eq(key));
                    $lock.load::<i64>($conn)
                }
            }
        };
    }
    let mut rows = match conn {
        DbConnection::Pg(pg) => pg.transaction(|pg| {
            let ids = due!(pg, |query| query.for_update().skip_locked())?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            take!(pg, &ids, until)
        }),
        DbConnection::Sqlite(lite) => {
            let claim = |lite: &mut SqliteConnection| {
                let ids = due!(lite, |query| query)?;
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                take!(lite, &ids, until)
            };
            super::sqlite_write_transaction(lite, claim)
        }
    }?;
    rows.sort_by_key(|row| row.id);
    Ok(rows)
}

/// Records a delivery and the chain's answer; the row is never claimed again.
pub fn mark_done(
    conn: &mut DbConnection,
    id: i64,
    chain_message: Option<&str>,
) -> QueryResult<OutboxRow> {
    let at = now();
    diesel::update(chain_outbox::table.find(id))
        .set((
            chain_outbox::status.eq(DONE),
            chain_outbox::chain_message.eq(chain_message),
            chain_outbox::locked_until.eq(None::<NaiveDateTime>),
            chain_outbox::delivered_at.eq(Some(at)),
            chain_outbox::updated_at.eq(at),
        ))
        .returning(returning::<OutboxRow>())
        .get_result(conn)
}

/// Gives up on an in-flight row because the chain answered with an error.
///
/// `NotFound` if the row is not in flight (missing, or settled by someone else).
pub fn mark_failed(conn: &mut DbConnection, id: i64, error: &str) -> QueryResult<OutboxRow> {
    leave_flight(conn, id, FAILED, None, error, Flags::REFUSED)
}

/// Gives up on an in-flight row the chain never answered, because it reached a cap
/// (`MES_OUTBOX_MAX_ATTEMPTS`, `MES_OUTBOX_MAX_AGE`); `reason` says which. Unlike
/// [`mark_failed`], a retry keeps its idempotency key ([`OutboxRow::idem_key`]).
///
/// `NotFound` if the row is not in flight (missing, or settled by someone else).
pub fn give_up(conn: &mut DbConnection, id: i64, reason: &str) -> QueryResult<OutboxRow> {
    leave_flight(conn, id, FAILED, None, reason, Flags::default())
}

/// Returns an in-flight row to pending after a transient failure; it is not claimed
/// before `next_attempt_at`.
///
/// `NotFound` if the row is not in flight (missing, or settled by someone else).
pub fn retry_later(
    conn: &mut DbConnection,
    id: i64,
    next_attempt_at: NaiveDateTime,
    error: &str,
) -> QueryResult<OutboxRow> {
    leave_flight(
        conn,
        id,
        PENDING,
        Some(next_attempt_at),
        error,
        Flags::default(),
    )
}

/// Returns an in-flight row to pending without counting its claim as an attempt: it
/// was not sent (its topic is on hold). Due again at `next_attempt_at`; `note` says why
/// it waits.
///
/// `NotFound` if the row is not in flight (missing, or settled by someone else).
pub fn release_unsent(
    conn: &mut DbConnection,
    id: i64,
    next_attempt_at: NaiveDateTime,
    note: &str,
) -> QueryResult<OutboxRow> {
    leave_flight(
        conn,
        id,
        PENDING,
        Some(next_attempt_at),
        note,
        Flags::UNCOUNT,
    )
}

/// How [`leave_flight`] leaves flight.
#[derive(Debug, Clone, Copy, Default)]
struct Flags {
    /// The claim is not counted as an attempt.
    uncount_claim: bool,
    /// The chain refused the row ([`OutboxRow::refused`]).
    refused: bool,
}

impl Flags {
    const UNCOUNT: Flags = Flags {
        uncount_claim: true,
        refused: false,
    };
    const REFUSED: Flags = Flags {
        uncount_claim: false,
        refused: true,
    };
}

/// Takes an in-flight row out of flight undelivered, what [`mark_failed`],
/// [`give_up`], [`retry_later`] and [`release_unsent`] have in common: `status` with
/// `note` as the last error, due again at `next_attempt_at` if given, as `flags` say.
/// `NotFound` if the row is not in flight.
fn leave_flight(
    conn: &mut DbConnection,
    id: i64,
    status: &str,
    next_attempt_at: Option<NaiveDateTime>,
    note: &str,
    flags: Flags,
) -> QueryResult<OutboxRow> {
    let uncount_claim = flags.uncount_claim;
    diesel::update(
        chain_outbox::table
            .find(id)
            .filter(chain_outbox::status.eq(IN_FLIGHT)),
    )
    .set((
        chain_outbox::status.eq(status),
        uncount_claim.then(|| chain_outbox::attempts.eq(chain_outbox::attempts - 1)),
        next_attempt_at.map(|at| chain_outbox::next_attempt_at.eq(at)),
        chain_outbox::last_error.eq(Some(note)),
        chain_outbox::refused.eq(flags.refused),
        chain_outbox::locked_until.eq(None::<NaiveDateTime>),
        chain_outbox::updated_at.eq(now()),
    ))
    .returning(returning::<OutboxRow>())
    .get_result(conn)
}

/// How many rows are in each status.
pub fn depth(conn: &mut DbConnection) -> QueryResult<OutboxDepth> {
    let counts: Vec<(String, i64)> = chain_outbox::table
        .group_by(chain_outbox::status)
        .select((chain_outbox::status, count_star()))
        .load(conn)?;
    let mut depth = OutboxDepth::default();
    for (status, count) in counts {
        match status.as_str() {
            PENDING => depth.pending = count,
            IN_FLIGHT => depth.in_flight = count,
            DONE => depth.done = count,
            FAILED => depth.failed = count,
            DISCARDED => depth.discarded = count,
            _ => {}
        }
    }
    Ok(depth)
}

/// A page of rows, newest first, optionally only those in `status`.
pub fn list(
    conn: &mut DbConnection,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> QueryResult<Vec<OutboxRow>> {
    let mut query = chain_outbox::table
        .select(OutboxRow::as_select())
        .order(chain_outbox::id.desc())
        .limit(limit)
        .offset(offset)
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(chain_outbox::status.eq(status));
    }
    query.load(conn)
}

/// The row enqueued under `dedup_key`, if any.
pub fn get_by_dedup_key(
    conn: &mut DbConnection,
    dedup_key: &str,
) -> QueryResult<Option<OutboxRow>> {
    chain_outbox::table
        .filter(chain_outbox::dedup_key.eq(dedup_key))
        .select(OutboxRow::as_select())
        .first(conn)
        .optional()
}

/// The newest row of `ordering_key`: what the console shows as the delivery state of
/// one unit's chain messages (the rows of a key are delivered in id order, so the
/// newest row is done only when every earlier one is settled).
pub fn newest_for_ordering_key(
    conn: &mut DbConnection,
    ordering_key: &str,
) -> QueryResult<Option<OutboxRow>> {
    chain_outbox::table
        .filter(chain_outbox::ordering_key.eq(ordering_key))
        .select(OutboxRow::as_select())
        .order(chain_outbox::id.desc())
        .first(conn)
        .optional()
}

/// Up to `limit` rows changed at or after `since` (every row when `None`), oldest
/// change first: what a watcher of the outbox reads to see rows settle.
pub fn changed_since(
    conn: &mut DbConnection,
    since: Option<NaiveDateTime>,
    limit: i64,
) -> QueryResult<Vec<OutboxRow>> {
    let mut query = chain_outbox::table
        .select(OutboxRow::as_select())
        .order((chain_outbox::updated_at.asc(), chain_outbox::id.asc()))
        .limit(limit)
        .into_boxed();
    if let Some(since) = since {
        query = query.filter(chain_outbox::updated_at.ge(since));
    }
    query.load(conn)
}

/// What became of an operator's action on one row ([`retry_failed`],
/// [`discard_failed`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Acted {
    /// Done: the row as it is now.
    Done(Box<OutboxRow>),
    /// The row is not failed (its status is given): only failed rows are acted on.
    NotFailed(String),
    /// No row has this id.
    Missing,
}

/// Applies `change` to row `id` if it is failed, telling a missing row from one in
/// another status.
fn act_on_failed(
    conn: &mut DbConnection,
    id: i64,
    change: impl FnOnce(&mut DbConnection) -> QueryResult<OutboxRow>,
) -> QueryResult<Acted> {
    conn.transaction(|conn| match change(conn) {
        Ok(row) => Ok(Acted::Done(Box::new(row))),
        Err(diesel::result::Error::NotFound) => Ok(chain_outbox::table
            .find(id)
            .select(chain_outbox::status)
            .first::<String>(conn)
            .optional()?
            .map_or(Acted::Missing, Acted::NotFailed)),
        Err(e) => Err(e),
    })
}

/// Puts failed row `id` back to pending, due now: an operator's retry once the cause
/// is fixed. Its attempts and `dedup_key` are kept (the history of what it cost, and
/// what keeps it enqueued once); a row the chain refused gets a new idempotency key
/// (see [`OutboxRow::idem_key`] for why), `{dedup_key}#retry-{attempts}`, unique since
/// every retry is followed by an attempt. `retried_at` restarts the age cap.
pub fn retry_failed(conn: &mut DbConnection, id: i64) -> QueryResult<Acted> {
    act_on_failed(conn, id, |conn| {
        let failed: OutboxRow = chain_outbox::table
            .find(id)
            .filter(chain_outbox::status.eq(FAILED))
            .select(OutboxRow::as_select())
            .first(conn)?;
        let idem = if failed.refused {
            Some(format!("{}#retry-{}", failed.dedup_key, failed.attempts))
        } else {
            failed.idem
        };
        let at = now();
        diesel::update(
            chain_outbox::table
                .find(id)
                .filter(chain_outbox::status.eq(FAILED)),
        )
        .set((
            chain_outbox::status.eq(PENDING),
            chain_outbox::next_attempt_at.eq(at),
            chain_outbox::locked_until.eq(None::<NaiveDateTime>),
            chain_outbox::retried_at.eq(Some(at)),
            chain_outbox::idem.eq(idem),
            chain_outbox::refused.eq(false),
            chain_outbox::updated_at.eq(at),
        ))
        .returning(returning::<OutboxRow>())
        .get_result(conn)
    })
}

/// Marks failed row `id` discarded by operator `by` for `reason`: it is never sent,
/// and stays as the record of that decision.
pub fn discard_failed(
    conn: &mut DbConnection,
    id: i64,
    by: &str,
    reason: &str,
) -> QueryResult<Acted> {
    act_on_failed(conn, id, |conn| {
        let at = now();
        diesel::update(
            chain_outbox::table
                .find(id)
                .filter(chain_outbox::status.eq(FAILED)),
        )
        .set((
            chain_outbox::status.eq(DISCARDED),
            chain_outbox::discarded_by.eq(Some(by)),
            chain_outbox::discard_reason.eq(Some(reason)),
            chain_outbox::discarded_at.eq(Some(at)),
            chain_outbox::updated_at.eq(at),
        ))
        .returning(returning::<OutboxRow>())
        .get_result(conn)
    })
}

/// Fails up to `limit` pending rows that were enqueued (or last retried by an
/// operator) before `cutoff`: the age cap (`MES_OUTBOX_MAX_AGE`), for rows no attempt
/// settles, such as those of a topic on hold or behind a stuck row of their key.
/// `why` is the reason stored as `last_error`, followed by the row's own last error.
/// Returns the rows failed.
pub fn fail_overdue(
    conn: &mut DbConnection,
    cutoff: NaiveDateTime,
    why: &str,
    limit: i64,
) -> QueryResult<Vec<OutboxRow>> {
    conn.transaction(|conn| {
        let overdue: Vec<(i64, Option<String>)> = chain_outbox::table
            .filter(chain_outbox::status.eq(PENDING))
            .filter(
                chain_outbox::retried_at
                    .is_null()
                    .and(chain_outbox::created_at.lt(cutoff))
                    .or(chain_outbox::retried_at.lt(cutoff)),
            )
            .order(chain_outbox::id)
            .limit(limit)
            .select((chain_outbox::id, chain_outbox::last_error))
            .load(conn)?;
        let mut failed = Vec::with_capacity(overdue.len());
        for (id, last_error) in overdue {
            let reason = match last_error {
                Some(last) => format!("{why} (last error: {last})"),
                None => why.to_owned(),
            };
            let row = diesel::update(
                chain_outbox::table
                    .find(id)
                    .filter(chain_outbox::status.eq(PENDING)),
            )
            .set((
                chain_outbox::status.eq(FAILED),
                chain_outbox::last_error.eq(Some(reason)),
                chain_outbox::updated_at.eq(now()),
            ))
            .returning(returning::<OutboxRow>())
            .get_result::<OutboxRow>(conn)
            .optional()?;
            failed.extend(row);
        }
        Ok(failed)
    })
}

/// Empties the payload of up to `batch` delivered rows delivered before `before`, in
/// one transaction, and returns how many: retention (`MES_OUTBOX_RETENTION_DAYS`). Each
/// row stays as a tombstone (`purged_at` set) with its `dedup_key`, so a "once per
/// unit" or "once per day" key still refuses a second enqueue. Failed and discarded
/// rows are never purged. Call it again until it returns less than `batch`.
pub fn purge_delivered(
    conn: &mut DbConnection,
    before: NaiveDateTime,
    batch: i64,
) -> QueryResult<usize> {
    conn.transaction(|conn| {
        let ids: Vec<i64> = chain_outbox::table
            .filter(chain_outbox::status.eq(DONE))
            .filter(chain_outbox::purged_at.is_null())
            .filter(chain_outbox::delivered_at.lt(before))
            .order(chain_outbox::delivered_at)
            .limit(batch)
            .select(chain_outbox::id)
            .load(conn)?;
        if ids.is_empty() {
            return Ok(0);
        }
        diesel::update(chain_outbox::table.filter(chain_outbox::id.eq_any(&ids)))
            .set((
                chain_outbox::payload.eq(""),
                chain_outbox::purged_at.eq(Some(now())),
            ))
            .execute(conn)
    })
}

/// When the oldest row still waiting (pending or in flight) was enqueued: how far
/// behind delivery is (`mes_outbox_oldest_pending_seconds`).
pub fn oldest_unsettled(conn: &mut DbConnection) -> QueryResult<Option<NaiveDateTime>> {
    chain_outbox::table
        .filter(chain_outbox::status.eq_any([PENDING, IN_FLIGHT]))
        .select(diesel::dsl::min(chain_outbox::created_at))
        .first(conn)
}

/// The row with id `id`, if any.
pub fn get(conn: &mut DbConnection, id: i64) -> QueryResult<Option<OutboxRow>> {
    chain_outbox::table
        .find(id)
        .select(OutboxRow::as_select())
        .first(conn)
        .optional()
}
