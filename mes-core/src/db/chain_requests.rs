//! `chain_requests` and `chain_scans`: the MES's mirror of the chain's partner and
//! order requests, and how far the poller's scans of the chain's lists have got.
//!
//! The chain pushes nothing, and its lists can only be paged through; the mirror is
//! what lets operators filter and count *every* request (the inbox), and what tells
//! the server instances sharing a database which requests have been announced already:
//! a request is announced by the one upsert that inserts its row, and a status change
//! by the one update that changes it, whichever instance runs them.
//!
//! Every statement is atomic on its own and decides on its own whether it inserted or
//! changed something (`INSERT … ON CONFLICT DO NOTHING RETURNING`, `UPDATE … WHERE
//! status = <the status read>`), so no transaction (and no SQLite write lock taken
//! after a read) is needed for the "exactly once" to hold.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::dsl::count_star;
use diesel::prelude::*;

use super::schema::{chain_requests, chain_scans};
use super::{DbConnection, now, returning};

pub use super::decisions::{KIND_ORDER, KIND_PARTNER};

/// Longest chain id the mirror stores (the column's check constraint).
pub const MAX_CHAIN_ID_LEN: usize = 128;

/// Status of a request nobody has answered yet: what the inbox shows by default.
pub const STATUS_OPEN: &str = "OPEN";

diesel::define_sql_function! {
    /// SQL `lower`, which PostgreSQL and SQLite both have: case-insensitive search.
    fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

/// A mirrored request.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = chain_requests)]
pub struct ChainRequest {
    /// Database id.
    pub id: i64,
    /// [`KIND_PARTNER`] or [`KIND_ORDER`].
    pub kind: String,
    /// The chain's request id, spelled as the chain spells it.
    pub chain_id: String,
    /// The chain's status, upper-cased (`OPEN`, `ACCEPTED`, `REJECTED`, …).
    pub status: String,
    /// The agent (ERP) that issued the request.
    pub issuing_agent: String,
    /// The item's `timestamp`, as the chain gives it.
    pub chain_timestamp: i64,
    /// An order's description (empty for partners); searched by [`list`].
    pub description: String,
    /// The item as the chain sent it, as JSON text.
    pub item: String,
    /// When the MES first saw it (UTC).
    pub first_seen: NaiveDateTime,
    /// When the MES last saw it in a list (UTC).
    pub last_seen: NaiveDateTime,
    /// The last poller scan that saw it; `None` when only a LIST reply has.
    pub last_scan: Option<i64>,
}

/// A request as one list reply shows it, for [`upsert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Insertable)]
#[diesel(table_name = chain_requests)]
pub struct SeenRequest<'a> {
    /// See [`ChainRequest::chain_id`]; 1 to [`MAX_CHAIN_ID_LEN`] characters.
    pub chain_id: &'a str,
    /// See [`ChainRequest::status`].
    pub status: &'a str,
    /// See [`ChainRequest::issuing_agent`].
    pub issuing_agent: &'a str,
    /// See [`ChainRequest::chain_timestamp`].
    pub chain_timestamp: i64,
    /// See [`ChainRequest::description`].
    pub description: &'a str,
    /// See [`ChainRequest::item`].
    pub item: &'a str,
}

/// A status change found by [`upsert`].
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    /// The status the mirror held before.
    pub previous: String,
    /// The request, as it is now.
    pub request: ChainRequest,
}

/// What one [`upsert`] changed: what the caller should announce, and nothing more
/// (another instance's upsert of the same items reports neither).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpsertOutcome {
    /// Requests this call inserted (never seen before by any instance).
    pub inserted: Vec<ChainRequest>,
    /// Requests whose status this call changed.
    pub changed: Vec<StatusChange>,
}

/// The inbox's filter and page, for [`list`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFilter<'a> {
    /// Only this kind ([`KIND_PARTNER`] or [`KIND_ORDER`]).
    pub kind: Option<&'a str>,
    /// Only this status (compared with the stored, upper-cased status).
    pub status: Option<&'a str>,
    /// Only requests whose chain id, issuing agent or description contain this
    /// (case-insensitive, taken literally: `%` and `_` are no wildcards).
    pub q: Option<&'a str>,
    /// Most rows returned.
    pub limit: i64,
    /// Rows skipped.
    pub offset: i64,
}

/// One page of [`list`], with the number of rows the filter matches in all.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestPage {
    /// The rows, newest first (chain timestamp, then database id).
    pub items: Vec<ChainRequest>,
    /// How many rows match the filter (all pages).
    pub total: i64,
}

/// How many mirrored requests one kind has in one status, from [`counts`].
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct StatusCount {
    /// [`KIND_PARTNER`] or [`KIND_ORDER`].
    pub kind: String,
    /// The status.
    pub status: String,
    /// How many.
    pub count: i64,
}

/// The progress of the poller's scans of one kind of list.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = chain_scans)]
pub struct ScanState {
    /// [`KIND_PARTNER`] or [`KIND_ORDER`].
    pub kind: String,
    /// The last scan that read the whole list; 0 before the first, which is the
    /// baseline (what it finds was there before the MES looked: nothing to announce).
    pub completed_scan: i64,
    /// When scan `completed_scan` finished (UTC): how fresh the mirror is.
    pub completed_at: Option<NaiveDateTime>,
    /// The scan [`resume_start`](Self::resume_start) belongs to.
    pub resume_scan: i64,
    /// The list index where scan `completed_scan + 1` continues, if
    /// `resume_scan == completed_scan + 1`.
    pub resume_start: i64,
    /// When the row last changed (UTC).
    pub updated_at: NaiveDateTime,
}

impl ScanState {
    /// The number of the scan to run next (the one in progress, if any).
    pub fn next_scan(&self) -> i64 {
        self.completed_scan + 1
    }

    /// Where the next scan starts reading: where an unfinished one stopped, else 0.
    pub fn next_start(&self) -> i64 {
        if self.resume_scan == self.next_scan() {
            self.resume_start
        } else {
            0
        }
    }

    /// Whether a complete scan has been recorded: a request the mirror learns of from
    /// now on is news, to be announced.
    pub fn has_baseline(&self) -> bool {
        self.completed_scan > 0
    }
}

/// Takes in requests of `kind` as one list reply showed them: inserts those the
/// mirror does not hold, updates the others (status, item, `last_seen`, and
/// `last_scan` when `scan` is given), and reports what this call inserted or changed.
///
/// Idempotent, and safe to run from several instances at once: each insert and each
/// status change is reported by exactly one call. Items repeated in `items` count once.
pub fn upsert(
    conn: &mut DbConnection,
    kind: &str,
    items: &[SeenRequest<'_>],
    scan: Option<i64>,
) -> QueryResult<UpsertOutcome> {
    let mut outcome = UpsertOutcome::default();
    if items.is_empty() {
        return Ok(outcome);
    }
    let at = now();
    let ids: Vec<&str> = items.iter().map(|i| i.chain_id).collect();
    let mut known: HashMap<String, ChainRequest> = chain_requests::table
        .filter(chain_requests::kind.eq(kind))
        .filter(chain_requests::chain_id.eq_any(&ids))
        .select(ChainRequest::as_select())
        .load(conn)?
        .into_iter()
        .map(|r| (r.chain_id.clone(), r))
        .collect();
    let mut touch: Vec<i64> = Vec::new();
    let mut done: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for seen in items {
        if !done.insert(seen.chain_id) {
            continue;
        }
        let existing = match known.remove(seen.chain_id) {
            Some(row) => row,
            None => {
                let statement = diesel::insert_into(chain_requests::table)
                    .values((
                        seen,
                        chain_requests::kind.eq(kind),
                        chain_requests::first_seen.eq(at),
                        chain_requests::last_seen.eq(at),
                        chain_requests::last_scan.eq(scan),
                    ))
                    .on_conflict((chain_requests::kind, chain_requests::chain_id))
                    .do_nothing()
                    .returning(chain_requests::all_columns);
                let inserted: Option<ChainRequest> =
                    per_backend!(conn, |c| statement.get_result(c).optional())?;
                if let Some(row) = inserted {
                    outcome.inserted.push(row);
                    continue;
                }
                // Another instance inserted it since we looked: it announces it.
                match get(conn, kind, seen.chain_id)? {
                    Some(row) => row,
                    None => continue,
                }
            }
        };
        let same_item = existing.item == seen.item
            && existing.issuing_agent == seen.issuing_agent
            && existing.chain_timestamp == seen.chain_timestamp
            && existing.description == seen.description;
        if existing.status == seen.status && same_item {
            touch.push(existing.id);
            continue;
        }
        // Conditional on the status read, so that of two instances seeing the same
        // change only one updates (and reports) it.
        let changed: Option<ChainRequest> = diesel::update(
            chain_requests::table
                .filter(chain_requests::id.eq(existing.id))
                .filter(chain_requests::status.eq(&existing.status)),
        )
        .set((
            chain_requests::status.eq(seen.status),
            chain_requests::issuing_agent.eq(seen.issuing_agent),
            chain_requests::chain_timestamp.eq(seen.chain_timestamp),
            chain_requests::description.eq(seen.description),
            chain_requests::item.eq(seen.item),
            chain_requests::last_seen.eq(at),
            chain_requests::last_scan.eq(scan.or(existing.last_scan)),
        ))
        .returning(returning::<ChainRequest>())
        .get_result(conn)
        .optional()?;
        match changed {
            Some(row) if row.status != existing.status => outcome.changed.push(StatusChange {
                previous: existing.status,
                request: row,
            }),
            Some(_) => {}
            None => touch.push(existing.id),
        }
    }
    if !touch.is_empty() {
        touch_rows(conn, &touch, at, scan)?;
    }
    Ok(outcome)
}

/// Sets `last_seen` (and `last_scan`, when given) of the rows `ids` in one statement.
///
/// Two instances touching overlapping rows at once must not deadlock: on PostgreSQL
/// the rows are locked first in id order, in the same transaction, so every
/// multi-row lock in [`upsert`] is taken in one order (the single-row statements
/// there hold one lock each and cannot close a cycle). SQLite locks the database.
fn touch_rows(
    conn: &mut DbConnection,
    ids: &[i64],
    at: NaiveDateTime,
    scan: Option<i64>,
) -> QueryResult<()> {
    conn.transaction(|conn| {
        if let DbConnection::Pg(pg) = conn {
            chain_requests::table
                .filter(chain_requests::id.eq_any(ids))
                .order(chain_requests::id)
                .select(chain_requests::id)
                .for_update()
                .load::<i64>(pg)?;
        }
        let rows = chain_requests::table.filter(chain_requests::id.eq_any(ids));
        match scan {
            Some(scan) => diesel::update(rows)
                .set((
                    chain_requests::last_seen.eq(at),
                    chain_requests::last_scan.eq(scan),
                ))
                .execute(conn)?,
            None => diesel::update(rows)
                .set(chain_requests::last_seen.eq(at))
                .execute(conn)?,
        };
        Ok(())
    })
}

/// The boxed query of the rows `filter` matches (without paging).
fn filtered<'a>(filter: &RequestFilter<'a>) -> chain_requests::BoxedQuery<'a, super::MultiBackend> {
    let mut query = chain_requests::table.into_boxed();
    if let Some(kind) = filter.kind {
        query = query.filter(chain_requests::kind.eq(kind));
    }
    if let Some(status) = filter.status {
        query = query.filter(chain_requests::status.eq(status));
    }
    if let Some(q) = filter.q.filter(|q| !q.is_empty()) {
        let pattern = format!("%{}%", escape_like(&q.to_lowercase()));
        query = query.filter(
            lower(chain_requests::chain_id)
                .like(pattern.clone())
                .escape('\\')
                .or(lower(chain_requests::issuing_agent)
                    .like(pattern.clone())
                    .escape('\\'))
                .or(lower(chain_requests::description)
                    .like(pattern)
                    .escape('\\')),
        );
    }
    query
}

/// `q` with LIKE's wildcards and the escape character escaped.
fn escape_like(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    for c in q.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The mirrored requests `filter` matches, newest first (chain timestamp, then
/// database id), one page of them, with how many match in all.
pub fn list(conn: &mut DbConnection, filter: &RequestFilter<'_>) -> QueryResult<RequestPage> {
    let total = filtered(filter).count().get_result(conn)?;
    let items = filtered(filter)
        .order((
            chain_requests::chain_timestamp.desc(),
            chain_requests::id.desc(),
        ))
        .limit(filter.limit)
        .offset(filter.offset)
        .select(ChainRequest::as_select())
        .load(conn)?;
    Ok(RequestPage { items, total })
}

/// How many mirrored requests there are per kind and status (absent pairs are 0),
/// ordered by kind then status.
pub fn counts(conn: &mut DbConnection) -> QueryResult<Vec<StatusCount>> {
    chain_requests::table
        .group_by((chain_requests::kind, chain_requests::status))
        .select((chain_requests::kind, chain_requests::status, count_star()))
        .order((chain_requests::kind, chain_requests::status))
        .load(conn)
}

/// The mirrored request `chain_id` of `kind`, if the mirror holds it.
pub fn get(
    conn: &mut DbConnection,
    kind: &str,
    chain_id: &str,
) -> QueryResult<Option<ChainRequest>> {
    chain_requests::table
        .filter(chain_requests::kind.eq(kind))
        .filter(chain_requests::chain_id.eq(chain_id))
        .select(ChainRequest::as_select())
        .first(conn)
        .optional()
}

/// Records the status an answer gave request `chain_id` of `kind` (the chain said so in
/// its reply) before the next scan reads it: `item` is the stored item with its new
/// `status`. Changes nothing if the row is missing or already has that status (the
/// next scan's diff then finds nothing new to announce: the decision was). Returns
/// whether it changed the row.
pub fn record_answer(
    conn: &mut DbConnection,
    kind: &str,
    chain_id: &str,
    status: &str,
    item: &str,
) -> QueryResult<bool> {
    let changed = diesel::update(
        chain_requests::table
            .filter(chain_requests::kind.eq(kind))
            .filter(chain_requests::chain_id.eq(chain_id))
            .filter(chain_requests::status.ne(status)),
    )
    .set((
        chain_requests::status.eq(status),
        chain_requests::item.eq(item),
        chain_requests::last_seen.eq(now()),
    ))
    .execute(conn)?;
    Ok(changed > 0)
}

/// Creates the scan row of `kind` if it is missing (no scan yet, start at 0).
fn ensure_scan_row(conn: &mut DbConnection, kind: &str) -> QueryResult<()> {
    let statement = diesel::insert_into(chain_scans::table)
        .values((
            chain_scans::kind.eq(kind),
            chain_scans::completed_scan.eq(0_i64),
            chain_scans::completed_at.eq(None::<NaiveDateTime>),
            chain_scans::resume_scan.eq(0_i64),
            chain_scans::resume_start.eq(0_i64),
            chain_scans::updated_at.eq(now()),
        ))
        .on_conflict(chain_scans::kind)
        .do_nothing();
    per_backend!(conn, |c| statement.execute(c)).map(|_| ())
}

/// The progress of the scans of `kind` (a new row, at "no scan yet", if none).
pub fn scan_state(conn: &mut DbConnection, kind: &str) -> QueryResult<ScanState> {
    if let Some(state) = chain_scans::table
        .find(kind)
        .select(ScanState::as_select())
        .first(conn)
        .optional()?
    {
        return Ok(state);
    }
    ensure_scan_row(conn, kind)?;
    chain_scans::table
        .find(kind)
        .select(ScanState::as_select())
        .first(conn)
}

/// The progress of every kind's scans that has a row, for the inbox's `as_of`.
pub fn scan_states(conn: &mut DbConnection) -> QueryResult<Vec<ScanState>> {
    chain_scans::table
        .order(chain_scans::kind)
        .select(ScanState::as_select())
        .load(conn)
}

/// Records that scan `scan` of `kind` stopped before the end of the list, to continue
/// at index `start` next cycle. Ignored once `scan` has completed (another instance
/// finished it): a stale position must not cut the next scan short.
pub fn save_progress(
    conn: &mut DbConnection,
    kind: &str,
    scan: i64,
    start: i64,
) -> QueryResult<ScanState> {
    ensure_scan_row(conn, kind)?;
    diesel::update(
        chain_scans::table
            .filter(chain_scans::kind.eq(kind))
            .filter(chain_scans::completed_scan.lt(scan)),
    )
    .set((
        chain_scans::resume_scan.eq(scan),
        chain_scans::resume_start.eq(start),
        chain_scans::updated_at.eq(now()),
    ))
    .execute(conn)?;
    scan_state(conn, kind)
}

/// Records that scan `scan` of `kind` read the whole list: the mirror is as fresh as
/// now. Recording the same scan twice (two instances) changes nothing the second time.
pub fn complete_scan(conn: &mut DbConnection, kind: &str, scan: i64) -> QueryResult<ScanState> {
    ensure_scan_row(conn, kind)?;
    let at = now();
    diesel::update(
        chain_scans::table
            .filter(chain_scans::kind.eq(kind))
            .filter(chain_scans::completed_scan.lt(scan)),
    )
    .set((
        chain_scans::completed_scan.eq(scan),
        chain_scans::completed_at.eq(Some(at)),
        chain_scans::resume_scan.eq(0_i64),
        chain_scans::resume_start.eq(0_i64),
        chain_scans::updated_at.eq(at),
    ))
    .execute(conn)?;
    scan_state(conn, kind)
}
