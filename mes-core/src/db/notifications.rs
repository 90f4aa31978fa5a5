//! `notifications`: webhook notifications (`MES_WEBHOOKS`) kept until delivered.
//!
//! Each event becomes one row per webhook ([`insert`]), under an event id that the
//! event itself determines (`new_request:<kind>:<chain id>`,
//! `outbox_failed:<row id>:<attempts>`): instances that see the same event insert one
//! row, and a receiver tells a repeated POST by it (`Idempotency-Key`). A worker per
//! webhook [`claim_due`]s its rows under a lease, POSTs them and settles each with
//! [`mark_delivered`] or [`record_failure`] (retried with backoff, or failed for good
//! with the last error); [`release`] gives back a claimed row it did not send. A
//! restart or a crash loses nothing: rows stay pending, and a crashed worker's claim
//! ends with its lease.
//!
//! A claimed row stays `pending`; its claim is its `locked_until`, which a settlement
//! must match, so a worker whose lease ran out (and whose row someone else claimed)
//! cannot settle it.

use chrono::{Duration, NaiveDateTime};
use diesel::dsl::{count_star, min};
use diesel::prelude::*;

use super::schema::notifications;
use super::{DbConnection, now, returning};

/// Waiting for its first or next attempt (or being sent, while `locked_until` is
/// ahead).
pub const PENDING: &str = "pending";
/// The receiver answered 2xx.
pub const DELIVERED: &str = "delivered";
/// Refused by the receiver, or given up after [`MAX_ATTEMPTS`]; `last_error` says why.
pub const FAILED: &str = "failed";

/// Attempts per notification (the first and the retries): with [`FIRST_BACKOFF`]
/// doubling up to [`MAX_BACKOFF`], a receiver may be away for about half an hour.
pub const MAX_ATTEMPTS: i32 = 12;
/// Delay after the first failed attempt; doubled after each further one.
pub const FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest delay between two attempts, also the most a receiver's `Retry-After` gets.
pub const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(600);

/// A stored notification.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = notifications)]
pub struct NotificationRow {
    /// Database id; rows of one webhook are sent in id order.
    pub id: i64,
    /// What happened, deterministically named (see the module doc); sent as the
    /// `Idempotency-Key` header.
    pub event_id: String,
    /// `new_request` or `outbox_failed`.
    pub kind: String,
    /// Where to POST. May hold a secret (a bot token): never logged nor shown.
    pub url: String,
    /// What may be shown of `url`: scheme, host and port.
    pub target: String,
    /// The body to POST, in the webhook's format.
    pub payload: String,
    /// One of [`PENDING`], [`DELIVERED`], [`FAILED`].
    pub status: String,
    /// POSTs tried so far.
    pub attempts: i32,
    /// A pending row is not claimed before this time (UTC).
    pub next_attempt_at: NaiveDateTime,
    /// A claimed row is its worker's until this time (UTC); `None` when unclaimed.
    pub locked_until: Option<NaiveDateTime>,
    /// Why the last attempt did not deliver it.
    pub last_error: Option<String>,
    /// When the event was recorded (UTC).
    pub created_at: NaiveDateTime,
    /// When the row last changed (UTC).
    pub updated_at: NaiveDateTime,
    /// When the receiver accepted it (UTC).
    pub delivered_at: Option<NaiveDateTime>,
}

/// A notification to [`insert`]; it becomes due at once.
#[derive(Debug, Clone, Copy, Insertable)]
#[diesel(table_name = notifications)]
pub struct NewNotification<'a> {
    /// See [`NotificationRow::event_id`].
    pub event_id: &'a str,
    /// See [`NotificationRow::kind`].
    pub kind: &'a str,
    /// See [`NotificationRow::url`].
    pub url: &'a str,
    /// See [`NotificationRow::target`].
    pub target: &'a str,
    /// See [`NotificationRow::payload`].
    pub payload: &'a str,
}

/// Rows per status and the age of the oldest pending one, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotificationCounts {
    /// Rows waiting to be sent.
    pub pending: i64,
    /// Delivered rows.
    pub delivered: i64,
    /// Rows given up on.
    pub failed: i64,
    /// When the oldest pending row was recorded, if any.
    pub oldest_pending: Option<NaiveDateTime>,
}

/// Adds each of `new` unless a row with its event id and URL exists, all or none;
/// returns how many it inserted.
///
/// `ON CONFLICT DO NOTHING` raises no error, so this is safe inside the caller's
/// transaction on PostgreSQL (a failed insert would abort it).
pub fn insert(conn: &mut DbConnection, new: &[NewNotification<'_>]) -> QueryResult<usize> {
    conn.transaction(|conn| {
        let at = now();
        let mut inserted = 0;
        for one in new {
            let statement = diesel::insert_into(notifications::table)
                .values((
                    one,
                    notifications::status.eq(PENDING),
                    notifications::attempts.eq(0),
                    notifications::next_attempt_at.eq(at),
                    notifications::created_at.eq(at),
                    notifications::updated_at.eq(at),
                ))
                .on_conflict((notifications::event_id, notifications::url))
                .do_nothing();
            inserted += per_backend!(&mut *conn, |c| statement.execute(c))?;
        }
        Ok(inserted)
    })
}

/// Ids of the rows of `$url` that [`claim_due`] may take at `$now`, oldest first.
macro_rules! due_ids {
    ($url:expr, $now:expr, $limit:expr) => {
        notifications::table
            .filter(notifications::url.eq($url))
            .filter(notifications::status.eq(PENDING))
            .filter(notifications::next_attempt_at.le($now))
            .filter(
                notifications::locked_until
                    .is_null()
                    .or(notifications::locked_until.lt($now)),
            )
            .order(notifications::id)
            .limit($limit)
            .select(notifications::id)
    };
}

/// Claims the rows `$ids` until `$until`, counting an attempt, and returns them.
macro_rules! take {
    ($conn:expr, $ids:expr, $until:expr) => {
        diesel::update(notifications::table.filter(notifications::id.eq_any($ids)))
            .set((
                notifications::locked_until.eq(Some($until)),
                notifications::attempts.eq(notifications::attempts + 1),
                notifications::updated_at.eq(now()),
            ))
            .returning(notifications::all_columns)
            .get_results::<NotificationRow>($conn)
    };
}

/// Atomically claims up to `limit` due rows of the webhook `url` for `lease`, oldest
/// first, counting an attempt on each.
///
/// A row is due when it is pending, `next_attempt_at <= now`, and unclaimed or its
/// claim ended before `now` (its worker crashed). PostgreSQL locks the chosen rows
/// with `FOR UPDATE SKIP LOCKED`, so workers of instances sharing a database never
/// claim the same row; SQLite takes the write lock up front (`BEGIN IMMEDIATE`) since
/// it has no row locks. The same approach as the outbox relay's claim.
pub fn claim_due(
    conn: &mut DbConnection,
    url: &str,
    now: NaiveDateTime,
    limit: i64,
    lease: Duration,
) -> QueryResult<Vec<NotificationRow>> {
    let until = now + lease;
    let mut rows = match conn {
        DbConnection::Pg(pg) => pg.transaction(|pg| {
            let ids = due_ids!(url, now, limit)
                .for_update()
                .skip_locked()
                .load::<i64>(pg)?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            take!(pg, &ids, until)
        }),
        DbConnection::Sqlite(lite) => {
            let claim = |lite: &mut SqliteConnection| {
                let ids = due_ids!(url, now, limit).load::<i64>(lite)?;
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

/// The row `claimed` as long as it is still that claim (pending, same
/// `locked_until`).
macro_rules! still_claimed {
    ($claimed:expr) => {
        notifications::table
            .find($claimed.id)
            .filter(notifications::status.eq(PENDING))
            .filter(notifications::locked_until.eq($claimed.locked_until))
    };
}

/// Records that the receiver accepted `claimed`; the row is never sent again.
///
/// `NotFound` if the claim is no longer this worker's (its lease ended and another
/// claimed the row, or it was settled).
pub fn mark_delivered(
    conn: &mut DbConnection,
    claimed: &NotificationRow,
) -> QueryResult<NotificationRow> {
    let at = now();
    diesel::update(still_claimed!(claimed))
        .set((
            notifications::status.eq(DELIVERED),
            notifications::locked_until.eq(None::<NaiveDateTime>),
            notifications::delivered_at.eq(Some(at)),
            notifications::updated_at.eq(at),
        ))
        .returning(returning::<NotificationRow>())
        .get_result(conn)
}

/// How an attempt that did not deliver ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Worth trying again (no answer, 5xx, 408, 429), not before the delay the
    /// receiver asked for (`Retry-After`), if any, nor before the backoff.
    Retry(Option<std::time::Duration>),
    /// The receiver's answer is final.
    Final,
}

/// The delay before the next attempt of a row that has had `attempts`:
/// [`FIRST_BACKOFF`] doubled per attempt after the first, at most [`MAX_BACKOFF`].
pub fn backoff(attempts: i32) -> std::time::Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// Settles `claimed` after an attempt that did not deliver it, keeping `error` as its
/// last error: [`Failure::Final`], or a retry after [`MAX_ATTEMPTS`], fails it for
/// good; a retry otherwise makes it pending again, due after [`backoff`] or the
/// receiver's `Retry-After` (at most [`MAX_BACKOFF`]), whichever is later.
///
/// `NotFound` if the claim is no longer this worker's.
pub fn record_failure(
    conn: &mut DbConnection,
    claimed: &NotificationRow,
    error: &str,
    failure: Failure,
) -> QueryResult<NotificationRow> {
    let at = now();
    let (status, next) = match failure {
        Failure::Retry(asked) if claimed.attempts < MAX_ATTEMPTS => {
            let wait = asked.map_or(backoff(claimed.attempts), |asked| {
                asked.min(MAX_BACKOFF).max(backoff(claimed.attempts))
            });
            let wait = Duration::from_std(wait).unwrap_or(Duration::seconds(600));
            (PENDING, at + wait)
        }
        _ => (FAILED, claimed.next_attempt_at),
    };
    diesel::update(still_claimed!(claimed))
        .set((
            notifications::status.eq(status),
            notifications::next_attempt_at.eq(next),
            notifications::locked_until.eq(None::<NaiveDateTime>),
            notifications::last_error.eq(Some(error)),
            notifications::updated_at.eq(at),
        ))
        .returning(returning::<NotificationRow>())
        .get_result(conn)
}

/// Fails every pending row, not claimed now, whose webhook is not among `urls` (a URL
/// taken out of the configuration): no worker would ever send it, and it would hold
/// the oldest pending row's age up for good. `reason` becomes its `last_error`.
/// Returns how many rows it failed.
pub fn fail_orphans(conn: &mut DbConnection, urls: &[&str], reason: &str) -> QueryResult<usize> {
    let at = now();
    diesel::update(
        notifications::table
            .filter(notifications::status.eq(PENDING))
            .filter(notifications::url.ne_all(urls))
            .filter(
                notifications::locked_until
                    .is_null()
                    .or(notifications::locked_until.lt(at)),
            ),
    )
    .set((
        notifications::status.eq(FAILED),
        notifications::locked_until.eq(None::<NaiveDateTime>),
        notifications::last_error.eq(Some(reason)),
        notifications::updated_at.eq(at),
    ))
    .execute(conn)
}

/// Deletes up to `batch` rows delivered before `before`, oldest first; returns how
/// many. Pending and failed rows are never deleted. A deleted event is not recorded
/// again: a new request is recorded when the mirror first inserts it, and an outbox
/// failure's event id names the row and its attempts.
pub fn purge_delivered(
    conn: &mut DbConnection,
    before: NaiveDateTime,
    batch: i64,
) -> QueryResult<usize> {
    conn.transaction(|conn| {
        let ids: Vec<i64> = notifications::table
            .filter(notifications::status.eq(DELIVERED))
            .filter(notifications::delivered_at.lt(before))
            .order(notifications::delivered_at)
            .limit(batch)
            .select(notifications::id)
            .load(conn)?;
        if ids.is_empty() {
            return Ok(0);
        }
        diesel::delete(notifications::table.filter(notifications::id.eq_any(&ids))).execute(conn)
    })
}

/// Gives back `claimed` unsent (the server is stopping): due again at once, its
/// claim not counted as an attempt.
///
/// `NotFound` if the claim is no longer this worker's.
pub fn release(conn: &mut DbConnection, claimed: &NotificationRow) -> QueryResult<NotificationRow> {
    diesel::update(still_claimed!(claimed))
        .set((
            notifications::attempts.eq(notifications::attempts - 1),
            notifications::locked_until.eq(None::<NaiveDateTime>),
            notifications::updated_at.eq(now()),
        ))
        .returning(returning::<NotificationRow>())
        .get_result(conn)
}

/// Rows per status and when the oldest pending one was recorded.
pub fn counts(conn: &mut DbConnection) -> QueryResult<NotificationCounts> {
    let by_status: Vec<(String, i64)> = notifications::table
        .group_by(notifications::status)
        .select((notifications::status, count_star()))
        .load(conn)?;
    let mut counts = NotificationCounts::default();
    for (status, n) in by_status {
        match status.as_str() {
            PENDING => counts.pending = n,
            DELIVERED => counts.delivered = n,
            FAILED => counts.failed = n,
            _ => {}
        }
    }
    counts.oldest_pending = notifications::table
        .filter(notifications::status.eq(PENDING))
        .select(min(notifications::created_at))
        .first(conn)?;
    Ok(counts)
}

/// A page of rows, newest first, optionally only those in `status`.
pub fn list(
    conn: &mut DbConnection,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> QueryResult<Vec<NotificationRow>> {
    let mut query = notifications::table
        .select(NotificationRow::as_select())
        .order(notifications::id.desc())
        .limit(limit)
        .offset(offset)
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(notifications::status.eq(status));
    }
    query.load(conn)
}

/// The event id of a new OPEN request of `kind` (`partner`, `order`) with the chain's
/// id `chain_id`.
pub fn new_request_event_id(kind: &str, chain_id: &str) -> String {
    format!("new_request:{kind}:{chain_id}")
}

/// The event id of outbox row `row_id` having failed after `attempts` (a row put
/// back and failed again is a new event).
pub fn outbox_failed_event_id(row_id: i64, attempts: i32) -> String {
    format!("outbox_failed:{row_id}:{attempts}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_ten_minutes() {
        let secs: Vec<u64> = (1..=12).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(backoff(0), FIRST_BACKOFF);
        assert_eq!(backoff(i32::MAX), MAX_BACKOFF);
    }
}
