//! Taking list replies into the mirror of the chain's requests
//! ([`mes_core::db::chain_requests`]) and announcing what the mirror did not know.
//!
//! Both the poller's scans and every operator LIST reply come through
//! [`take_in`]: the items are upserted, and what *this* upsert inserted (a new OPEN
//! request) or changed (a status) is published on the [`Hub`]; a new OPEN request
//! also becomes a webhook notification row per webhook, written on the upsert's
//! connection right after it (not in one transaction: the upsert's statements are
//! deliberately each atomic on their own, see `chain_requests`). The mirror is shared by restarts and instances, so each request is
//! announced once whoever sees it first, and one that arrived while no server ran is
//! announced by the first scan after the restart. Nothing is announced before the
//! first complete scan of a kind (the baseline): requests that were on the chain before
//! the MES ever looked are not news.

use mes_core::db::DbConnection;
use mes_core::db::chain_requests::{self as mirror, SeenRequest, UpsertOutcome};
use mes_core::db::notifications;
use mes_core::domain::RequestId;
use serde_json::{Value, json};

use crate::db::Db;
use crate::error::ApiResult;
use crate::events::Hub;
use crate::notify::{Notification, Notifier};
use crate::service::requests::Kind;

/// One list item, with the columns the mirror keeps read out of it.
#[derive(Debug, Clone, PartialEq)]
struct Parsed {
    id: String,
    status: String,
    agent: String,
    timestamp: i64,
    description: String,
    json: String,
}

impl Parsed {
    fn seen(&self) -> SeenRequest<'_> {
        SeenRequest {
            chain_id: &self.id,
            status: &self.status,
            issuing_agent: &self.agent,
            chain_timestamp: self.timestamp,
            description: &self.description,
            item: &self.json,
        }
    }
}

/// The items of a list reply the mirror can hold: those whose id follows the request
/// id rule (docs/protocol.md; others are logged and skipped, never stored).
fn parse_items(kind: Kind, items: &[Value]) -> Vec<Parsed> {
    let text = |item: &Value, name: &str| {
        item.get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    items
        .iter()
        .filter_map(|item| {
            let id = crate::service::requests::chain_id(kind, item)?;
            Some(Parsed {
                id: id.to_string(),
                status: text(item, "status").trim().to_ascii_uppercase(),
                agent: text(item, "issuing_agent"),
                timestamp: item.get("timestamp").and_then(Value::as_i64).unwrap_or(0),
                description: text(item, "description"),
                json: item.to_string(),
            })
        })
        .collect()
}

/// What [`take_in`] did.
#[derive(Debug, Clone, Default)]
pub struct TakenIn {
    /// What the upsert inserted or changed.
    pub outcome: UpsertOutcome,
    /// Whether it was announced (the kind had its baseline scan).
    pub announced: bool,
}

/// Upserts `items` (a reply to a list of `kind`) into the mirror, `scan` being the
/// poller's scan number (`None` for an operator's LIST), and announces what this
/// upsert inserted or changed once the kind has its baseline.
pub async fn take_in(
    db: &Db,
    hub: &Hub,
    kind: Kind,
    items: &[Value],
    scan: Option<i64>,
) -> ApiResult<TakenIn> {
    let parsed = parse_items(kind, items);
    if parsed.is_empty() {
        return Ok(TakenIn::default());
    }
    let notifier = hub.notifier().cloned();
    let (baseline, outcome) = db
        .run(move |conn| {
            let state = mirror::scan_state(conn, kind.as_str())?;
            let seen: Vec<SeenRequest<'_>> = parsed.iter().map(Parsed::seen).collect();
            let outcome = mirror::upsert(conn, kind.as_str(), &seen, scan)?;
            if let Some(notifier) = notifier.filter(|_| state.has_baseline()) {
                // Right after the upsert that found them, on the same connection: the
                // webhooks' rows are in the database before anything is announced.
                record_new_requests(conn, &notifier, kind, &outcome);
                notifier.wake();
            }
            Ok((state.has_baseline(), outcome))
        })
        .await?;
    if baseline {
        announce(hub, kind, &outcome);
    }
    Ok(TakenIn {
        outcome,
        announced: baseline,
    })
}

/// [`take_in`] for a reply an operator asked for: a failure to mirror it is logged,
/// never the operator's problem.
pub async fn take_in_reply(db: &Db, hub: &Hub, kind: Kind, items: &[Value]) {
    if let Err(e) = take_in(db, hub, kind, items, None).await {
        tracing::warn!(
            "mirror: cannot record a {} list: {}",
            kind.as_str(),
            e.message
        );
    }
}

/// Records in the mirror the status the chain's reply to an answer gave request `id`
/// (`ACCEPTED` or `REJECTED`), item included, so the inbox shows it at once, and
/// publishes the `status` event the next scan would have (this update, not the scan,
/// is then the one that changed the row). Failures are logged: the next scan brings
/// the mirror up to date anyway.
pub async fn set_status(db: &Db, hub: &Hub, kind: Kind, id: &RequestId, status: &'static str) {
    let (name, chain_id) = (kind.as_str(), id.to_string());
    let result = db
        .run(move |conn| {
            let Some(row) = mirror::get(conn, name, &chain_id)? else {
                return Ok(None);
            };
            let mut item = item_value(&row);
            if let Some(fields) = item.as_object_mut() {
                fields.insert("status".to_owned(), Value::String(status.to_owned()));
            }
            let changed = mirror::record_answer(conn, name, &chain_id, status, &item.to_string())?;
            Ok(changed.then_some((row.status, item)))
        })
        .await;
    match result {
        Ok(Some((previous, item))) => hub.publish(
            "status",
            json!({
                "kind": name,
                "id": id.as_str(),
                "status": status,
                "previous": previous,
                "item": item,
            }),
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!("mirror: cannot record the answer to {id}: {}", e.message),
    }
}

/// The stored item as JSON (it was stored from JSON; text if it somehow is not).
fn item_value(row: &mirror::ChainRequest) -> Value {
    serde_json::from_str(&row.item).unwrap_or_else(|_| Value::String(row.item.clone()))
}

/// Records a webhook notification for each new OPEN request `outcome` inserted
/// (event `new_request:<kind>:<chain id>`). A failure is logged: the request is in the
/// mirror and the console shows it.
fn record_new_requests(
    conn: &mut DbConnection,
    notifier: &Notifier,
    kind: Kind,
    outcome: &UpsertOutcome,
) {
    let kind_name = kind.as_str();
    for row in &outcome.inserted {
        if row.status != mirror::STATUS_OPEN {
            continue;
        }
        let event_id = notifications::new_request_event_id(kind_name, &row.chain_id);
        let notification = Notification::new_request(kind_name, &row.chain_id, &item_value(row));
        if let Err(e) = notifier.record(conn, &event_id, &notification) {
            tracing::error!("webhooks: cannot record the notification {event_id}: {e}");
        }
    }
}

/// Publishes `request` for each new OPEN request and
/// `status` for each status change.
fn announce(hub: &Hub, kind: Kind, outcome: &UpsertOutcome) {
    let kind_name = kind.as_str();
    for row in &outcome.inserted {
        if row.status != mirror::STATUS_OPEN {
            continue;
        }
        let item = item_value(row);
        hub.publish(
            "request",
            json!({"kind": kind_name, "id": row.chain_id, "item": item}),
        );
    }
    for change in &outcome.changed {
        let row = &change.request;
        hub.publish(
            "status",
            json!({
                "kind": kind_name,
                "id": row.chain_id,
                "status": row.status,
                "previous": change.previous,
                "item": item_value(row),
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_keep_the_chains_id_and_json_and_unusable_ids_are_skipped() {
        let long = "x".repeat(mes_core::db::chain_requests::MAX_CHAIN_ID_LEN + 1);
        let items = vec![
            json!({"abs_action_id": "AbC-1", "status": "open", "issuing_agent": "02ab",
                   "timestamp": 1638789671, "description": "Operator's order"}),
            json!({"abs_action_id": "", "status": "OPEN"}),
            json!({"abs_action_id": 7, "status": "OPEN"}),
            json!({"abs_action_id": long, "status": "OPEN"}),
            json!({"abs_action_id": "../reports/daily/run?x=1#", "status": "OPEN"}),
            json!({"status": "OPEN"}),
        ];
        let parsed = parse_items(Kind::Order, &items);
        assert_eq!(parsed.len(), 1);
        let first = &parsed[0];
        assert_eq!(first.id, "AbC-1");
        assert_eq!(first.status, "OPEN");
        assert_eq!(first.agent, "02ab");
        assert_eq!(first.timestamp, 1638789671);
        assert_eq!(first.description, "Operator's order");
        assert_eq!(
            serde_json::from_str::<Value>(&first.json).ok(),
            Some(items[0].clone())
        );
        let partner = parse_items(
            Kind::Partner,
            &[json!({"partner_request_id": "9df8", "status": "ACCEPTED"})],
        );
        assert_eq!(partner[0].id, "9df8");
        assert_eq!(partner[0].description, "");
        assert_eq!(partner[0].timestamp, 0);
    }
}
