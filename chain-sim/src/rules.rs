//! The rules a real chain enforces, as pure functions: error codes (docs/protocol.md
//! §6) and property checks (§4). The ledger calls them; they own no state.

use std::collections::BTreeSet;
use std::fmt;

use mes_core::codec::{DataType, PropertySchema, PropertyValue, ReplyBody};
use serde_json::Value;

/// The machine-readable reasons of docs/protocol.md §6, so the simulator answers with
/// exactly the codes the MES recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Unknown token, or a bad signature on the request.
    Unauthorized,
    /// No partner request or order with that id.
    NotFound,
    /// The request was already answered.
    NotOpen,
    /// Order from an agent that is not an accepted partner.
    NotAPartner,
    /// Record type, record, reporter or day report exists.
    AlreadyExists,
    /// Reference to a record type that does not exist.
    UnknownRecordType,
    /// Reference to a record that does not exist.
    UnknownRecord,
    /// Missing required property, wrong type, unknown property.
    InvalidProperty,
    /// Only the record's owner may do this.
    NotOwner,
    /// Only a reporter of the property may update it.
    NotReporter,
    /// The envelope does not follow the protocol.
    BadRequest,
}

impl ErrorCode {
    /// The code as it travels in the reply's `code` field.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NotOpen => "not_open",
            ErrorCode::NotAPartner => "not_a_partner",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::UnknownRecordType => "unknown_record_type",
            ErrorCode::UnknownRecord => "unknown_record",
            ErrorCode::InvalidProperty => "invalid_property",
            ErrorCode::NotOwner => "not_owner",
            ErrorCode::NotReporter => "not_reporter",
            ErrorCode::BadRequest => "bad_request",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the ledger refused a request: the code plus a sentence for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) text: String,
}

impl Refusal {
    pub(crate) fn new(code: ErrorCode, text: impl Into<String>) -> Refusal {
        Refusal {
            code,
            text: text.into(),
        }
    }

    pub(crate) fn into_reply(self) -> ReplyBody {
        error_reply(self.code, self.text)
    }
}

/// An error reply with its code, as the simulator writes every refusal.
pub fn error_reply(code: ErrorCode, text: impl Into<String>) -> ReplyBody {
    ReplyBody::Error {
        error: Value::String(text.into()),
        code: Some(code.as_str().to_owned()),
    }
}

/// Checks a record type's property schemas: names unique and non-empty, `ENUM` with
/// options, options only on `ENUM`.
pub(crate) fn check_schemas(properties: &[PropertySchema]) -> Result<(), Refusal> {
    let mut seen = BTreeSet::new();
    for p in properties {
        if p.name.is_empty() {
            return Err(invalid("a property has an empty name"));
        }
        if !seen.insert(p.name.as_str()) {
            return Err(invalid(format!("property {} is declared twice", p.name)));
        }
        match p.data_type {
            DataType::Enum if p.enum_options.is_empty() => {
                return Err(invalid(format!(
                    "ENUM property {} has no enum_options",
                    p.name
                )));
            }
            DataType::Enum => {}
            _ if !p.enum_options.is_empty() => {
                return Err(invalid(format!(
                    "property {} has enum_options but is not an ENUM",
                    p.name
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The schema of `name` in `schemas`, or an `invalid_property` refusal.
pub(crate) fn schema_of<'a>(
    schemas: &'a [PropertySchema],
    record_type: &str,
    name: &str,
) -> Result<&'a PropertySchema, Refusal> {
    schemas
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| invalid(format!("{record_type} has no property {name}")))
}

/// Checks one value against its schema. `null` means "no value" and is allowed for
/// properties that are not required (a day report's `value` without inputs).
pub(crate) fn check_value(schema: &PropertySchema, value: &Value) -> Result<(), Refusal> {
    let ok = match (schema.data_type, value) {
        (_, Value::Null) => !schema.required,
        (DataType::String, Value::String(_)) => true,
        (DataType::Number, Value::Number(_)) => true,
        (DataType::Boolean, Value::Bool(_)) => true,
        (DataType::Enum, Value::String(s)) => schema.enum_options.iter().any(|o| o == s),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "property {} ({}{}) does not accept {}",
            schema.name,
            data_type_name(schema.data_type),
            if schema.required { ", required" } else { "" },
            short(value)
        )))
    }
}

/// Checks a full set of values for `create_record`: every name known and given once,
/// every value well typed, every required property present and not null.
pub(crate) fn check_new_record(
    record_type: &str,
    schemas: &[PropertySchema],
    values: &[PropertyValue],
) -> Result<(), Refusal> {
    let mut given = BTreeSet::new();
    for v in values {
        let schema = schema_of(schemas, record_type, &v.name)?;
        if !given.insert(v.name.as_str()) {
            return Err(invalid(format!("property {} is given twice", v.name)));
        }
        check_value(schema, &v.value)?;
    }
    if let Some(missing) = schemas
        .iter()
        .find(|s| s.required && !given.contains(s.name.as_str()))
    {
        return Err(invalid(format!(
            "required property {} of {record_type} is missing",
            missing.name
        )));
    }
    Ok(())
}

/// An `invalid_property` refusal.
pub(crate) fn invalid(text: impl Into<String>) -> Refusal {
    Refusal::new(ErrorCode::InvalidProperty, text)
}

fn data_type_name(t: DataType) -> &'static str {
    match t {
        DataType::String => "STRING",
        DataType::Number => "NUMBER",
        DataType::Boolean => "BOOLEAN",
        DataType::Enum => "ENUM",
    }
}

/// A value for an error message, cut short so a hostile value cannot bloat replies.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mes_core::codec::RecordTypeAction;
    use mes_core::codec::record_types;
    use serde_json::json;

    use super::*;

    fn day_report_schemas() -> Vec<PropertySchema> {
        let RecordTypeAction::CreateRecordType { properties, .. } = record_types::day_report();
        properties
    }

    fn pv(name: &str, value: Value) -> PropertyValue {
        PropertyValue {
            name: name.into(),
            value,
        }
    }

    #[test]
    fn values_are_checked_against_their_type() {
        let s = day_report_schemas();
        let shift = &s[2];
        assert!(check_value(shift, &json!("DAY")).is_ok());
        assert!(check_value(shift, &json!("D")).is_err());
        assert!(check_value(shift, &Value::Null).is_err(), "required");
        let value = &s[4];
        assert!(check_value(value, &json!(0.5)).is_ok());
        assert!(check_value(value, &Value::Null).is_ok(), "optional");
        assert!(check_value(value, &json!("0.5")).is_err());
        let unit = &s[0];
        assert!(check_value(unit, &json!(3)).is_err());
        let flag = PropertySchema {
            name: "urgent".into(),
            data_type: DataType::Boolean,
            required: false,
            enum_options: vec![],
        };
        assert!(check_value(&flag, &json!(true)).is_ok());
        assert!(check_value(&flag, &json!(1)).is_err());
        let e = check_value(unit, &json!(["x".repeat(100)])).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidProperty);
        assert!(e.text.len() < 120, "{}", e.text);
    }

    #[test]
    fn new_record_needs_required_known_unique_properties() {
        let s = day_report_schemas();
        let full = vec![
            pv("unit", json!("PT10")),
            pv("date", json!("2021-01-11")),
            pv("shift", json!("A")),
            pv("indicator", json!("oee")),
        ];
        assert!(check_new_record("DayReport", &s, &full).is_ok());
        let mut missing = full.clone();
        missing.pop();
        let e = check_new_record("DayReport", &s, &missing).unwrap_err();
        assert!(e.text.contains("indicator"), "{}", e.text);
        let mut unknown = full.clone();
        unknown.push(pv("colour", json!("red")));
        assert!(check_new_record("DayReport", &s, &unknown).is_err());
        let mut twice = full;
        twice.push(pv("unit", json!("PT11")));
        assert!(check_new_record("DayReport", &s, &twice).is_err());
    }

    #[test]
    fn schemas_are_checked() {
        let s = day_report_schemas();
        assert!(check_schemas(&s).is_ok());
        let mut dup = s.clone();
        dup.push(s[0].clone());
        assert!(check_schemas(&dup).is_err());
        let mut no_options = s.clone();
        no_options[2].enum_options.clear();
        assert!(check_schemas(&no_options).is_err());
        let mut stray = s;
        stray[0].enum_options = vec!["x".into()];
        assert!(check_schemas(&stray).is_err());
    }

    #[test]
    fn codes_are_the_protocol_names() {
        assert_eq!(ErrorCode::NotAPartner.as_str(), "not_a_partner");
        assert_eq!(
            ErrorCode::UnknownRecordType.to_string(),
            "unknown_record_type"
        );
        let ReplyBody::Error { code, .. } = error_reply(ErrorCode::BadRequest, "x") else {
            unreachable!()
        };
        assert_eq!(code.as_deref(), Some("bad_request"));
    }
}
