//! Whether a reply read from `BLK_Res` may be matched at all, and under which `corr`.
//!
//! Pure (no I/O), so every rule is unit-tested. Anyone who can write to the shared
//! reply topic can publish a reply; without a gateway key nothing tells a forgery
//! apart (the operator chose that, `MES_REPLY_TRUST=unsigned`). With a gateway key:
//!
//! - the reply must be signed by that key (else [`DropReason::BadSignature`]);
//! - its signed head must carry `corr` and `req` (else [`DropReason::Unbound`]): the
//!   matcher then checks `req` against the request sent under that `corr`;
//! - the Kafka header `correlation_id` is not signed: it is never used, and one that
//!   differs from the signed `corr` marks a tampered record
//!   ([`DropReason::HeaderMismatch`]).
//!
//! Without a gateway key the head's `corr` is used, else the header's.

use mes_core::codec::Reply;
use mes_core::domain::AgentKey;
use mes_core::signing::verify_envelope;

use super::matcher::DropReason;

/// A reply refused before matching: the reason it is counted under, and a sentence
/// for the log (never holding the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) reason: DropReason,
    pub(crate) why: String,
}

/// The reply with the `corr` it is matched by, or why it is refused.
pub(crate) fn admit(
    mut reply: Reply,
    header_corr: Option<String>,
    gateway: Option<&AgentKey>,
) -> Result<Reply, Refused> {
    let Some(gateway) = gateway else {
        if reply.head.corr.is_none() {
            reply.head.corr = header_corr;
        }
        return Ok(reply);
    };
    if let Err(e) = verify_envelope(reply.envelope(), Some(gateway)) {
        return Err(Refused {
            reason: DropReason::BadSignature,
            why: format!("not signed by the gateway: {e}"),
        });
    }
    // The typed head was read from the envelope just verified: it is the signed one.
    let Some(corr) = reply.head.corr.as_deref() else {
        return Err(Refused {
            reason: DropReason::Unbound,
            why: "signed, but without \"corr\" in its head".into(),
        });
    };
    if reply.head.req.is_none() {
        return Err(Refused {
            reason: DropReason::Unbound,
            why: "signed, but without \"req\" in its head".into(),
        });
    }
    if let Some(header) = header_corr
        && header != corr
    {
        return Err(Refused {
            reason: DropReason::HeaderMismatch,
            why: "its correlation_id header differs from its signed corr".into(),
        });
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mes_core::codec::{Page, ReplyBody, Request};
    use mes_core::signing::{SigningKey, request_digest};
    use serde_json::{Value, json};

    use super::*;

    fn signed(key: &SigningKey, corr: Option<&str>, req: Option<&str>) -> Reply {
        let mut reply = Reply::new("tok", corr, ReplyBody::Data(vec![json!(1)]));
        if let Some(req) = req {
            reply
                .envelope_mut()
                .head
                .insert("req".into(), Value::String(req.to_owned()));
        }
        key.sign_envelope(reply.envelope_mut());
        // As the consumer sees it: decoded from the bytes.
        mes_core::codec::decode_reply(&reply.to_json_bytes()).unwrap()
    }

    fn reason(result: Result<Reply, Refused>) -> DropReason {
        result.unwrap_err().reason
    }

    #[test]
    fn without_a_key_the_head_wins_and_the_header_fills_in() {
        let reply = Reply::new("tok", Some("head"), ReplyBody::Data(vec![]));
        let admitted = admit(reply, Some("header".into()), None).unwrap();
        assert_eq!(admitted.head.corr.as_deref(), Some("head"));
        let reply = Reply::new("tok", None, ReplyBody::Data(vec![]));
        let admitted = admit(reply, Some("header".into()), None).unwrap();
        assert_eq!(admitted.head.corr.as_deref(), Some("header"));
    }

    #[test]
    fn with_a_key_only_bound_signed_replies_with_a_matching_header_pass() {
        let gateway = SigningKey::generate();
        let key = gateway.agent_key();
        let req = request_digest(&Request::ListPartners(Page::default()).envelope("tok", None));

        let good = signed(&gateway, Some("c"), Some(&req));
        let admitted = admit(good.clone(), Some("c".into()), Some(&key)).unwrap();
        assert_eq!(admitted.head.corr.as_deref(), Some("c"));
        assert_eq!(admitted.head.req.as_deref(), Some(req.as_str()));
        assert!(admit(good.clone(), None, Some(&key)).is_ok());

        // A header that says another corr: the record was tampered with.
        assert_eq!(
            reason(admit(good, Some("other".into()), Some(&key))),
            DropReason::HeaderMismatch
        );
        // The header never stands in for a signed corr.
        assert_eq!(
            reason(admit(
                signed(&gateway, None, Some(&req)),
                Some("c".into()),
                Some(&key)
            )),
            DropReason::Unbound
        );
        assert_eq!(
            reason(admit(signed(&gateway, Some("c"), None), None, Some(&key))),
            DropReason::Unbound
        );
        // Unsigned, or signed by someone else.
        let unsigned = Reply::new("tok", Some("c"), ReplyBody::Data(vec![]));
        assert_eq!(
            reason(admit(unsigned, None, Some(&key))),
            DropReason::BadSignature
        );
        let forger = SigningKey::generate();
        let forged = signed(&forger, Some("c"), Some(&req));
        let refused = admit(forged, None, Some(&key)).unwrap_err();
        assert_eq!(refused.reason, DropReason::BadSignature);
        assert!(!refused.why.contains("tok"), "{}", refused.why);
    }
}
