//! Typed values for what travels between the MES and the chain.
//!
//! Identifiers are validated once, when they enter the program (an HTTP parameter, a
//! chain reply), so the rest of the code never handles a malformed one. Hex values
//! (keys, transaction ids) are accepted in either case and kept in lower case, the
//! chain's own spelling. Request ids are kept exactly as the chain spells them: the
//! reference documents the answer's `ID` as a public key while its examples are 32 hex
//! digits, so any short, URL-safe token is accepted and never case-folded.
//!
//! Partner and order requests carry every field of the reference's examples as typed
//! fields, and keep any field the chain adds later in `extra`, in order, so nothing an
//! ERP sent is dropped on the way to an operator.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A value from the wire or from a user was malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct InvalidValue {
    /// What was being parsed, e.g. `request id`.
    pub what: &'static str,
    /// Why it was rejected; never echoes more than a short preview of the input.
    pub reason: String,
}

impl InvalidValue {
    fn new(what: &'static str, reason: impl Into<String>) -> Self {
        Self {
            what,
            reason: reason.into(),
        }
    }
}

fn check_hex(what: &'static str, s: &str, len: usize) -> Result<String, InvalidValue> {
    if s.len() != len {
        return Err(InvalidValue::new(
            what,
            format!("expected {len} hex characters, got {}", s.chars().count()),
        ));
    }
    if let Some(bad) = s.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(InvalidValue::new(
            what,
            format!("{bad:?} is not a hex digit"),
        ));
    }
    Ok(s.to_ascii_lowercase())
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $len:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Number of hex characters in a valid value.
            pub const LEN: usize = $len;

            /// The value in lower-case hex.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::try_from(s.to_owned())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::try_from(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(
    /// A transaction id on the chain: a 64-byte signature, 128 hex characters.
    TxId,
    "transaction id",
    128
);

hex_id!(
    /// An agent on the chain (an ERP, an MES): a compressed secp256k1 public key,
    /// 66 hex characters that decode to a point on the curve.
    AgentKey,
    "agent key",
    66
);

/// The chain's id of a partner request or an order (`partner_request_id`,
/// `abs_action_id`, the `ID` an operator answers).
///
/// The rule is [`RequestId::RULE`]: wide enough for the 32-hex ids of the reference's
/// examples and for a public key, narrow enough that an id is safe as one URL path
/// segment or query value and in a log line. The spelling is kept exactly: two ids that
/// differ only in case are two ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(String);

impl RequestId {
    /// Most characters in a valid id.
    pub const MAX_LEN: usize = 128;

    /// The rule, as error messages and API docs state it.
    pub const RULE: &'static str =
        "1 to 128 characters, each a letter (A-Z, a-z), a digit, '_' or '-'";

    /// The id as the chain spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `c` may appear in a request id.
    pub fn is_id_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_' || c == '-'
    }
}

impl TryFrom<String> for RequestId {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let what = "request id";
        if s.is_empty() {
            return Err(InvalidValue::new(
                what,
                format!("empty; expected {}", Self::RULE),
            ));
        }
        let len = s.chars().count();
        if len > Self::MAX_LEN {
            return Err(InvalidValue::new(
                what,
                format!("{len} characters; expected {}", Self::RULE),
            ));
        }
        if let Some(bad) = s.chars().find(|c| !Self::is_id_char(*c)) {
            return Err(InvalidValue::new(
                what,
                format!("{bad:?} is not allowed; expected {}", Self::RULE),
            ));
        }
        Ok(Self(s))
    }
}

impl FromStr for RequestId {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from(s.to_owned())
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RequestId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<RequestId> for String {
    fn from(v: RequestId) -> String {
        v.0
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::try_from(s).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<String> for TxId {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        check_hex("transaction id", &s, Self::LEN).map(Self)
    }
}

impl TryFrom<String> for AgentKey {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let hex = check_hex("agent key", &s, Self::LEN)?;
        let key = Self(hex);
        key.public_key()?;
        Ok(key)
    }
}

impl AgentKey {
    /// The key as a curve point, for verifying what this agent signed.
    pub fn public_key(&self) -> Result<secp256k1::PublicKey, InvalidValue> {
        let mut bytes = [0u8; 33];
        hex::decode_to_slice(&self.0, &mut bytes)
            .map_err(|e| InvalidValue::new("agent key", e.to_string()))?;
        secp256k1::PublicKey::from_byte_array_compressed(bytes)
            .map_err(|_| InvalidValue::new("agent key", "not a compressed secp256k1 point"))
    }
}

impl From<secp256k1::PublicKey> for AgentKey {
    fn from(key: secp256k1::PublicKey) -> Self {
        Self(hex::encode(key.serialize()))
    }
}

/// The state of a partner or order request on the chain.
///
/// Statuses this version does not know are kept as written, so a newer chain does not
/// make the whole list undecodable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Status {
    /// Waiting for the MES's answer; the only state an answer is accepted in.
    Open,
    /// The MES accepted it.
    Accepted,
    /// The MES rejected it.
    Rejected,
    /// A status this version does not know, kept verbatim.
    Other(String),
}

impl Status {
    /// The status as the chain spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Open => "OPEN",
            Self::Accepted => "ACCEPTED",
            Self::Rejected => "REJECTED",
            Self::Other(s) => s,
        }
    }
}

impl From<&str> for Status {
    fn from(s: &str) -> Self {
        match s {
            "OPEN" => Self::Open,
            "ACCEPTED" => Self::Accepted,
            "REJECTED" => Self::Rejected,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self::from(s.as_str()))
    }
}

/// An operator's answer to a request; on the wire `1` accepts and `0` rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answer {
    /// `0`.
    Reject,
    /// `1`.
    Accept,
}

impl Answer {
    /// The number the chain expects.
    pub fn code(self) -> u8 {
        match self {
            Self::Reject => 0,
            Self::Accept => 1,
        }
    }

    /// The answer for a wire code; anything but 0 and 1 is an error.
    pub fn from_code(code: i64) -> Result<Self, InvalidValue> {
        match code {
            0 => Ok(Self::Reject),
            1 => Ok(Self::Accept),
            other => Err(InvalidValue::new(
                "answer",
                format!("expected 0 (reject) or 1 (accept), got {other}"),
            )),
        }
    }
}

/// Parses `0`/`1` (the original's `Response` parameter) and `reject`/`accept`.
impl FromStr for Answer {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "1" | "accept" => Ok(Self::Accept),
            "0" | "reject" => Ok(Self::Reject),
            other => Err(InvalidValue::new(
                "answer",
                format!(
                    "expected 0, 1, \"reject\" or \"accept\", got {:?}",
                    other.chars().take(20).collect::<String>()
                ),
            )),
        }
    }
}

impl Serialize for Answer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for Answer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = i64::deserialize(d)?;
        Self::from_code(code).map_err(serde::de::Error::custom)
    }
}

/// A partner request from an ERP, as the chain lists it on `BLK_Part_Lst`.
///
/// Field order follows the reference's example so re-encoding reproduces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartnerRequest {
    /// When the MES answered (seconds since the epoch); 0 while open.
    pub answer_timestamp: i64,
    /// The ERP asking to become a partner.
    pub issuing_agent: AgentKey,
    /// The id an operator answers with.
    pub partner_request_id: RequestId,
    /// This MES.
    pub receiving_agent: AgentKey,
    /// Open, accepted or rejected.
    pub status: Status,
    /// When the ERP sent it (seconds since the epoch).
    pub timestamp: i64,
    /// The chain transactions that created and answered it, oldest first.
    pub transaction_ids: Vec<TxId>,
    /// Fields this version does not know, kept in their original order.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An order request from a partner ERP, as the chain lists it on `BLK_Act_Lst`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRequest {
    /// The order's id on the chain, the `ID` an operator answers with.
    pub abs_action_id: RequestId,
    /// When the MES answered (seconds since the epoch); 0 while open.
    pub answer_timestamp: i64,
    /// Free text from the ERP.
    pub description: String,
    /// Attachments, passed through as the chain sends them.
    pub files: Vec<Value>,
    /// The ERP placing the order.
    pub issuing_agent: AgentKey,
    /// What to produce: free-form, ERP-defined.
    pub metadata: Value,
    /// This MES.
    pub receiving_agent: AgentKey,
    /// Open, accepted or rejected.
    pub status: Status,
    /// When the ERP sent it (seconds since the epoch).
    pub timestamp: i64,
    /// The chain transactions that created and answered it, oldest first.
    pub transaction_ids: Vec<TxId>,
    /// The kind of order, ERP-defined (e.g. `dummy_action`).
    #[serde(rename = "type")]
    pub order_type: String,
    /// Fields this version does not know, kept in their original order.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const AGENT: &str = "025e451e2caf44821d0fb262c1cfd2e8c02fb37c989adf548aede227283126d5cb";

    #[test]
    fn request_id_keeps_the_chains_spelling() {
        let id: RequestId = "9DF8888DEA6DF991F86E0E61B2379E46".parse().unwrap();
        assert_eq!(id.as_str(), "9DF8888DEA6DF991F86E0E61B2379E46");
        let id: RequestId = "ABC_def-123".parse().unwrap();
        assert_eq!(id.to_string(), "ABC_def-123");
        assert_ne!(id, "abc_def-123".parse::<RequestId>().unwrap());
        assert!(AGENT.parse::<RequestId>().is_ok(), "a public key is an id");
        assert!("a".repeat(128).parse::<RequestId>().is_ok());
        for bad in [
            "",
            "a/b",
            "a.b",
            "..",
            "a?b",
            "a#b",
            "a b",
            " ab",
            "a%2Fb",
            "../reports/daily/run?x=1#",
        ] {
            let e = bad.parse::<RequestId>().unwrap_err();
            assert_eq!(e.what, "request id");
            assert!(e.reason.contains("1 to 128 characters"), "{e}");
        }
        let e = "a".repeat(129).parse::<RequestId>().unwrap_err();
        assert!(e.reason.starts_with("129 characters"), "{e}");
        let e = "é".repeat(32).parse::<RequestId>().unwrap_err();
        assert!(e.reason.contains("'é'"), "{e}");
        let e = serde_json::from_str::<RequestId>("\"a/b\"").unwrap_err();
        assert!(e.to_string().contains("request id"), "{e}");
    }

    mod request_id_rule {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn valid_ids_round_trip(s in "[0-9A-Za-z_-]{1,128}") {
                let id: RequestId = s.parse().unwrap();
                prop_assert_eq!(id.as_str(), s.as_str());
                let json = serde_json::to_string(&id).unwrap();
                prop_assert_eq!(serde_json::from_str::<RequestId>(&json).unwrap(), id);
            }

            #[test]
            fn ids_with_another_character_are_refused(
                head in "[0-9A-Za-z_-]{0,60}",
                bad in any::<char>().prop_filter("not an id character", |c| !RequestId::is_id_char(*c)),
                tail in "[0-9A-Za-z_-]{0,60}",
            ) {
                let s = format!("{head}{bad}{tail}");
                prop_assert!(s.parse::<RequestId>().is_err());
                prop_assert!(serde_json::from_value::<RequestId>(serde_json::Value::String(s)).is_err());
            }

            #[test]
            fn ids_longer_than_128_are_refused(s in "[0-9A-Za-z_-]{129,300}") {
                prop_assert!(s.parse::<RequestId>().is_err());
            }
        }
    }

    #[test]
    fn agent_key_must_be_a_curve_point() {
        let key: AgentKey = AGENT.parse().unwrap();
        assert!(key.public_key().is_ok());
        // Right length and hex, but 0x04 is not a compressed prefix.
        let bad = format!("04{}", &AGENT[2..]);
        let e = bad.parse::<AgentKey>().unwrap_err();
        assert!(e.reason.contains("point"), "{e}");
        // x coordinate with no point on the curve.
        let off_curve = format!("02{}", "0".repeat(63) + "5");
        assert!(off_curve.parse::<AgentKey>().is_err());
    }

    #[test]
    fn tx_id_is_128_hex() {
        assert!("a".repeat(128).parse::<TxId>().is_ok());
        assert!("a".repeat(127).parse::<TxId>().is_err());
    }

    #[test]
    fn status_keeps_unknown_values() {
        let s: Status = serde_json::from_str("\"CANCELLED\"").unwrap();
        assert_eq!(s, Status::Other("CANCELLED".into()));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"CANCELLED\"");
        assert_eq!(Status::from("OPEN"), Status::Open);
    }

    #[test]
    fn answer_codes() {
        assert_eq!(serde_json::to_string(&Answer::Accept).unwrap(), "1");
        assert_eq!(serde_json::from_str::<Answer>("0").unwrap(), Answer::Reject);
        assert!(serde_json::from_str::<Answer>("2").is_err());
        assert_eq!("accept".parse::<Answer>().unwrap(), Answer::Accept);
        assert!("yes".parse::<Answer>().is_err());
    }
}
