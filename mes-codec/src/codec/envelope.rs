//! The `[head, body]` list that requests and replies share: its value, its head, the
//! bytes it is written as (Python's `json.dumps`) and read from (JSON or a Python
//! literal, maybe wrapped in a JSON string).

use std::io;

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};
use serde_json::{Map, Value};

use super::{DecodeError, kind_of};
use crate::pylit;

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
    pub(super) fn from_map(head: &Map<String, Value>) -> Result<Head, DecodeError> {
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

/// Bytes to a JSON value: size check, UTF-8 check, JSON first (fast path), then the
/// Python-literal parser; a top-level string is unwrapped once.
pub(super) fn parse_bytes(bytes: &[u8], max_bytes: usize) -> Result<Value, DecodeError> {
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

pub(super) fn split_envelope(
    value: &Value,
) -> Result<(&Map<String, Value>, Option<&Value>), DecodeError> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn python_json_escapes_like_json_dumps() {
        let v = json!(["ação", "😀", "a\"b\\c\n\u{1}\u{7f}/"]);
        assert_eq!(
            String::from_utf8(to_python_json(&v)).unwrap(),
            r#"["a\u00e7\u00e3o", "\ud83d\ude00", "a\"b\\c\n\u0001\u007f/"]"#
        );
    }
}
