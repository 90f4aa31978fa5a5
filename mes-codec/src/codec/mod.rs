//! The wire codec: request envelopes to bytes, reply bytes to typed values.
//!
//! No I/O happens here. Every envelope is a JSON list whose first element is the *head*
//! (`auth`, and our extensions `corr`, `signer`, `sig`) and whose optional second element
//! is the *body*. `docs/protocol.md` is the specification; this module follows it.
//!
//! Requests are written the way the original wrote them, with Python's `json.dumps`
//! defaults (`", "` and `": "` separators, non-ASCII escaped), so a gateway that was
//! written against the original sees the same bytes. Replies are read from strict JSON,
//! from a Python literal (what the original gateway sent), or from either of those
//! wrapped in a JSON string; anything else is a typed [`DecodeError`].

use std::io;

use serde::{Deserialize, Serialize};
use serde_json::ser::{CharEscape, Formatter};
use serde_json::{Map, Value};

use crate::domain::{AgentKey, Answer, OrderRequest, PartnerRequest, RequestId};
use crate::pylit::{self, SyntaxError};

/// The shared topic on which the chain's gateway answers every request.
pub const REPLY_TOPIC: &str = "BLK_Res";

/// Largest reply accepted by [`decode_reply`]: a list of 100 orders is about 200 KiB,
/// so this leaves room while keeping a hostile record from costing much memory.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

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

/// A request or reply envelope: `[head]` or `[head, body]`.
///
/// Signing and verifying work on this value, so they see exactly what travels.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Envelope {
    /// The head object: `auth`, the extensions `corr`, `signer`, `sig`, and the
    /// `start`/`limit` of list requests.
    pub head: Map<String, Value>,
    /// The body; list requests have none.
    pub body: Option<Value>,
}

impl Envelope {
    /// Reads a value that has the envelope's shape (a list of one or two items whose
    /// first item is an object); anything else is a [`DecodeError::Shape`].
    pub fn from_value(value: &Value) -> Result<Envelope, DecodeError> {
        let (head, body) = split_envelope(value)?;
        Ok(Envelope {
            head: head.clone(),
            body: body.cloned(),
        })
    }

    /// Adds the idempotency key (docs/protocol.md §2, extension `idem`): a gateway
    /// that already applied a request with this key answers it again unchanged.
    /// Call before signing.
    pub fn with_idem(mut self, key: &str) -> Envelope {
        self.head
            .insert("idem".into(), Value::String(key.to_owned()));
        self
    }

    /// The envelope as one JSON value.
    pub fn to_value(&self) -> Value {
        let mut items = vec![Value::Object(self.head.clone())];
        items.extend(self.body.clone());
        Value::Array(items)
    }

    /// The bytes to publish, as Python's `json.dumps` writes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_python_json(self)
    }
}

impl Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(1 + usize::from(self.body.is_some())))?;
        seq.serialize_element(&self.head)?;
        if let Some(body) = &self.body {
            seq.serialize_element(body)?;
        }
        seq.end()
    }
}

/// Writes a JSON value the way Python's `json.dumps` does with default arguments:
/// `", "` and `": "` separators and `ensure_ascii` (every character outside
/// printable ASCII escaped as `\uXXXX`). Integers and strings come out byte for byte
/// as Python writes them; floats use Rust's shortest round-trip form.
pub fn to_python_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Writing into a Vec cannot fail and Value has no unserialisable parts.
    if value.serialize(&mut ser).is_err() {
        out.clear();
    }
    out
}

struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() && c != '\x7f' {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        let s: &[u8] = match escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"\\/",
            CharEscape::Backspace => b"\\b",
            CharEscape::FormFeed => b"\\f",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(byte) => return write!(w, "\\u{byte:04x}"),
        };
        w.write_all(s)
    }
}

/// The head of an envelope, typed: what ties a reply to a request and proves who
/// sent it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Head {
    /// The master token; the only field the original gateway echoes.
    pub auth: String,
    /// Our correlation id, echoed by gateways that support it.
    pub corr: Option<String>,
    /// Idempotency key of `BLK_Rty`/`BLK_Rec` requests.
    pub idem: Option<String>,
    /// In a signed reply: the SHA-256 (hex) of the canonical bytes of the request it
    /// answers ([`crate::signing::request_digest`]), so that a signed reply cannot be
    /// replayed as the answer to another request (docs/protocol.md §5).
    pub req: Option<String>,
    /// Hex compressed public key of the signer, when signed.
    pub signer: Option<String>,
    /// Hex compact signature, when signed.
    pub sig: Option<String>,
}

impl Head {
    fn from_map(head: &Map<String, Value>) -> Result<Head, DecodeError> {
        let text = |key: &str| -> Result<Option<String>, DecodeError> {
            match head.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(DecodeError::Shape(format!(
                    "head field {key:?} must be a string, got {}",
                    kind_of(other)
                ))),
            }
        };
        let auth =
            text("auth")?.ok_or_else(|| DecodeError::Shape("head has no \"auth\" field".into()))?;
        Ok(Head {
            auth,
            corr: text("corr")?,
            idem: text("idem")?,
            req: text("req")?,
            signer: text("signer")?,
            sig: text("sig")?,
        })
    }
}

/// What a reply says, beside its head.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyBody {
    /// A list answer (`{"data": [...]}`); an empty list is a valid answer.
    Data(Vec<Value>),
    /// A success answer (`{"message": ...}`), usually text.
    Message(Value),
    /// A failure (`{"error": ...}`), usually text, with our optional machine `code`.
    Error {
        /// What the chain said.
        error: Value,
        /// Our extension, e.g. `already_exists`; `None` from legacy gateways.
        code: Option<String>,
    },
}

impl ReplyBody {
    /// Whether this is an `already_exists` error (docs/protocol.md §6): by its `code`,
    /// or, from a legacy gateway, by the words "already exists" in the text. The MES
    /// counts it as success when creating record types, records, reporters, reports.
    pub fn is_already_exists(&self) -> bool {
        match self {
            ReplyBody::Error {
                code: Some(code), ..
            } => code == "already_exists",
            ReplyBody::Error { error, code: None } => error
                .as_str()
                .is_some_and(|e| e.to_ascii_lowercase().contains("already exists")),
            _ => false,
        }
    }

    /// The same body with `secret` (the master token) cut out of its `message` or
    /// `error` ([`crate::redact`]); `data` lists are the chain's records and stay as
    /// they are.
    pub fn redact(&mut self, secret: &str) {
        match self {
            ReplyBody::Message(v) => crate::redact::redact_value(v, secret),
            ReplyBody::Error { error, code } => {
                crate::redact::redact_value(error, secret);
                if let Some(code) = code {
                    *code = crate::redact::redact(code, secret);
                }
            }
            ReplyBody::Data(_) => {}
        }
    }

    /// The message or error as text (JSON for non-text values), for operators.
    pub fn text(&self) -> String {
        let value = match self {
            ReplyBody::Message(v) | ReplyBody::Error { error: v, .. } => v,
            ReplyBody::Data(items) => return format!("{} items", items.len()),
        };
        match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// A decoded reply from `BLK_Res`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Who it is for (token) and which request it answers (`corr`), if echoed.
    pub head: Head,
    /// The answer.
    pub body: ReplyBody,
    envelope: Envelope,
}

impl Reply {
    /// Builds a reply as a gateway writes it; used by the simulator and tests.
    pub fn new(auth: &str, corr: Option<&str>, body: ReplyBody) -> Reply {
        let mut head = Map::new();
        head.insert("auth".into(), Value::String(auth.to_owned()));
        if let Some(corr) = corr {
            head.insert("corr".into(), Value::String(corr.to_owned()));
        }
        let mut b = Map::new();
        match &body {
            ReplyBody::Data(items) => {
                b.insert("data".into(), Value::Array(items.clone()));
            }
            ReplyBody::Message(m) => {
                b.insert("message".into(), m.clone());
            }
            ReplyBody::Error { error, code } => {
                b.insert("error".into(), error.clone());
                if let Some(code) = code {
                    b.insert("code".into(), Value::String(code.clone()));
                }
            }
        }
        Reply {
            head: Head {
                auth: auth.to_owned(),
                corr: corr.map(str::to_owned),
                idem: None,
                req: None,
                signer: None,
                sig: None,
            },
            body,
            envelope: Envelope {
                head,
                body: Some(Value::Object(b)),
            },
        }
    }

    /// The envelope as received, for signature checks.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The envelope, for signing a reply before it is sent (simulator).
    pub fn envelope_mut(&mut self) -> &mut Envelope {
        &mut self.envelope
    }

    /// The reply as strict JSON bytes.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        self.envelope.to_bytes()
    }

    /// The reply as a Python literal, as the original gateway wrote it.
    pub fn to_python_literal(&self) -> String {
        pylit::to_string(&self.envelope.to_value())
    }

    /// The `data` of a partner list, typed; the first bad item is reported by index.
    pub fn partners(&self) -> Result<Vec<PartnerRequest>, DecodeError> {
        self.typed_data()
    }

    /// The `data` of an order list, typed; the first bad item is reported by index.
    pub fn orders(&self) -> Result<Vec<OrderRequest>, DecodeError> {
        self.typed_data()
    }

    fn typed_data<T: serde::de::DeserializeOwned>(&self) -> Result<Vec<T>, DecodeError> {
        let ReplyBody::Data(items) = &self.body else {
            return Err(DecodeError::Shape("reply carries no data list".into()));
        };
        items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                T::deserialize(item).map_err(|e| DecodeError::Item {
                    index,
                    message: e.to_string(),
                })
            })
            .collect()
    }
}

/// Why bytes from `BLK_Res` (or a request topic) could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Larger than the configured limit; not parsed at all.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size received.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not UTF-8 text.
    #[error("message is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// Neither strict JSON nor a Python literal.
    #[error("message is neither JSON nor a Python literal: {0}")]
    Syntax(#[from] SyntaxError),
    /// Well-formed, but not an envelope as docs/protocol.md defines it.
    #[error("unexpected message shape: {0}")]
    Shape(String),
    /// One item of a `data` list does not have the documented fields.
    #[error("item {index} of the data list: {message}")]
    Item {
        /// Position in the list.
        index: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// Decodes a reply with the default size limit.
pub fn decode_reply(bytes: &[u8]) -> Result<Reply, DecodeError> {
    decode_reply_with_limit(bytes, DEFAULT_MAX_REPLY_BYTES)
}

/// Decodes a reply: strict JSON, a Python literal, or either one wrapped in a JSON
/// string (the original gateway's `json.dumps(str(reply))`).
///
/// The body's keys are read as the documented precedence: `error` (if not null) over
/// `data` over `message`; a body with none of them is a [`DecodeError::Shape`].
pub fn decode_reply_with_limit(bytes: &[u8], max_bytes: usize) -> Result<Reply, DecodeError> {
    let value = parse_bytes(bytes, max_bytes)?;
    let (head_map, body) = split_envelope(&value)?;
    let head = Head::from_map(head_map)?;
    let Some(Value::Object(body_map)) = body else {
        return Err(DecodeError::Shape(match body {
            None => "reply has no body after the head".into(),
            Some(other) => format!("reply body must be an object, got {}", kind_of(other)),
        }));
    };
    let present = |key: &str| body_map.get(key).filter(|v| !v.is_null());
    let body = if let Some(error) = present("error") {
        let code = match body_map.get("code") {
            Some(Value::String(c)) => Some(c.clone()),
            _ => None,
        };
        ReplyBody::Error {
            error: error.clone(),
            code,
        }
    } else if let Some(data) = present("data") {
        match data {
            Value::Array(items) => ReplyBody::Data(items.clone()),
            other => {
                return Err(DecodeError::Shape(format!(
                    "\"data\" must be a list, got {}",
                    kind_of(other)
                )));
            }
        }
    } else if let Some(message) = present("message") {
        ReplyBody::Message(message.clone())
    } else {
        return Err(DecodeError::Shape(
            "reply body has none of \"data\", \"message\", \"error\"".into(),
        ));
    };
    let envelope = Envelope {
        head: head_map.clone(),
        body: Some(Value::Object(body_map.clone())),
    };
    Ok(Reply {
        head,
        body,
        envelope,
    })
}

/// Bytes to a JSON value: size check, UTF-8 check, JSON first (fast path), then the
/// Python-literal parser; a top-level string is unwrapped once.
fn parse_bytes(bytes: &[u8], max_bytes: usize) -> Result<Value, DecodeError> {
    if bytes.len() > max_bytes {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let value = parse_text(text)?;
    match value {
        Value::String(inner) => parse_text(&inner),
        other => Ok(other),
    }
}

fn parse_text(text: &str) -> Result<Value, DecodeError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        Err(_) => pylit::parse(text).map_err(DecodeError::Syntax),
    }
}

fn split_envelope(value: &Value) -> Result<(&Map<String, Value>, Option<&Value>), DecodeError> {
    let Value::Array(items) = value else {
        return Err(DecodeError::Shape(format!(
            "expected a list [head, body], got {}",
            kind_of(value)
        )));
    };
    match items.as_slice() {
        [Value::Object(head)] => Ok((head, None)),
        [Value::Object(head), body] => Ok((head, Some(body))),
        [] => Err(DecodeError::Shape("empty list".into())),
        [first, ..] if !first.is_object() => Err(DecodeError::Shape(format!(
            "the head must be an object, got {}",
            kind_of(first)
        ))),
        more => Err(DecodeError::Shape(format!(
            "expected a list of one or two items, got {}",
            more.len()
        ))),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
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
    fn python_json_escapes_like_json_dumps() {
        let v = json!(["ação", "😀", "a\"b\\c\n\u{1}\u{7f}/"]);
        assert_eq!(
            String::from_utf8(to_python_json(&v)).unwrap(),
            r#"["a\u00e7\u00e3o", "\ud83d\ude00", "a\"b\\c\n\u0001\u007f/"]"#
        );
    }

    #[test]
    fn reply_body_precedence() {
        let r = decode_reply(br#"[{"auth": "T"}, {"data": [], "error": "boom"}]"#).unwrap();
        assert!(matches!(r.body, ReplyBody::Error { .. }));
        let r = decode_reply(br#"[{"auth": "T"}, {"data": [], "error": null}]"#).unwrap();
        assert_eq!(r.body, ReplyBody::Data(vec![]));
        let r =
            decode_reply(br#"[{"auth": "T"}, {"error": "x", "code": "already_exists"}]"#).unwrap();
        assert_eq!(
            r.body,
            ReplyBody::Error {
                error: json!("x"),
                code: Some("already_exists".into())
            }
        );
    }

    #[test]
    fn shapes_are_typed_errors() {
        for bad in [
            &b"{}"[..],
            b"[]",
            b"[1, 2]",
            b"[{\"auth\": \"T\"}]",
            b"[{\"auth\": 5}, {\"data\": []}]",
            b"[{}, {\"data\": []}]",
            b"[{\"auth\": \"T\"}, {\"data\": {}}]",
            b"[{\"auth\": \"T\"}, {\"nothing\": 1}]",
            b"[{\"auth\": \"T\"}, {\"data\": []}, 3]",
            b"[{\"auth\": \"T\"}, []]",
        ] {
            let e = decode_reply(bad).unwrap_err();
            assert!(matches!(e, DecodeError::Shape(_)), "{e:?}");
        }
        assert!(matches!(
            decode_reply(b"\xff\xfe"),
            Err(DecodeError::NotUtf8 { offset: 0 })
        ));
        assert!(matches!(decode_reply(b""), Err(DecodeError::Syntax(_))));
        assert!(matches!(
            decode_reply_with_limit(b"[1]", 2),
            Err(DecodeError::TooLarge { size: 3, limit: 2 })
        ));
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
    fn already_exists_by_code_or_legacy_text() {
        let err = |error: &str, code: Option<&str>| ReplyBody::Error {
            error: json!(error),
            code: code.map(str::to_owned),
        };
        assert!(err("whatever", Some("already_exists")).is_already_exists());
        assert!(err("Record type ProductionUnit Already Exists", None).is_already_exists());
        assert!(
            !err(
                "Record type ProductionUnit already exists",
                Some("invalid_property")
            )
            .is_already_exists()
        );
        assert!(!err("not open", None).is_already_exists());
        assert!(!ReplyBody::Message(json!("already exists")).is_already_exists());
        assert_eq!(err("boom", None).text(), "boom");
        assert_eq!(ReplyBody::Message(json!({"a": 1})).text(), r#"{"a":1}"#);
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
