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
//!
//! Split by responsibility, every item re-exported here: `request` holds what the MES
//! sends (topics, bodies, [`Request`]); `envelope` the `[head, body]` list both
//! directions share ([`Envelope`], [`Head`], the `json.dumps` writer, the reader of
//! bytes); `reply` what the chain answers ([`Reply`], [`decode_reply`]).

use serde_json::Value;

use crate::pylit::SyntaxError;

mod envelope;
mod reply;
mod request;

pub use envelope::{Envelope, Head, to_python_json};
pub use reply::{Reply, ReplyBody, decode_reply, decode_reply_with_limit};
pub use request::{
    AnswerBody, DataType, DayReportRecord, Page, PropertySchema, PropertyValue, RecordAction,
    RecordTypeAction, Request, Topic, record_types,
};

/// The shared topic on which the chain's gateway answers every request.
pub const REPLY_TOPIC: &str = "BLK_Res";

/// Largest reply accepted by [`decode_reply`]: a list of 100 orders is about 200 KiB,
/// so this leaves room while keeping a hostile record from costing much memory.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

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

/// What a value is, for the messages of [`DecodeError::Shape`].
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
