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

/// Outcome of a decision whose request has not been answered yet.
pub const OUTCOME_PENDING: &str = "pending";
/// The chain acknowledged the decision.
pub const OUTCOME_OK: &str = "ok";
/// The chain answered with an error.
pub const OUTCOME_CHAIN_ERROR: &str = "chain_error";
/// No reply arrived in time.
pub const OUTCOME_TIMEOUT: &str = "timeout";
/// Kafka could not be reached.
pub const OUTCOME_BROKER_UNAVAILABLE: &str = "broker_unavailable";
/// The request provably never reached the broker (e.g. refused at once because the
/// chain is behind): answering again is safe.
pub const OUTCOME_NOT_SENT: &str = "not_sent";
/// Too many requests were in flight; the request was not sent.
pub const OUTCOME_OVERLOADED: &str = "overloaded";
/// Any other failure.
pub const OUTCOME_FAILED: &str = "failed";

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

/// Stores how the request ended; `NotFound` if there is no such decision.
pub fn complete(
    conn: &mut DbConnection,
    id: i64,
    outcome: &str,
    chain_message: Option<&str>,
    chain_error: Option<&str>,
) -> QueryResult<Decision> {
    diesel::update(decisions::table.find(id))
        .set((
            DecisionChangeset {
                outcome,
                chain_message,
                chain_error,
            },
            decisions::updated_at.eq(now()),
        ))
        .returning(returning::<Decision>())
        .get_result(conn)
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
