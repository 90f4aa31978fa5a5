//! The `chain_outbox` rows that announce production changes to the chain
//! (docs/protocol.md §4), with the keys that make their delivery ordered and
//! exactly-once.
//!
//! - **Ordering key** `unit:{code}` for a unit's record type, record, reporter and
//!   property updates, `day-report:{code}` for its day reports: a relay delivers the
//!   rows of one key one at a time, in the order they were enqueued, so a unit's update
//!   never overtakes the creation of its record.
//! - **Dedup key**: enqueuing a row whose key exists does nothing, and the relay sends
//!   the key as `idem`. Creating a record type, a record or a reporter is keyed per
//!   unit, so it is enqueued once per unit ever; a property update is keyed per
//!   change; a day report per unit and date.
//!
//! Why the record types are enqueued once per unit, not once ever: the relay orders
//! rows only within an ordering key. A single `ProductionUnit` row in unit A's key
//! would leave unit B's `create_record` free to reach the chain first and fail with
//! `unknown_record_type`. One row per unit costs one `already_exists` answer per unit
//! (success for the MES) and keeps every unit's sequence self-contained.

use chrono::NaiveDate;
use diesel::QueryResult;
use mes_core::codec::{PropertyValue, RecordAction, Topic, record_types};
use mes_core::db::units::ProductionUnit;
use mes_core::db::{DbConnection, outbox};
use mes_core::domain::{AgentKey, InvalidValue};
use mes_core::report::{Kpis, Shift, day_report_action};
use mes_core::trace::TraceParent;
use serde::Serialize;
use serde_json::Value;

/// The properties of `ProductionUnit` records the MES's reporter updates.
pub const REPORTED_PROPERTIES: [&str; 2] = ["status", "process_name"];

/// One message for the chain, ready to be written to `chain_outbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainMessage {
    /// `BLK_Rty` or `BLK_Rec`; stored by its default name, which the relay maps to
    /// the configured topic.
    pub topic: Topic,
    /// See [`outbox::OutboxRow::dedup_key`].
    pub dedup_key: String,
    /// See [`outbox::OutboxRow::ordering_key`].
    pub ordering_key: String,
    /// The JSON of the envelope's body (the relay adds the head).
    pub payload: String,
}

impl ChainMessage {
    fn new(topic: Topic, body: &impl Serialize, dedup_key: String, ordering_key: String) -> Self {
        // Our bodies hold only strings, finite numbers and maps with string keys, which
        // serde_json always serialises; "null" would make the relay refuse the row
        // loudly rather than send something else.
        let payload = serde_json::to_string(body).unwrap_or_else(|_| "null".to_owned());
        ChainMessage {
            topic,
            dedup_key,
            ordering_key,
            payload,
        }
    }

    /// Writes the row unless its dedup key exists; returns whether it inserted. Call
    /// it inside the transaction of the change it announces.
    ///
    /// The row keeps the trace the work runs for ([`kafka_bridge::trace::current`]: an
    /// operator's HTTP request), or a new one, so that the relay's record continues it.
    pub fn enqueue(&self, conn: &mut DbConnection) -> QueryResult<bool> {
        let trace = kafka_bridge::trace::current()
            .unwrap_or_else(TraceParent::new_root)
            .to_string();
        outbox::enqueue(
            conn,
            &outbox::NewOutboxRow {
                topic: self.topic.name(),
                dedup_key: &self.dedup_key,
                ordering_key: &self.ordering_key,
                payload: &self.payload,
                traceparent: Some(&trace),
            },
        )
    }
}

/// The ordering key of a unit's record messages.
pub fn unit_ordering_key(code: &str) -> String {
    format!("unit:{code}")
}

/// The ordering key of a unit's day reports.
pub fn day_report_ordering_key(code: &str) -> String {
    format!("day-report:{code}")
}

/// The dedup key of a unit's report for a day: what makes the daily run exactly-once.
pub fn day_report_dedup_key(code: &str, date: NaiveDate) -> String {
    format!("day-report:{code}:{}", date.format("%Y-%m-%d"))
}

/// `BLK_Rty create_record_type ProductionUnit`, enqueued once per unit (see the
/// module docs for why not once ever).
pub fn unit_record_type(code: &str) -> ChainMessage {
    ChainMessage::new(
        Topic::RecordType,
        &record_types::production_unit(),
        format!("unit:{code}:record-type"),
        unit_ordering_key(code),
    )
}

/// The unit's properties as the `ProductionUnit` record type names them; a unit
/// running no process has `process_name: null`.
fn unit_properties(unit: &ProductionUnit, with_name: bool) -> Vec<PropertyValue> {
    let mut values = Vec::with_capacity(3);
    if with_name {
        values.push(PropertyValue {
            name: "name".into(),
            value: Value::String(unit.name.clone()),
        });
    }
    values.push(PropertyValue {
        name: "status".into(),
        value: Value::String(unit.status.clone()),
    });
    values.push(PropertyValue {
        name: "process_name".into(),
        value: unit.process_name.clone().map_or(Value::Null, Value::String),
    });
    values
}

/// `BLK_Rec create_record` of the unit with its current values; once per unit.
pub fn unit_record(unit: &ProductionUnit) -> ChainMessage {
    ChainMessage::new(
        Topic::Record,
        &RecordAction::CreateRecord {
            record_id: unit.code.clone(),
            record_type: record_types::PRODUCTION_UNIT.to_owned(),
            properties: unit_properties(unit, true),
        },
        format!("unit:{}:record", unit.code),
        unit_ordering_key(&unit.code),
    )
}

/// `BLK_Rec add_reporter`: `reporter` may update status and process name; once per
/// unit and reporter.
pub fn unit_reporter(code: &str, reporter: &AgentKey) -> ChainMessage {
    ChainMessage::new(
        Topic::Record,
        &RecordAction::AddReporter {
            record_id: code.to_owned(),
            reporter: reporter.clone(),
            properties: REPORTED_PROPERTIES
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        },
        format!("unit:{code}:reporter:{reporter}"),
        unit_ordering_key(code),
    )
}

/// `BLK_Rec update_properties` with the unit's status and process name as stored.
///
/// Each change is its own event on the chain, so the key is unique per call: the
/// stored `updated_at` (microseconds) plus a random part, since two changes can
/// share a microsecond on different servers.
pub fn unit_update(unit: &ProductionUnit) -> ChainMessage {
    ChainMessage::new(
        Topic::Record,
        &RecordAction::UpdateProperties {
            record_id: unit.code.clone(),
            properties: unit_properties(unit, false),
        },
        format!(
            "unit:{}:update:{}:{}",
            unit.code,
            unit.updated_at.format("%Y%m%dT%H%M%S%.6f"),
            uuid::Uuid::new_v4().simple()
        ),
        unit_ordering_key(&unit.code),
    )
}

/// `BLK_Rty create_record_type DayReport`, enqueued once per unit ahead of its first
/// report (same reason as [`unit_record_type`]).
pub fn day_report_record_type(code: &str) -> ChainMessage {
    ChainMessage::new(
        Topic::RecordType,
        &record_types::day_report(),
        format!("day-report:{code}:record-type"),
        day_report_ordering_key(code),
    )
}

/// `BLK_Rec create_day_report` of a unit's day from each shift's indicators, with
/// the flow id and record ids of docs/protocol.md §7.
pub fn day_report(
    date: NaiveDate,
    code: &str,
    shifts: &[(Shift, Kpis)],
) -> Result<ChainMessage, InvalidValue> {
    let action = day_report_action(date, code, shifts)?;
    Ok(ChainMessage::new(
        Topic::Record,
        &action,
        day_report_dedup_key(code, date),
        day_report_ordering_key(code),
    ))
}
