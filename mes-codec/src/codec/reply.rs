//! What the chain answers on `BLK_Res`: [`Reply`] and its [`ReplyBody`], decoded by
//! [`decode_reply`] from JSON or from a Python literal.

use serde_json::{Map, Value};

use super::envelope::{Head, parse_bytes, split_envelope};
use super::{DEFAULT_MAX_REPLY_BYTES, DecodeError, Envelope, kind_of};
use crate::domain::{OrderRequest, PartnerRequest};
use crate::pylit;

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

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
}
