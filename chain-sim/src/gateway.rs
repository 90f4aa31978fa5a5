//! From one consumed message to the reply's bytes, without Kafka: decode, check the
//! signature, apply to the ledger, build, sign and encode the reply. The server only
//! moves bytes; everything a test might want to check about a reply happens here.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mes_core::codec::{Envelope, Head, Reply, ReplyBody, Request};
use mes_core::signing::{SigningKey, request_digest, verify_envelope};
use serde_json::Value;

use crate::config::{GatewayOptions, Route};
use crate::erp::{self, ErpRequest};
use crate::fate::ReplyFate;
use crate::ledger::Ledger;
use crate::wire;

/// A reply ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outgoing {
    /// The encoded reply.
    pub(crate) payload: Vec<u8>,
    /// The correlation id to echo in the `correlation_id` header, if any.
    pub(crate) corr: Option<String>,
}

/// The reply logic shared by the Kafka loop and the unit tests.
#[derive(Debug, Clone)]
pub(crate) struct Gateway {
    ledger: Arc<Mutex<Ledger>>,
    key: SigningKey,
    options: GatewayOptions,
}

impl Gateway {
    pub(crate) fn new(
        ledger: Arc<Mutex<Ledger>>,
        key: SigningKey,
        options: GatewayOptions,
    ) -> Self {
        Gateway {
            ledger,
            key,
            options,
        }
    }

    /// Handles one message read from `route`'s topic; `None` when it cannot be
    /// answered at all (no token can be read from it).
    pub(crate) fn handle(
        &self,
        route: Route,
        payload: &[u8],
        header_corr: Option<&str>,
    ) -> Option<Outgoing> {
        let name = route.default_name();
        let (head, body) = match route {
            Route::Chain(topic) => match Request::decode(topic, payload) {
                Ok((head, request)) => {
                    let body = match self.check_signature(&head, || wire::parse_envelope(payload)) {
                        Ok(()) => lock(&self.ledger).apply(topic, &head, &request),
                        Err(why) => lock(&self.ledger).bad_signature(name, &why),
                    };
                    (head, body)
                }
                Err(e) => return self.undecodable(name, payload, &e.to_string(), header_corr),
            },
            Route::ErpPartner | Route::ErpOrder => {
                match erp::decode(payload, route == Route::ErpOrder) {
                    Ok((head, envelope, request)) => {
                        let body = match self.check_signature(&head, || Ok(envelope)) {
                            Ok(()) => {
                                let mut ledger = lock(&self.ledger);
                                match &request {
                                    ErpRequest::Partner(p) => ledger.erp_partner(&head, p),
                                    ErpRequest::Order(o) => ledger.erp_order(&head, o),
                                }
                            }
                            Err(why) => lock(&self.ledger).bad_signature(name, &why),
                        };
                        (head, body)
                    }
                    Err(why) => return self.undecodable(name, payload, &why, header_corr),
                }
            }
        };
        let req = self.request_digest(payload);
        Some(self.reply(&head.auth, head.corr.as_deref().or(header_corr), req, body))
    }

    /// The digest a signed reply carries as `req` (docs/protocol.md §5): of the request
    /// envelope as it was read, whatever its encoding. Only computed when replies are
    /// signed; `None` when the bytes are no envelope at all.
    fn request_digest(&self, payload: &[u8]) -> Option<String> {
        if !self.options.sign_replies {
            return None;
        }
        wire::parse_envelope(payload)
            .ok()
            .map(|envelope| request_digest(&envelope))
    }

    /// Counts a reply that `fate` keeps from being published; true if it is to be
    /// published.
    pub(crate) fn settle(&self, fate: ReplyFate) -> bool {
        match fate {
            ReplyFate::Publish(_) => true,
            ReplyFate::Lost => {
                lock(&self.ledger).count_lost_reply();
                false
            }
            ReplyFate::Unanswered => {
                lock(&self.ledger).count_unanswered();
                false
            }
        }
    }

    /// A signed request must verify; an unsigned one passes unless signatures are
    /// required.
    fn check_signature(
        &self,
        head: &Head,
        envelope: impl FnOnce() -> Result<Envelope, String>,
    ) -> Result<(), String> {
        if head.signer.is_none() && head.sig.is_none() && !self.options.require_signed {
            return Ok(());
        }
        let envelope = envelope()?;
        verify_envelope(&envelope, None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn undecodable(
        &self,
        topic: &str,
        payload: &[u8],
        why: &str,
        header_corr: Option<&str>,
    ) -> Option<Outgoing> {
        let Some((auth, corr)) = wire::sniff(payload) else {
            tracing::warn!(
                topic,
                "skipping an undecodable request without a token: {why}"
            );
            lock(&self.ledger).skip_undecodable(topic);
            return None;
        };
        tracing::info!(topic, "answering an undecodable request: {why}");
        let body = lock(&self.ledger).bad_request(topic, &auth, why);
        let req = self.request_digest(payload);
        Some(self.reply(&auth, corr.as_deref().or(header_corr), req, body))
    }

    fn reply(
        &self,
        auth: &str,
        corr: Option<&str>,
        req: Option<String>,
        body: ReplyBody,
    ) -> Outgoing {
        let corr = corr.filter(|_| !self.options.no_echo);
        let mut reply = Reply::new(auth, corr, body);
        if self.options.sign_replies {
            // A signed reply names the request it answers: its `corr` (above) and the
            // digest of its envelope, both under the signature.
            if let Some(req) = req {
                reply
                    .envelope_mut()
                    .head
                    .insert("req".into(), Value::String(req));
            }
            self.key.sign_envelope(reply.envelope_mut());
        }
        Outgoing {
            payload: wire::encode_reply(&reply, self.options.python_literal),
            corr: corr.map(str::to_owned),
        }
    }
}

/// The ledger, even if a panic elsewhere poisoned its lock: its state is consistent
/// after every call, since no call panics half-way by design.
pub(crate) fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mes_core::codec::{Page, Topic, decode_reply};
    use serde_json::json;

    use super::*;

    fn gateway(options: GatewayOptions) -> (Gateway, SigningKey) {
        let key = SigningKey::generate();
        let mes = SigningKey::generate().agent_key();
        let ledger = Ledger::new(key.clone(), mes, ["T".to_owned()]);
        (
            Gateway::new(Arc::new(Mutex::new(ledger)), key.clone(), options),
            key,
        )
    }

    fn list(auth: &str, corr: Option<&str>) -> Vec<u8> {
        Request::ListPartners(Page::default())
            .envelope(auth, corr)
            .to_bytes()
    }

    const LIST: Route = Route::Chain(Topic::PartnerList);

    #[test]
    fn echoes_corr_from_head_or_header() {
        let (g, _) = gateway(GatewayOptions::default());
        let out = g.handle(LIST, &list("T", Some("c1")), None).unwrap();
        assert_eq!(out.corr.as_deref(), Some("c1"));
        let reply = decode_reply(&out.payload).unwrap();
        assert_eq!(reply.head.corr.as_deref(), Some("c1"));
        assert_eq!(reply.body, ReplyBody::Data(vec![]));
        let out = g.handle(LIST, &list("T", None), Some("h1")).unwrap();
        assert_eq!(out.corr.as_deref(), Some("h1"));
        assert_eq!(
            decode_reply(&out.payload).unwrap().head.corr.as_deref(),
            Some("h1")
        );
    }

    #[test]
    fn no_echo_omits_corr() {
        let (g, _) = gateway(GatewayOptions {
            no_echo: true,
            ..GatewayOptions::default()
        });
        let out = g.handle(LIST, &list("T", Some("c1")), Some("c1")).unwrap();
        assert_eq!(out.corr, None);
        let text = String::from_utf8(out.payload).unwrap();
        assert_eq!(text, r#"[{"auth": "T"}, {"data": []}]"#);
    }

    #[test]
    fn python_literal_and_signed_replies() {
        let (g, key) = gateway(GatewayOptions {
            python_literal: true,
            sign_replies: true,
            ..GatewayOptions::default()
        });
        let out = g.handle(LIST, &list("T", Some("c")), None).unwrap();
        let text = String::from_utf8(out.payload.clone()).unwrap();
        assert!(text.starts_with("[{'auth': 'T'"), "{text}");
        let reply = decode_reply(&out.payload).unwrap();
        assert_eq!(
            verify_envelope(reply.envelope(), Some(&key.agent_key())).unwrap(),
            key.agent_key()
        );
        // Bound to its request: the signed head names its corr and digest.
        assert_eq!(reply.head.corr.as_deref(), Some("c"));
        let sent = crate::wire::parse_envelope(&list("T", Some("c"))).unwrap();
        assert_eq!(reply.head.req, Some(request_digest(&sent)));
    }

    #[test]
    fn signatures_are_checked_and_can_be_required() {
        let (g, _) = gateway(GatewayOptions {
            require_signed: true,
            ..GatewayOptions::default()
        });
        let code = |out: Outgoing| match decode_reply(&out.payload).unwrap().body {
            ReplyBody::Error { code, .. } => code,
            _ => None,
        };
        let out = g.handle(LIST, &list("T", None), None).unwrap();
        assert_eq!(code(out).as_deref(), Some("unauthorized"));

        let mes = SigningKey::generate();
        let mut env = Request::ListPartners(Page::default()).envelope("T", None);
        mes.sign_envelope(&mut env);
        let out = g.handle(LIST, &env.to_bytes(), None).unwrap();
        assert_eq!(code(out), None, "a good signature passes");

        env.head.insert("limit".into(), json!(11));
        let out = g.handle(LIST, &env.to_bytes(), None).unwrap();
        assert_eq!(code(out).as_deref(), Some("unauthorized"));
    }

    #[test]
    fn undecodable_requests_get_bad_request_or_are_skipped() {
        let (g, _) = gateway(GatewayOptions::default());
        let route = Route::Chain(Topic::PartnerAnswer);
        let out = g
            .handle(route, br#"[{"auth": "T", "corr": "c"}, {"id": 5}]"#, None)
            .unwrap();
        let reply = decode_reply(&out.payload).unwrap();
        assert_eq!(reply.head.corr.as_deref(), Some("c"));
        assert!(
            matches!(reply.body, ReplyBody::Error { code: Some(ref c), .. } if c == "bad_request")
        );
        let out = g
            .handle(route, br#"[{"auth": "X"}, {"id": 5}]"#, None)
            .unwrap();
        assert!(matches!(decode_reply(&out.payload).unwrap().body,
            ReplyBody::Error { code: Some(ref c), .. } if c == "unauthorized"));
        assert_eq!(g.handle(route, b"\xff\xfe garbage", None), None);
        assert_eq!(g.handle(Route::ErpOrder, b"", None), None);
        let counters = lock(&g.ledger).counters().clone();
        assert_eq!(counters.undecodable, 4);
        assert_eq!(counters.by_topic["BLK_Part_Ans"], 3);
        assert_eq!(counters.applied, 0);
    }
}
