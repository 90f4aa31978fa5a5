//! Record types and records (`BLK_Rty`, `BLK_Rec`, docs/protocol.md §4): the owner,
//! reporter and schema rules of Sawtooth Supply Chain.

use std::collections::{BTreeMap, BTreeSet};

use mes_core::codec::record_types::DAY_REPORT;
use mes_core::codec::{
    DayReportRecord, PropertySchema, PropertyValue, RecordAction, RecordTypeAction, ReplyBody,
};
use mes_core::domain::AgentKey;
use serde_json::{Value, json};

use super::{Ledger, PropertyEntry, Record, message};
use crate::rules::{
    ErrorCode, Refusal, check_new_record, check_schemas, check_value, invalid, schema_of,
};

impl Ledger {
    pub(super) fn record_type_action(
        &mut self,
        action: &RecordTypeAction,
        _actor: &AgentKey,
    ) -> Result<ReplyBody, Refusal> {
        let RecordTypeAction::CreateRecordType { name, properties } = action;
        if name.is_empty() {
            return Err(invalid("the record type's name is empty"));
        }
        if self.state.record_types.contains_key(name) {
            return Err(Refusal::new(
                ErrorCode::AlreadyExists,
                format!("Record type {name} already exists"),
            ));
        }
        check_schemas(properties)?;
        let now = self.now();
        self.transact(
            "create_record_type",
            json!({"name": name, "properties": properties}),
            now,
        );
        self.state
            .record_types
            .insert(name.clone(), properties.clone());
        Ok(message(format!("Record type {name} created")))
    }

    pub(super) fn record_action(
        &mut self,
        action: &RecordAction,
        actor: &AgentKey,
    ) -> Result<ReplyBody, Refusal> {
        match action {
            RecordAction::CreateRecord {
                record_id,
                record_type,
                properties,
            } => self.create_record(record_id, record_type, properties, actor),
            RecordAction::AddReporter {
                record_id,
                reporter,
                properties,
            } => self.add_reporter(record_id, reporter, properties, actor),
            RecordAction::UpdateProperties {
                record_id,
                properties,
            } => self.update_properties(record_id, properties, actor),
            RecordAction::CreateDayReport {
                report_id,
                unit,
                date,
                records,
            } => self.create_day_report(report_id, unit, date, records, actor),
        }
    }

    fn schemas(&self, record_type: &str) -> Result<&[PropertySchema], Refusal> {
        self.state
            .record_types
            .get(record_type)
            .map(Vec::as_slice)
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::UnknownRecordType,
                    format!("record type {record_type} does not exist"),
                )
            })
    }

    fn create_record(
        &mut self,
        record_id: &str,
        record_type: &str,
        values: &[PropertyValue],
        actor: &AgentKey,
    ) -> Result<ReplyBody, Refusal> {
        if record_id.is_empty() {
            return Err(invalid("the record id is empty"));
        }
        let schemas = self.schemas(record_type)?;
        if self.state.records.contains_key(record_id) {
            return Err(Refusal::new(
                ErrorCode::AlreadyExists,
                format!("Record {record_id} already exists"),
            ));
        }
        check_new_record(record_type, schemas, values)?;
        let names: Vec<String> = schemas.iter().map(|s| s.name.clone()).collect();
        let now = self.now();
        let tx = self.transact(
            "create_record",
            json!({"record_id": record_id, "record_type": record_type, "owner": actor,
                   "properties": values}),
            now,
        );
        let record = new_record(record_id, record_type, &names, values, actor, now, tx);
        self.state.records.insert(record_id.to_owned(), record);
        Ok(message(format!("Record {record_id} created")))
    }

    fn add_reporter(
        &mut self,
        record_id: &str,
        reporter: &AgentKey,
        properties: &[String],
        actor: &AgentKey,
    ) -> Result<ReplyBody, Refusal> {
        let record = self.existing(record_id)?;
        if &record.owner != actor {
            return Err(Refusal::new(
                ErrorCode::NotOwner,
                format!("only the owner of record {record_id} may add reporters"),
            ));
        }
        if properties.is_empty() {
            return Err(invalid("add_reporter names no property"));
        }
        let schemas = self.schemas(&record.record_type)?;
        for name in properties {
            schema_of(schemas, &record.record_type, name)?;
        }
        let missing: Vec<&String> = properties
            .iter()
            .filter(|name| {
                !record
                    .reporters
                    .get(name.as_str())
                    .is_some_and(|agents| agents.contains(reporter))
            })
            .collect();
        if missing.is_empty() {
            return Err(Refusal::new(
                ErrorCode::AlreadyExists,
                format!(
                    "{reporter} already reports {} of record {record_id}",
                    properties.join(", ")
                ),
            ));
        }
        let missing: Vec<String> = missing.into_iter().cloned().collect();
        let now = self.now();
        let tx = self.transact(
            "add_reporter",
            json!({"record_id": record_id, "reporter": reporter, "properties": properties}),
            now,
        );
        if let Some(record) = self.state.records.get_mut(record_id) {
            for name in &missing {
                record
                    .reporters
                    .entry(name.clone())
                    .or_default()
                    .push(reporter.clone());
            }
            record.transaction_ids.extend(tx);
        }
        Ok(message(format!(
            "Reporter {reporter} added to record {record_id} for {}",
            properties.join(", ")
        )))
    }

    fn update_properties(
        &mut self,
        record_id: &str,
        values: &[PropertyValue],
        actor: &AgentKey,
    ) -> Result<ReplyBody, Refusal> {
        let record = self.existing(record_id)?;
        if values.is_empty() {
            return Err(invalid("update_properties gives no property"));
        }
        let schemas = self.schemas(&record.record_type)?;
        let mut seen = BTreeSet::new();
        for v in values {
            let schema = schema_of(schemas, &record.record_type, &v.name)?;
            if !seen.insert(v.name.as_str()) {
                return Err(invalid(format!("property {} is given twice", v.name)));
            }
            let may_report = record
                .reporters
                .get(&v.name)
                .is_some_and(|agents| agents.contains(actor));
            if !may_report {
                return Err(Refusal::new(
                    ErrorCode::NotReporter,
                    format!(
                        "{actor} is not a reporter of {} of record {record_id}",
                        v.name
                    ),
                ));
            }
            check_value(schema, &v.value)?;
        }
        let now = self.now();
        let tx = self.transact(
            "update_properties",
            json!({"record_id": record_id, "reporter": actor, "properties": values}),
            now,
        );
        if let Some(record) = self.state.records.get_mut(record_id) {
            for v in values {
                record
                    .properties
                    .entry(v.name.clone())
                    .or_default()
                    .push(PropertyEntry {
                        value: v.value.clone(),
                        reporter: actor.clone(),
                        timestamp: now,
                    });
            }
            record.transaction_ids.extend(tx);
        }
        let names: Vec<&str> = values.iter().map(|v| v.name.as_str()).collect();
        Ok(message(format!(
            "Record {record_id} updated: {}",
            names.join(", ")
        )))
    }

    /// A report is stored whole or not at all: every record is checked first.
    fn create_day_report(
        &mut self,
        report_id: &str,
        unit: &str,
        date: &str,
        records: &[DayReportRecord],
        actor: &AgentKey,
    ) -> Result<ReplyBody, Refusal> {
        let schemas = self.schemas(DAY_REPORT)?;
        if report_id.is_empty() {
            return Err(invalid("the report id is empty"));
        }
        if self.state.day_reports.contains_key(report_id) {
            return Err(Refusal::new(
                ErrorCode::AlreadyExists,
                format!("Day report {report_id} already exists"),
            ));
        }
        let mut ids = BTreeSet::new();
        let mut rows = Vec::with_capacity(records.len());
        for r in records {
            if r.record_id.is_empty() {
                return Err(invalid("a day-report record id is empty"));
            }
            if !ids.insert(r.record_id.as_str()) {
                return Err(invalid(format!(
                    "record {} appears twice in the report",
                    r.record_id
                )));
            }
            if self.state.records.contains_key(&r.record_id) {
                return Err(Refusal::new(
                    ErrorCode::AlreadyExists,
                    format!("Record {} already exists", r.record_id),
                ));
            }
            let value = r
                .value
                .and_then(serde_json::Number::from_f64)
                .map_or(Value::Null, Value::Number);
            let values = vec![
                pv("unit", Value::String(unit.to_owned())),
                pv("date", Value::String(date.to_owned())),
                pv("shift", Value::String(r.shift.clone())),
                pv("indicator", Value::String(r.indicator.clone())),
                pv("value", value),
            ];
            check_new_record(DAY_REPORT, schemas, &values)
                .map_err(|e| invalid(format!("record {}: {}", r.record_id, e.text)))?;
            rows.push((r.record_id.clone(), values));
        }
        let names: Vec<String> = schemas.iter().map(|s| s.name.clone()).collect();
        let now = self.now();
        let tx = self.transact(
            "create_day_report",
            json!({"report_id": report_id, "unit": unit, "date": date, "records": records}),
            now,
        );
        let count = rows.len();
        let mut record_ids = Vec::with_capacity(count);
        for (record_id, values) in rows {
            let record = new_record(
                &record_id,
                DAY_REPORT,
                &names,
                &values,
                actor,
                now,
                tx.clone(),
            );
            self.state.records.insert(record_id.clone(), record);
            record_ids.push(record_id);
        }
        self.state
            .day_reports
            .insert(report_id.to_owned(), record_ids);
        Ok(message(format!(
            "Day report {report_id} created with {count} records"
        )))
    }

    fn existing(&self, record_id: &str) -> Result<&Record, Refusal> {
        self.state.records.get(record_id).ok_or_else(|| {
            Refusal::new(
                ErrorCode::UnknownRecord,
                format!("record {record_id} does not exist"),
            )
        })
    }
}

/// A new record: `actor` owns it and reports every property of its type; the given
/// values (null ones included, as "no value") start the histories.
fn new_record(
    record_id: &str,
    record_type: &str,
    property_names: &[String],
    values: &[PropertyValue],
    actor: &AgentKey,
    now: i64,
    tx: Option<mes_core::domain::TxId>,
) -> Record {
    let reporters: BTreeMap<String, Vec<AgentKey>> = property_names
        .iter()
        .map(|name| (name.clone(), vec![actor.clone()]))
        .collect();
    let properties = values
        .iter()
        .map(|v| {
            (
                v.name.clone(),
                vec![PropertyEntry {
                    value: v.value.clone(),
                    reporter: actor.clone(),
                    timestamp: now,
                }],
            )
        })
        .collect();
    Record {
        record_id: record_id.to_owned(),
        record_type: record_type.to_owned(),
        owner: actor.clone(),
        reporters,
        properties,
        transaction_ids: tx.into_iter().collect(),
    }
}

fn pv(name: &str, value: Value) -> PropertyValue {
    PropertyValue {
        name: name.to_owned(),
        value,
    }
}
