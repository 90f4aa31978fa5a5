//! What the MES sends: the request topics, the bodies of every request, and
//! [`Request`], which turns into an envelope and back.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::envelope::{Head, parse_bytes, split_envelope};
use super::{DEFAULT_MAX_REPLY_BYTES, DecodeError, Envelope};
use crate::domain::{AgentKey, Answer, RequestId};

/// The request topics of the chain's gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Topic {
    /// `BLK_Part_Lst`: list partner requests.
    #[serde(rename = "BLK_Part_Lst")]
    PartnerList,
    /// `BLK_Part_Ans`: answer a partner request.
    #[serde(rename = "BLK_Part_Ans")]
    PartnerAnswer,
    /// `BLK_Act_Lst`: list order requests.
    #[serde(rename = "BLK_Act_Lst")]
    OrderList,
    /// `BLK_Act_Ans`: answer an order request.
    #[serde(rename = "BLK_Act_Ans")]
    OrderAnswer,
    /// `BLK_Rty`: create a record type.
    #[serde(rename = "BLK_Rty")]
    RecordType,
    /// `BLK_Rec`: create records, add reporters, update properties, day reports.
    #[serde(rename = "BLK_Rec")]
    Record,
}

impl Topic {
    /// Every request topic, e.g. for creating them or subscribing a simulator.
    pub const ALL: [Topic; 6] = [
        Topic::PartnerList,
        Topic::PartnerAnswer,
        Topic::OrderList,
        Topic::OrderAnswer,
        Topic::RecordType,
        Topic::Record,
    ];

    /// The topic's default name on the broker.
    pub fn name(self) -> &'static str {
        match self {
            Topic::PartnerList => "BLK_Part_Lst",
            Topic::PartnerAnswer => "BLK_Part_Ans",
            Topic::OrderList => "BLK_Act_Lst",
            Topic::OrderAnswer => "BLK_Act_Ans",
            Topic::RecordType => "BLK_Rty",
            Topic::Record => "BLK_Rec",
        }
    }

    /// The topic with this default name, if any.
    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Paging of a list request; the original always sent `start: 0, limit: 10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Page {
    /// Index of the first item.
    pub start: u32,
    /// Most items to return.
    pub limit: u32,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            start: 0,
            limit: 10,
        }
    }
}

/// The body of `BLK_Part_Ans` and `BLK_Act_Ans`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerBody {
    /// The partner request or order being answered.
    pub id: RequestId,
    /// Accept or reject.
    pub response: Answer,
}

/// The type of a record-type property, as in Sawtooth Supply Chain's `PropertySchema`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DataType {
    /// A UTF-8 string.
    String,
    /// A JSON number (IEEE 754 double).
    Number,
    /// `true` or `false`.
    Boolean,
    /// One of the schema's `enum_options`.
    Enum,
}

/// One property of a record type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertySchema {
    /// Property name, unique within the type.
    pub name: String,
    /// What values it holds.
    pub data_type: DataType,
    /// Whether `create_record` must give it.
    #[serde(default)]
    pub required: bool,
    /// The allowed values of an `ENUM` property.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enum_options: Vec<String>,
}

/// A property value in `create_record` and `update_properties`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertyValue {
    /// Property name from the record type.
    pub name: String,
    /// The value, matching the property's [`DataType`].
    pub value: Value,
}

/// The body of a `BLK_Rty` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RecordTypeAction {
    /// Define a record type; a second definition of the same name is an
    /// `already_exists` error.
    CreateRecordType {
        /// Type name, e.g. `ProductionUnit`.
        name: String,
        /// Its property schemas.
        properties: Vec<PropertySchema>,
    },
}

/// One indicator value of a day report, a record of type `DayReport` on the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayReportRecord {
    /// `{report id}_{shift}{indicator}`, see [`crate::report`].
    pub record_id: String,
    /// `A`, `B`, `C` or `DAY`.
    pub shift: String,
    /// `availability`, `performance`, `quality`, `oee`, `mtbf`, `mttr`, `production_time`.
    pub indicator: String,
    /// The value (ratios in 0..=1, times in seconds); `null` when it has no inputs.
    pub value: Option<f64>,
}

/// The body of a `BLK_Rec` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RecordAction {
    /// Create a record of a type; the signer or token owner becomes its owner and
    /// first reporter.
    CreateRecord {
        /// The record's id, e.g. a production unit's code.
        record_id: String,
        /// An existing record type.
        record_type: String,
        /// Initial values; every required property must be given.
        properties: Vec<PropertyValue>,
    },
    /// Authorise an agent to update some properties of a record (Sawtooth's reporter
    /// proposal, accepted by the owner in the same step).
    AddReporter {
        /// The record.
        record_id: String,
        /// The agent that may report.
        reporter: AgentKey,
        /// The properties it may update.
        properties: Vec<String>,
    },
    /// Append new values to a record's properties (the chain keeps the history).
    UpdateProperties {
        /// The record.
        record_id: String,
        /// New values.
        properties: Vec<PropertyValue>,
    },
    /// Publish one unit's report for one day: up to 28 `DayReport` records.
    CreateDayReport {
        /// The flow id, `001_{YY}_{weekday}_{week}_{unit}`.
        report_id: String,
        /// The production unit's code.
        unit: String,
        /// The reported day, `YYYY-MM-DD`.
        date: String,
        /// One record per shift and indicator.
        records: Vec<DayReportRecord>,
    },
}

/// The record types the MES defines on the chain (docs/protocol.md §4).
pub mod record_types {
    use super::{DataType, PropertySchema, RecordTypeAction};
    use crate::report::{Indicator, Shift};

    /// Name of the production-unit record type.
    pub const PRODUCTION_UNIT: &str = "ProductionUnit";
    /// Name of the day-report record type.
    pub const DAY_REPORT: &str = "DayReport";

    fn prop(name: &str, data_type: DataType, required: bool) -> PropertySchema {
        PropertySchema {
            name: name.to_owned(),
            data_type,
            required,
            enum_options: Vec::new(),
        }
    }

    /// `ProductionUnit`: `name`, `status`, `process_name`; record id = unit code.
    pub fn production_unit() -> RecordTypeAction {
        RecordTypeAction::CreateRecordType {
            name: PRODUCTION_UNIT.to_owned(),
            properties: vec![
                prop("name", DataType::String, true),
                prop("status", DataType::String, true),
                prop("process_name", DataType::String, false),
            ],
        }
    }

    /// `DayReport`: one indicator value of one shift of one unit's day.
    pub fn day_report() -> RecordTypeAction {
        let mut shift = prop("shift", DataType::Enum, true);
        shift.enum_options = Shift::ALL.iter().map(|s| s.label().to_owned()).collect();
        let mut indicator = prop("indicator", DataType::Enum, true);
        indicator.enum_options = Indicator::ALL.iter().map(|i| i.name().to_owned()).collect();
        RecordTypeAction::CreateRecordType {
            name: DAY_REPORT.to_owned(),
            properties: vec![
                prop("unit", DataType::String, true),
                prop("date", DataType::String, true),
                shift,
                indicator,
                prop("value", DataType::Number, false),
            ],
        }
    }
}

/// Every request the MES sends, one variant per topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `BLK_Part_Lst`.
    ListPartners(Page),
    /// `BLK_Part_Ans`.
    AnswerPartner(AnswerBody),
    /// `BLK_Act_Lst`.
    ListOrders(Page),
    /// `BLK_Act_Ans`.
    AnswerOrder(AnswerBody),
    /// `BLK_Rty`.
    RecordType(RecordTypeAction),
    /// `BLK_Rec`.
    Record(RecordAction),
}

impl Request {
    /// The topic this request is published on.
    pub fn topic(&self) -> Topic {
        match self {
            Request::ListPartners(_) => Topic::PartnerList,
            Request::AnswerPartner(_) => Topic::PartnerAnswer,
            Request::ListOrders(_) => Topic::OrderList,
            Request::AnswerOrder(_) => Topic::OrderAnswer,
            Request::RecordType(_) => Topic::RecordType,
            Request::Record(_) => Topic::Record,
        }
    }

    /// Builds the envelope: `[{"auth", "start", "limit"}]` for lists, `[{"auth"}, body]`
    /// for everything else, with `corr` in the head when given.
    pub fn envelope(&self, auth: &str, corr: Option<&str>) -> Envelope {
        let mut head = Map::new();
        head.insert("auth".into(), Value::String(auth.to_owned()));
        let body = match self {
            Request::ListPartners(page) | Request::ListOrders(page) => {
                head.insert("start".into(), page.start.into());
                head.insert("limit".into(), page.limit.into());
                None
            }
            _ => Some(self.body()),
        };
        if let Some(corr) = corr {
            head.insert("corr".into(), Value::String(corr.to_owned()));
        }
        Envelope { head, body }
    }

    /// The request without its head: the envelope's body, or `{"start", "limit"}` for a
    /// list request. This is what the outbox stores (`chain_outbox.payload`), so a row
    /// holds no token and is turned back into a request with [`Request::from_body`].
    pub fn body(&self) -> Value {
        match self {
            Request::ListPartners(page) | Request::ListOrders(page) => to_value(page),
            Request::AnswerPartner(body) | Request::AnswerOrder(body) => to_value(body),
            Request::RecordType(body) => to_value(body),
            Request::Record(body) => to_value(body),
        }
    }

    /// The request on `topic` whose [`Request::body`] is `body`; a body that does not
    /// fit the topic is a [`DecodeError::Shape`].
    pub fn from_body(topic: Topic, body: Value) -> Result<Request, DecodeError> {
        let shape = |e: serde_json::Error| DecodeError::Shape(format!("body: {e}"));
        Ok(match topic {
            Topic::PartnerList => {
                Request::ListPartners(serde_json::from_value(body).map_err(shape)?)
            }
            Topic::OrderList => Request::ListOrders(serde_json::from_value(body).map_err(shape)?),
            Topic::PartnerAnswer => {
                Request::AnswerPartner(serde_json::from_value(body).map_err(shape)?)
            }
            Topic::OrderAnswer => {
                Request::AnswerOrder(serde_json::from_value(body).map_err(shape)?)
            }
            Topic::RecordType => Request::RecordType(serde_json::from_value(body).map_err(shape)?),
            Topic::Record => Request::Record(serde_json::from_value(body).map_err(shape)?),
        })
    }

    /// Reads a request envelope as the chain's gateway (or our simulator) sees it.
    pub fn decode(topic: Topic, bytes: &[u8]) -> Result<(Head, Request), DecodeError> {
        let value = parse_bytes(bytes, DEFAULT_MAX_REPLY_BYTES)?;
        let (head_map, body) = split_envelope(&value)?;
        let head = Head::from_map(head_map)?;
        let request = match topic {
            Topic::PartnerList | Topic::OrderList => {
                // Paging lives in the head, beside fields a page ignores.
                Request::from_body(topic, Value::Object(head_map.clone())).map_err(|e| match e {
                    DecodeError::Shape(why) => {
                        DecodeError::Shape(why.replacen("body", "list head", 1))
                    }
                    other => other,
                })?
            }
            _ => {
                let body = body
                    .cloned()
                    .ok_or_else(|| DecodeError::Shape("missing body after the head".into()))?;
                Request::from_body(topic, body)?
            }
        };
        Ok((head, request))
    }
}

fn to_value<T: Serialize>(value: &T) -> Value {
    // Our own types serialise to JSON infallibly (no non-string map keys, no NaN
    // floats: `Number::from_f64` already refused those when the value was built).
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn list_envelope_is_the_reference_shape() {
        let env = Request::ListPartners(Page::default()).envelope("T", None);
        assert_eq!(
            env.to_bytes(),
            br#"[{"auth": "T", "start": 0, "limit": 10}]"#.to_vec()
        );
    }

    #[test]
    fn answer_envelope_is_the_reference_shape() {
        let req = Request::AnswerOrder(AnswerBody {
            id: "ee8d17bb75deb39650e4f8fce222ef26".parse().unwrap(),
            response: Answer::Reject,
        });
        assert_eq!(
            String::from_utf8(req.envelope("T", Some("c-1")).to_bytes()).unwrap(),
            r#"[{"auth": "T", "corr": "c-1"}, {"id": "ee8d17bb75deb39650e4f8fce222ef26", "response": 0}]"#
        );
    }

    #[test]
    fn request_round_trip() {
        let req = Request::Record(RecordAction::UpdateProperties {
            record_id: "PT10".into(),
            properties: vec![PropertyValue {
                name: "status".into(),
                value: json!("RUNNING"),
            }],
        });
        let bytes = req.envelope("T", Some("c")).to_bytes();
        let (head, back) = Request::decode(Topic::Record, &bytes).unwrap();
        assert_eq!(back, req);
        assert_eq!(head.corr.as_deref(), Some("c"));
        assert_eq!(head.idem, None);
        let env = req.envelope("T", Some("c")).with_idem("unit:PT10:1");
        let text = String::from_utf8(env.to_bytes()).unwrap();
        assert!(
            text.starts_with(r#"[{"auth": "T", "corr": "c", "idem": "unit:PT10:1"}"#),
            "{text}"
        );
        let (head, _) = Request::decode(Topic::Record, text.as_bytes()).unwrap();
        assert_eq!(head.idem.as_deref(), Some("unit:PT10:1"));
        let list = Request::ListOrders(Page {
            start: 20,
            limit: 5,
        });
        let (_, back) =
            Request::decode(Topic::OrderList, &list.envelope("T", None).to_bytes()).unwrap();
        assert_eq!(back, list);
    }

    #[test]
    fn bodies_round_trip_on_every_topic() {
        let requests = [
            Request::ListPartners(Page { start: 3, limit: 7 }),
            Request::ListOrders(Page::default()),
            Request::AnswerPartner(AnswerBody {
                id: "9df8888dea6df991f86e0e61b2379e46".parse().unwrap(),
                response: Answer::Accept,
            }),
            Request::AnswerOrder(AnswerBody {
                id: "ee8d17bb75deb39650e4f8fce222ef26".parse().unwrap(),
                response: Answer::Reject,
            }),
            Request::RecordType(record_types::production_unit()),
            Request::Record(RecordAction::UpdateProperties {
                record_id: "PT10".into(),
                properties: vec![PropertyValue {
                    name: "status".into(),
                    value: json!("STOPPED"),
                }],
            }),
        ];
        for request in requests {
            let topic = request.topic();
            let stored = request.body().to_string();
            let back = Request::from_body(topic, serde_json::from_str(&stored).unwrap());
            assert_eq!(back.as_ref(), Ok(&request), "{}", topic.name());
            // The envelope's body is the same value.
            if let Some(body) = request.envelope("T", None).body {
                assert_eq!(body, request.body());
            }
        }
        assert_eq!(
            Request::RecordType(record_types::day_report()).body()["action"],
            "create_record_type"
        );
    }

    #[test]
    fn a_body_that_does_not_fit_its_topic_is_a_shape_error() {
        let update = json!({"action": "update_properties", "record_id": "PT10",
                            "properties": []});
        for (topic, body) in [
            (Topic::RecordType, update.clone()),
            (Topic::Record, json!({"action": "drop_table"})),
            (Topic::Record, json!("not an object")),
            (Topic::PartnerAnswer, json!({"id": "a/b", "response": 1})),
            (Topic::OrderList, json!({"start": -1, "limit": 10})),
        ] {
            let e = Request::from_body(topic, body).unwrap_err();
            assert!(
                matches!(&e, DecodeError::Shape(why) if why.starts_with("body: ")),
                "{}: {e:?}",
                topic.name()
            );
        }
        assert!(Request::from_body(Topic::Record, update).is_ok());
        // A list request's paging errors name the head, where paging travels.
        let e = Request::decode(Topic::PartnerList, br#"[{"auth": "T", "start": 0}]"#);
        assert!(
            matches!(&e, Err(DecodeError::Shape(why)) if why.starts_with("list head: ")),
            "{e:?}"
        );
    }

    #[test]
    fn record_types_follow_the_protocol() {
        let v = serde_json::to_value(record_types::day_report()).unwrap();
        assert_eq!(v["action"], "create_record_type");
        assert_eq!(v["name"], "DayReport");
        assert_eq!(
            v["properties"][2]["enum_options"],
            json!(["A", "B", "C", "DAY"])
        );
        let v = serde_json::to_value(record_types::production_unit()).unwrap();
        assert_eq!(
            v["properties"][1],
            json!({"name": "status", "data_type": "STRING", "required": true})
        );
    }

    #[test]
    fn topics_have_their_names() {
        for t in Topic::ALL {
            assert_eq!(Topic::from_name(t.name()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.name()));
        }
        assert_eq!(Topic::from_name("BLK_Res"), None);
    }
}
