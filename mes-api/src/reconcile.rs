//! Decisions converge with the chain (docs/protocol.md §10).
//!
//! An answer whose reply was lost, late, or cut by a shutdown leaves its decision
//! `unknown`: it was sent, and the chain may or may not have applied it. Nothing is
//! sent again for it. Instead, after every complete scan of the chain's list into the
//! mirror, each `unknown` decision of that kind is compared with what the chain shows:
//!
//! | the chain shows | decision |
//! |---|---|
//! | the answer it was sent (ACCEPTED for an accept) | `accepted` / `rejected`; an accepted order becomes its production order |
//! | the other answer | `not_applied` |
//! | still OPEN (or not listed) after `MES_RECONCILE_AFTER_SCANS` complete scans | `not_applied`: the operator may answer again |
//!
//! A `not_applied` decision is still compared with the list for a day: a chain that
//! commits the answer later after all turns it `accepted`/`rejected` (and produces the
//! order), so an accepted order never stays without its production order.
//!
//! Every step is a conditional update (`… WHERE outcome = 'unknown'`), and a production
//! order is created once per chain order (unique `chain_order_id`), so two instances
//! reconciling the same scan settle each decision once and produce each order once.

use std::time::Duration;

use chrono::Utc;
use mes_core::db::{chain_requests, decisions, orders};
use serde_json::Value;

use crate::db::{Db, DbError};
use crate::events::Hub;
use crate::service::requests::Kind;

/// How reconciliation is tuned (`MES_RECONCILE_AFTER_SCANS`, the request timeout).
#[derive(Debug, Clone, Copy)]
pub struct Reconcile {
    /// Complete scans that must still show the request OPEN before an `unknown`
    /// decision is `not_applied` (default 3).
    pub after_scans: u32,
    /// A decision still `pending` this long after it was recorded belongs to a call
    /// that died with its server: it becomes `unknown`.
    pub pending_after: Duration,
}

/// How long a `not_applied` decision is still compared with the chain's list: a chain
/// that commits an answer after the scans gave up on it still gets its production
/// order.
const NOT_APPLIED_WATCH_HOURS: i64 = 24;

/// The message stored on a decision settled from the chain's list.
const CONFIRMED: &str = "confirmed from the chain's request list";

/// Settles the `unknown` decisions on `kind` from the mirror, after complete scan
/// `scan`. Errors are logged: the next scan tries again.
pub async fn after_scan(db: &Db, hub: &Hub, tuning: Reconcile, kind: Kind, scan: i64) {
    if let Err(e) = settle_kind(db, hub, tuning, kind, scan).await {
        tracing::warn!(
            kind = kind.as_str(),
            "reconciling decisions with the chain: {e}"
        );
    }
}

async fn settle_kind(
    db: &Db,
    hub: &Hub,
    tuning: Reconcile,
    kind: Kind,
    scan: i64,
) -> Result<(), DbError> {
    let stale = Utc::now().naive_utc()
        - chrono::Duration::from_std(tuning.pending_after).unwrap_or(chrono::Duration::MAX);
    let recent = Utc::now().naive_utc() - chrono::Duration::hours(NOT_APPLIED_WATCH_HOURS);
    let name = kind.as_str();
    let unsettled = db
        .query(move |conn| {
            decisions::expire_pending(conn, name, stale)?;
            decisions::unsettled(conn, name, recent)
        })
        .await?;
    for decision in unsettled {
        let request_id = decision.request_id.clone();
        let row = db
            .query(move |conn| chain_requests::get(conn, name, &request_id))
            .await?;
        let settled = match row.as_ref().map(|r| r.status.as_str()) {
            Some(status @ ("ACCEPTED" | "REJECTED")) => {
                let item = row
                    .as_ref()
                    .and_then(|r| serde_json::from_str::<Value>(&r.item).ok());
                settle_from_status(db, kind, &decision, status, item.as_ref()).await?
            }
            _ if decision.outcome == decisions::OUTCOME_UNKNOWN => {
                count_open(db, &decision, scan, tuning.after_scans).await?
            }
            _ => None,
        };
        if let Some(settled) = settled {
            tracing::info!(
                kind = name,
                request_id = %settled.request_id,
                outcome = %settled.outcome,
                "decision settled from the chain's list"
            );
            publish_decision(hub, kind, &settled);
        }
    }
    Ok(())
}

/// The chain shows `status` (`ACCEPTED` or `REJECTED`) for the request of `decision`,
/// whose list item is `item`: settles the decision (once, whoever calls first) and
/// produces an accepted order. `None` if there was nothing to change.
pub(crate) async fn settle_from_status(
    db: &Db,
    kind: Kind,
    decision: &decisions::Decision,
    status: &str,
    item: Option<&Value>,
) -> Result<Option<decisions::Decision>, DbError> {
    let applied = decisions::applied(decision.response);
    let expected = if decision.response == decisions::ACCEPT {
        "ACCEPTED"
    } else {
        "REJECTED"
    };
    if status != expected && decision.outcome == decisions::OUTCOME_NOT_APPLIED {
        return Ok(None); // already says so
    }
    let (outcome, message) = if status == expected {
        (applied, CONFIRMED.to_owned())
    } else {
        (
            decisions::OUTCOME_NOT_APPLIED,
            format!("the chain shows the request {status}"),
        )
    };
    // The production order first (created once, whoever comes first), so a crash
    // between the two never leaves an accepted order without one.
    if outcome == decisions::OUTCOME_ACCEPTED
        && kind == Kind::Order
        && let Some(item) = item
    {
        take_over(db, &decision.request_id, item, decision.id).await?;
    }
    let id = decision.id;
    db.query(move |conn| decisions::settle_unknown(conn, id, outcome, Some(&message)))
        .await
}

/// The chain still shows the request OPEN (or does not list it) after scan `scan`.
async fn count_open(
    db: &Db,
    decision: &decisions::Decision,
    scan: i64,
    after_scans: u32,
) -> Result<Option<decisions::Decision>, DbError> {
    let id = decision.id;
    let counted = db
        .query(move |conn| decisions::count_open_scan(conn, id, scan))
        .await?;
    match counted {
        Some(counted) if counted.open_scans >= i32::try_from(after_scans).unwrap_or(i32::MAX) => {
            let message = format!(
                "not applied: the chain still showed the request OPEN after {} complete scans",
                counted.open_scans
            );
            db.query(move |conn| {
                decisions::settle_unknown(conn, id, decisions::OUTCOME_NOT_APPLIED, Some(&message))
            })
            .await
        }
        _ => Ok(None),
    }
}

/// Tells consoles (and the decider's) that a decision changed.
pub fn publish_decision(hub: &Hub, kind: Kind, decision: &decisions::Decision) {
    hub.publish(
        "decision",
        serde_json::json!({
            "id": decision.id,
            "kind": kind.as_str(),
            "request_id": decision.request_id,
            "response": if decision.response == decisions::ACCEPT { "accept" } else { "reject" },
            "operator": decision.operator,
            "outcome": decision.outcome,
            "message": decision.chain_message,
            "error": decision.chain_error,
        }),
    );
}

/// The text to store for a chain value: strings as they are, anything else as JSON.
pub fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Takes over the chain's order `item` (accepted by `decision_id`) as a production
/// order, once per chain order.
pub async fn take_over(
    db: &Db,
    chain_order_id: &str,
    item: &Value,
    decision_id: i64,
) -> Result<orders::ProductionOrder, DbError> {
    let field = |name: &str| item.get(name).map(text_of).unwrap_or_default();
    let chain_order_id = chain_order_id.to_owned();
    let issuing_agent = field("issuing_agent");
    let order_type = field("type");
    let description = field("description");
    let metadata = item
        .get("metadata")
        .map_or_else(|| "null".to_owned(), Value::to_string);
    let timestamp = item.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
    db.query(move |conn| {
        orders::create_from_chain(
            conn,
            &orders::NewProductionOrder {
                chain_order_id: &chain_order_id,
                issuing_agent: &issuing_agent,
                order_type: &order_type,
                description: &description,
                metadata: &metadata,
                chain_timestamp: timestamp,
                decision_id: Some(decision_id),
                status: orders::STATUS_PLANNED,
            },
        )
    })
    .await
}
