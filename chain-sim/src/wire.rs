//! Reading what `mes_core::codec` does not read for the simulator: envelopes of the
//! simulator-only ERP topics, the head of a request that failed to decode (to answer
//! it with `bad_request`), and the envelope behind a signed request.

use mes_core::codec::{DEFAULT_MAX_REPLY_BYTES, Envelope, Head, Reply};
use serde_json::Value;

/// Parses request bytes the way the codec reads replies: strict JSON, else a Python
/// literal, a top-level JSON string unwrapped once; never panics.
pub(crate) fn parse_value(bytes: &[u8]) -> Result<Value, String> {
    if bytes.len() > DEFAULT_MAX_REPLY_BYTES {
        return Err(format!(
            "message of {} bytes exceeds the limit of {DEFAULT_MAX_REPLY_BYTES} bytes",
            bytes.len()
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let value = parse_text(text)?;
    match value {
        Value::String(inner) => parse_text(&inner),
        other => Ok(other),
    }
}

fn parse_text(text: &str) -> Result<Value, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        Err(_) => mes_core::pylit::parse(text).map_err(|e| e.to_string()),
    }
}

/// The envelope of request bytes, for signature checks and the ERP topics.
pub(crate) fn parse_envelope(bytes: &[u8]) -> Result<Envelope, String> {
    let value = parse_value(bytes)?;
    Envelope::from_value(&value).map_err(|e| e.to_string())
}

/// The typed head of an envelope; `auth` is required, the other fields must be text
/// when present.
pub(crate) fn head_of(envelope: &Envelope) -> Result<Head, String> {
    let text = |key: &str| -> Result<Option<String>, String> {
        match envelope.head.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("head field {key:?} must be a string")),
        }
    };
    Ok(Head {
        auth: text("auth")?.ok_or("head has no \"auth\" field")?,
        corr: text("corr")?,
        idem: text("idem")?,
        req: text("req")?,
        signer: text("signer")?,
        sig: text("sig")?,
    })
}

/// The `auth` and `corr` of a request that did not decode, if they can be read at all:
/// enough to tell its sender what was wrong.
pub(crate) fn sniff(bytes: &[u8]) -> Option<(String, Option<String>)> {
    let value = parse_value(bytes).ok()?;
    let head = value.as_array()?.first()?.as_object()?;
    let auth = head.get("auth")?.as_str()?.to_owned();
    let corr = head.get("corr").and_then(Value::as_str).map(str::to_owned);
    Some((auth, corr))
}

/// The bytes of a reply: strict JSON, or the Python literal the original gateway wrote.
pub(crate) fn encode_reply(reply: &Reply, python_literal: bool) -> Vec<u8> {
    if python_literal {
        reply.to_python_literal().into_bytes()
    } else {
        reply.to_json_bytes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sniff_reads_auth_from_broken_requests() {
        assert_eq!(
            sniff(br#"[{"auth": "T", "corr": "c"}, {"id": 5}]"#),
            Some(("T".into(), Some("c".into())))
        );
        assert_eq!(
            sniff(b"[{'auth': 'T'}, {'id': None}]"),
            Some(("T".into(), None))
        );
        assert_eq!(sniff(b"garbage"), None);
        assert_eq!(sniff(b"[{\"auth\": 5}]"), None);
        assert_eq!(sniff(b"\xff"), None);
    }

    #[test]
    fn heads_are_typed() {
        let env = parse_envelope(br#"[{"auth": "T", "idem": "k"}, {}]"#).unwrap();
        let head = head_of(&env).unwrap();
        assert_eq!(head.auth, "T");
        assert_eq!(head.idem.as_deref(), Some("k"));
        let env = parse_envelope(br#"[{"corr": "c"}]"#).unwrap();
        assert!(head_of(&env).is_err());
        let env = parse_envelope(br#"[{"auth": "T", "corr": 1}]"#).unwrap();
        assert!(head_of(&env).is_err());
        assert!(parse_envelope(b"{}").is_err());
    }
}
