//! `decisions`: the audit trail of every operator accept/reject and what the chain
//! answered. A decision is recorded before its request is sent, so even a request
//! lost to a crash leaves a trace.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::decisions;
use super::{DbConnection, now, returning};

/// A decision on a partner request (`BLK_Part_Ans`).
pub const KIND_PARTNER: &str = "partner";
/// A decision on an order request (`BLK_Act_Ans`).
pub const KIND_ORDER: &str = "order";

/// `response` value that rejects the request.
pub const REJECT: i32 = 0;
/// `response` value that accepts the request.
pub const ACCEPT: i32 = 1;

/// Outcome of a decision whose request is being sent.
pub const OUTCOME_PENDING: &str = "pending";
/// The chain accepted the request (its reply said so, or its list shows it ACCEPTED).
pub const OUTCOME_ACCEPTED: &str = "accepted";
/// The chain rejected the request (its reply said so, or its list shows it REJECTED).
pub const OUTCOME_REJECTED: &str = "rejected";
/// The chain refused the answer; its text is kept in `chain_error`.
pub const OUTCOME_CHAIN_ERROR: &str = "chain_error";
/// Sent, but not confirmed: a timeout, a lost reply, a lost acknowledgement after
/// sending, a shutdown. The mirror of the chain's lists settles it (docs/protocol.md
/// §10); answering again sends nothing while it is unknown.
pub const OUTCOME_UNKNOWN: &str = "unknown";
/// The request provably never reached the broker (refused at once because the chain
/// is behind, too many requests in flight, the broker refused it): answering again is
/// safe.
pub const OUTCOME_NOT_SENT: &str = "not_sent";
/// Sent, but the chain never applied it: its list still showed the request OPEN after
/// several complete scans (or shows the other answer). The operator may answer again.
pub const OUTCOME_NOT_APPLIED: &str = "not_applied";

/// The outcome an answer `response` has once the chain applied it.
pub fn applied(response: i32) -> &'static str {
    if response == ACCEPT {
        OUTCOME_ACCEPTED
    } else {
        OUTCOME_REJECTED
    }
}

/// A stored decision.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = decisions)]
pub struct Decision {
    /// Database id.
    pub id: i64,
    /// [`KIND_PARTNER`] or [`KIND_ORDER`].
    pub kind: String,
    /// The chain's id of the request decided on (as the chain spells it).
    pub request_id: String,
    /// [`REJECT`] or [`ACCEPT`].
    pub response: i32,
    /// Who decided.
    pub operator: String,
    /// Correlation id of the Kafka request that carried the decision.
    pub correlation_id: Option<String>,
    /// [`OUTCOME_PENDING`] until [`complete`]d, then what happened.
    pub outcome: String,
    /// The chain's `message`, when it answered one.
    pub chain_message: Option<String>,
    /// The chain's `error`, when it answered one.
    pub chain_error: Option<String>,
    /// When the operator decided (UTC).
    pub created_at: NaiveDateTime,
    /// When the outcome was last written (UTC).
    pub updated_at: NaiveDateTime,
    /// Complete scans of the chain's list that still showed the request OPEN while
    /// this decision was [`OUTCOME_UNKNOWN`].
    pub open_scans: i32,
    /// The last scan counted in `open_scans` (each scan counts once, whichever
    /// instance saw it).
    pub last_scan: Option<i64>,
}

/// A decision to [`record`]; its outcome starts as [`OUTCOME_PENDING`].
#[derive(Debug, Clone, Copy, Insertable)]
#[diesel(table_name = decisions)]
pub struct NewDecision<'a> {
    /// See [`Decision::kind`].
    pub kind: &'a str,
    /// See [`Decision::request_id`].
    pub request_id: &'a str,
    /// See [`Decision::response`].
    pub response: i32,
    /// See [`Decision::operator`].
    pub operator: &'a str,
    /// See [`Decision::correlation_id`].
    pub correlation_id: Option<&'a str>,
}

/// What the chain (or the lack of it) said about a decision.
#[derive(Debug, Clone, Copy, AsChangeset)]
#[diesel(table_name = decisions, treat_none_as_null = true)]
pub struct DecisionChangeset<'a> {
    /// See [`Decision::outcome`].
    pub outcome: &'a str,
    /// See [`Decision::chain_message`].
    pub chain_message: Option<&'a str>,
    /// See [`Decision::chain_error`].
    pub chain_error: Option<&'a str>,
}

/// Records a decision before its request is sent.
pub fn record(conn: &mut DbConnection, new: &NewDecision<'_>) -> QueryResult<Decision> {
    let at = now();
    diesel::insert_into(decisions::table)
        .values((
            new,
            decisions::outcome.eq(OUTCOME_PENDING),
            decisions::created_at.eq(at),
            decisions::updated_at.eq(at),
        ))
        .returning(returning::<Decision>())
        .get_result(conn)
}

/// Stores how the request ended, if the decision is still [`OUTCOME_PENDING`]; `None`
/// if it was settled meanwhile (by its late reply, which may overtake the call's own
/// bookkeeping, or by another instance's reconciliation), so nothing is overwritten.
pub fn complete(
    conn: &mut DbConnection,
    id: i64,
    outcome: &str,
    chain_message: Option<&str>,
    chain_error: Option<&str>,
) -> QueryResult<Option<Decision>> {
    let from = [OUTCOME_PENDING];
    settle_from(conn, id, &from, outcome, chain_message, chain_error)
}

/// Settles a decision from its late reply (a reply that came after the call ended):
/// from [`OUTCOME_PENDING`] (the reply overtook the call's bookkeeping),
/// [`OUTCOME_UNKNOWN`] or [`OUTCOME_NOT_APPLIED`]; `None` if it is in none of these
/// (settled already), so exactly one caller acts on it.
pub fn settle_late(
    conn: &mut DbConnection,
    id: i64,
    outcome: &str,
    chain_message: Option<&str>,
    chain_error: Option<&str>,
) -> QueryResult<Option<Decision>> {
    let from = [OUTCOME_PENDING, OUTCOME_UNKNOWN, OUTCOME_NOT_APPLIED];
    settle_from(conn, id, &from, outcome, chain_message, chain_error)
}

/// Writes the outcome and the chain's text if the decision's outcome is one of `from`
/// (and not already `outcome`): the conditional update that lets exactly one of
/// several writers act.
fn settle_from(
    conn: &mut DbConnection,
    id: i64,
    from: &[&str],
    outcome: &str,
    chain_message: Option<&str>,
    chain_error: Option<&str>,
) -> QueryResult<Option<Decision>> {
    let change = DecisionChangeset {
        outcome,
        chain_message,
        chain_error,
    };
    diesel::update(
        decisions::table
            .find(id)
            .filter(decisions::outcome.eq_any(from))
            .filter(decisions::outcome.ne(change.outcome)),
    )
    .set((change, decisions::updated_at.eq(now())))
    .returning(returning::<Decision>())
    .get_result(conn)
    .optional()
}

/// The decision whose request was sent with correlation id `corr`, if any.
pub fn by_correlation_id(conn: &mut DbConnection, corr: &str) -> QueryResult<Option<Decision>> {
    decisions::table
        .filter(decisions::correlation_id.eq(corr))
        .select(Decision::as_select())
        .first(conn)
        .optional()
}

/// Settles an [`OUTCOME_UNKNOWN`] decision, or a [`OUTCOME_NOT_APPLIED`] one the chain
/// applied after all (a commit slower than the scans): `None` if it is no longer in
/// either state (another instance settled it first), so exactly one caller acts on it.
pub fn settle_unknown(
    conn: &mut DbConnection,
    id: i64,
    outcome: &str,
    chain_message: Option<&str>,
) -> QueryResult<Option<Decision>> {
    diesel::update(
        decisions::table
            .find(id)
            .filter(decisions::outcome.eq_any([OUTCOME_UNKNOWN, OUTCOME_NOT_APPLIED]))
            .filter(decisions::outcome.ne(outcome)),
    )
    .set((
        decisions::outcome.eq(outcome),
        decisions::chain_message.eq(chain_message),
        decisions::updated_at.eq(now()),
    ))
    .returning(returning::<Decision>())
    .get_result(conn)
    .optional()
}

/// Counts complete scan `scan` as one more that still showed the request of an unknown
/// decision OPEN; `None` if the decision is settled or this scan was counted already.
pub fn count_open_scan(
    conn: &mut DbConnection,
    id: i64,
    scan: i64,
) -> QueryResult<Option<Decision>> {
    diesel::update(
        decisions::table
            .find(id)
            .filter(decisions::outcome.eq(OUTCOME_UNKNOWN))
            .filter(
                decisions::last_scan
                    .is_null()
                    .or(decisions::last_scan.lt(scan)),
            ),
    )
    .set((
        decisions::open_scans.eq(decisions::open_scans + 1),
        decisions::last_scan.eq(scan),
        decisions::updated_at.eq(now()),
    ))
    .returning(returning::<Decision>())
    .get_result(conn)
    .optional()
}

/// Decisions on `kind` still [`OUTCOME_PENDING`] since before `before` belong to calls
/// that died with their server (a call records its outcome within its deadline):
/// they become [`OUTCOME_UNKNOWN`], since they may have been sent. Returns how many.
pub fn expire_pending(
    conn: &mut DbConnection,
    kind: &str,
    before: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        decisions::table
            .filter(decisions::kind.eq(kind))
            .filter(decisions::outcome.eq(OUTCOME_PENDING))
            .filter(decisions::updated_at.lt(before)),
    )
    .set((
        decisions::outcome.eq(OUTCOME_UNKNOWN),
        decisions::chain_error.eq("the server stopped before the chain answered"),
        decisions::updated_at.eq(now()),
    ))
    .execute(conn)
}

/// What the mirror settles on `kind`, oldest first: every [`OUTCOME_UNKNOWN`]
/// decision, and the [`OUTCOME_NOT_APPLIED`] ones written since `recent` (a chain that
/// commits later than the scans gave it may still show them applied).
pub fn unsettled(
    conn: &mut DbConnection,
    kind: &str,
    recent: NaiveDateTime,
) -> QueryResult<Vec<Decision>> {
    decisions::table
        .filter(decisions::kind.eq(kind))
        .filter(
            decisions::outcome.eq(OUTCOME_UNKNOWN).or(decisions::outcome
                .eq(OUTCOME_NOT_APPLIED)
                .and(decisions::updated_at.ge(recent))),
        )
        .order(decisions::id)
        .select(Decision::as_select())
        .load(conn)
}

/// The latest decision on request `request_id` of `kind`, if any.
pub fn latest(
    conn: &mut DbConnection,
    kind: &str,
    request_id: &str,
) -> QueryResult<Option<Decision>> {
    decisions::table
        .filter(decisions::kind.eq(kind))
        .filter(decisions::request_id.eq(request_id))
        .order(decisions::id.desc())
        .select(Decision::as_select())
        .first(conn)
        .optional()
}

/// One decision by id.
pub fn get(conn: &mut DbConnection, id: i64) -> QueryResult<Option<Decision>> {
    decisions::table
        .find(id)
        .select(Decision::as_select())
        .first(conn)
        .optional()
}

/// The decisions with these ids (in no particular order; unknown ids are left out):
/// one query for a page of rows that each point at one.
pub fn by_ids(conn: &mut DbConnection, ids: &[i64]) -> QueryResult<Vec<Decision>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    decisions::table
        .filter(decisions::id.eq_any(ids))
        .select(Decision::as_select())
        .load(conn)
}

/// A page of decisions, newest first.
pub fn list(conn: &mut DbConnection, limit: i64, offset: i64) -> QueryResult<Vec<Decision>> {
    decisions::table
        .order(decisions::id.desc())
        .limit(limit)
        .offset(offset)
        .select(Decision::as_select())
        .load(conn)
}

/// Every decision taken on one request, oldest first (an operator may retry).
pub fn for_request(conn: &mut DbConnection, request_id: &str) -> QueryResult<Vec<Decision>> {
    decisions::table
        .filter(decisions::request_id.eq(request_id))
        .order(decisions::id)
        .select(Decision::as_select())
        .load(conn)
}
