//! Keeping the master token out of chain text.
//!
//! A gateway may echo the token it was sent, in an error above all ("unknown token
//! …"). Whatever the chain writes can reach an API answer, a decision's audit row, an
//! event, a webhook, the outbox's `last_error` or a log line, and the token is the
//! MES's identity on the chain: nothing of it may leak there. Every place that takes
//! text from a reply goes through this one function, so the rule holds everywhere
//! (the bridge on every reply it hands out, the outbox relay on what it stores).

use serde_json::Value;

/// What stands in for a secret in text that is shown or stored.
pub const REDACTED: &str = "<redacted>";

/// `text` with every occurrence of `secret` replaced by [`REDACTED`]. An empty secret
/// changes nothing.
pub fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() || !text.contains(secret) {
        text.to_owned()
    } else {
        text.replace(secret, REDACTED)
    }
}

/// [`redact`] applied to every string in `value`, object keys included.
pub fn redact_value(value: &mut Value, secret: &str) {
    if secret.is_empty() {
        return;
    }
    match value {
        Value::String(s) => {
            if s.contains(secret) {
                *s = s.replace(secret, REDACTED);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_value(v, secret)),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains(secret)) {
                let entries = std::mem::take(map);
                for (k, mut v) in entries {
                    redact_value(&mut v, secret);
                    map.insert(redact(&k, secret), v);
                }
            } else {
                map.values_mut().for_each(|v| redact_value(v, secret));
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_secret_never_survives() {
        assert_eq!(
            redact("unknown token s3cr3t (s3cr3t)", "s3cr3t"),
            "unknown token <redacted> (<redacted>)"
        );
        assert_eq!(redact("nothing here", "s3cr3t"), "nothing here");
        assert_eq!(redact("anything", ""), "anything");
        let mut value = json!({"error": "bad s3cr3t", "detail": ["x s3cr3t", 1, null],
                               "s3cr3t": {"k": "s3cr3t"}});
        redact_value(&mut value, "s3cr3t");
        let text = value.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert_eq!(value["error"], "bad <redacted>");
        assert_eq!(value["<redacted>"]["k"], "<redacted>");
    }
}
