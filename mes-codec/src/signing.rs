//! Envelope signatures: secp256k1 ECDSA over SHA-256 of a canonical serialisation.
//!
//! The master token only says "someone who knows the token"; a signature says which
//! key wrote the envelope and that nobody changed it on the way. The MES signs its
//! requests when it has a key, and can require the gateway's replies to be signed by a
//! configured key, so a forged reply on the shared `BLK_Res` never reaches an operator.
//!
//! The signed bytes are [`canonical_bytes`]: the envelope without the head's `sig`,
//! written as compact JSON with object keys sorted by code point (see
//! `docs/protocol.md`), so the signature survives re-encoding as a Python literal.

use std::fmt;

use secp256k1::ecdsa::Signature;
use secp256k1::{Message, PublicKey, SecretKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::codec::Envelope;
use crate::domain::AgentKey;

/// Why an envelope's signature was refused, or a key could not be loaded.
///
/// Messages never include secret key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The envelope carries no `signer`/`sig` but one is required.
    #[error("envelope is not signed")]
    Unsigned,
    /// `signer` is not a compressed secp256k1 public key in hex.
    #[error("envelope signer is not a valid public key")]
    MalformedSigner,
    /// `sig` is not a 64-byte compact signature in hex.
    #[error("envelope signature is malformed")]
    MalformedSignature,
    /// Signed, but by another key than the one configured.
    #[error("envelope is signed by {found}, expected {expected}")]
    UnexpectedSigner {
        /// The configured key.
        expected: AgentKey,
        /// The key that signed.
        found: AgentKey,
    },
    /// The signature does not match the envelope's content.
    #[error("envelope signature does not verify")]
    Invalid,
    /// A secret key could not be loaded (wrong length, not hex, out of range).
    #[error("secret key is invalid: {0}")]
    InvalidSecretKey(&'static str),
}

/// A secp256k1 secret key that signs envelopes.
///
/// `Debug` prints only the public key: the secret never reaches a log.
#[derive(Clone)]
pub struct SigningKey {
    secret: SecretKey,
    public: PublicKey,
}

impl SigningKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> SigningKey {
        let (secret, public) = secp256k1::generate_keypair(&mut secp256k1::rand::rng());
        SigningKey { secret, public }
    }

    /// Loads a key from 64 hex characters (surrounding whitespace ignored), the format
    /// [`SigningKey::to_hex`] writes and `mes-api keygen` stores.
    pub fn from_hex(text: &str) -> Result<SigningKey, SignatureError> {
        let text = text.trim();
        let mut bytes = [0u8; 32];
        if text.len() != 64 {
            return Err(SignatureError::InvalidSecretKey(
                "expected 64 hex characters",
            ));
        }
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| SignatureError::InvalidSecretKey("not hex"))?;
        let secret = SecretKey::from_secret_bytes(bytes)
            .map_err(|_| SignatureError::InvalidSecretKey("not a valid secp256k1 scalar"))?;
        let public = secret.public_key();
        Ok(SigningKey { secret, public })
    }

    /// The secret in hex, for writing a key file. Handle with care.
    pub fn to_hex(&self) -> String {
        hex::encode(self.secret.to_secret_bytes())
    }

    /// The public key, as agents are written on the chain.
    pub fn agent_key(&self) -> AgentKey {
        AgentKey::from(self.public)
    }

    /// Signs arbitrary bytes (SHA-256, then ECDSA); returns the compact signature in
    /// hex. The simulator uses it for transaction ids.
    pub fn sign_bytes(&self, bytes: &[u8]) -> String {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let sig = secp256k1::ecdsa::sign(Message::from_digest(digest), &self.secret);
        hex::encode(sig.serialize_compact())
    }

    /// Sets the head's `signer` and `sig` so that [`verify_envelope`] accepts it.
    pub fn sign_envelope(&self, envelope: &mut Envelope) {
        envelope
            .head
            .insert("signer".into(), Value::String(self.agent_key().to_string()));
        envelope.head.remove("sig");
        let sig = self.sign_bytes(&canonical_bytes(envelope));
        envelope.head.insert("sig".into(), Value::String(sig));
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.agent_key().as_str())
            .finish_non_exhaustive()
    }
}

/// Checks the envelope's signature and returns who signed it.
///
/// With `expected`, only that key is accepted. High-S signatures are refused (they are
/// malleable copies of a valid one), as libsecp256k1 does.
pub fn verify_envelope(
    envelope: &Envelope,
    expected: Option<&AgentKey>,
) -> Result<AgentKey, SignatureError> {
    let text = |key: &str| match envelope.head.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Ok(s.as_str())),
        Some(_) => Some(Err(())),
    };
    let (signer, sig) = match (text("signer"), text("sig")) {
        (None, None) => return Err(SignatureError::Unsigned),
        (Some(Ok(signer)), Some(Ok(sig))) => (signer, sig),
        (Some(Err(())) | None, _) => return Err(SignatureError::MalformedSigner),
        (_, Some(Err(())) | None) => return Err(SignatureError::MalformedSignature),
    };
    let signer: AgentKey = signer
        .parse()
        .map_err(|_| SignatureError::MalformedSigner)?;
    if let Some(expected) = expected
        && *expected != signer
    {
        return Err(SignatureError::UnexpectedSigner {
            expected: expected.clone(),
            found: signer,
        });
    }
    let mut raw = [0u8; 64];
    if sig.len() != 128 || hex::decode_to_slice(sig, &mut raw).is_err() {
        return Err(SignatureError::MalformedSignature);
    }
    let sig = Signature::from_compact(&raw).map_err(|_| SignatureError::MalformedSignature)?;
    let public = signer
        .public_key()
        .map_err(|_| SignatureError::MalformedSigner)?;
    let digest: [u8; 32] = Sha256::digest(canonical_bytes(envelope)).into();
    secp256k1::ecdsa::verify(&sig, Message::from_digest(digest), &public)
        .map_err(|_| SignatureError::Invalid)?;
    Ok(signer)
}

/// The `req` head field of a signed reply: the SHA-256, in hex, of the canonical bytes
/// of the request envelope it answers (without the request's own `sig`).
///
/// The gateway signs it with the reply; the MES compares it with the digest of the
/// envelope it sent under that `corr`. A signed reply is then bound to one request:
/// replayed for another (even one that reuses the `corr`, or a request someone else
/// sent with our `corr`) it is refused (docs/protocol.md §5).
pub fn request_digest(request: &Envelope) -> String {
    hex::encode(Sha256::digest(canonical_bytes(request)))
}

/// The bytes that are signed: the envelope without the head's `sig`, as compact JSON
/// (no whitespace), object keys sorted by Unicode code point, strings with JSON's
/// minimal escapes (`"`, `\`, control characters) and other characters as raw UTF-8,
/// numbers as serde_json writes them (integers in decimal, floats in shortest
/// round-trip form).
pub fn canonical_bytes(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(b'[');
    let mut head = envelope.head.clone();
    head.remove("sig");
    write_canonical(&mut out, &Value::Object(head));
    if let Some(body) = &envelope.body {
        out.push(b',');
        write_canonical(&mut out, body);
    }
    out.push(b']');
    out
}

fn write_canonical(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(out, &Value::String(k.clone()));
                out.push(b':');
                write_canonical(out, v);
            }
            out.push(b'}');
        }
        scalar => write_scalar(out, scalar),
    }
}

fn write_scalar(out: &mut Vec<u8>, value: &Value) {
    // Scalars (strings, numbers, bools, null) serialise into a Vec without error.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;
    use crate::codec::{Page, Request, decode_reply};

    #[test]
    fn sign_then_verify() {
        let key = SigningKey::generate();
        let mut env = Request::ListPartners(Page::default()).envelope("T", Some("c"));
        key.sign_envelope(&mut env);
        assert_eq!(verify_envelope(&env, None).unwrap(), key.agent_key());
        assert_eq!(
            verify_envelope(&env, Some(&key.agent_key())).unwrap(),
            key.agent_key()
        );
    }

    #[test]
    fn tampering_is_detected() {
        let key = SigningKey::generate();
        let mut env = Request::ListPartners(Page::default()).envelope("T", None);
        key.sign_envelope(&mut env);
        let mut changed = env.clone();
        changed.head.insert("limit".into(), json!(11));
        assert_eq!(
            verify_envelope(&changed, None),
            Err(SignatureError::Invalid)
        );
        let other = SigningKey::generate();
        assert!(matches!(
            verify_envelope(&env, Some(&other.agent_key())),
            Err(SignatureError::UnexpectedSigner { .. })
        ));
        let mut unsigned = env.clone();
        unsigned.head.remove("signer");
        unsigned.head.remove("sig");
        assert_eq!(
            verify_envelope(&unsigned, None),
            Err(SignatureError::Unsigned)
        );
        let mut bad = env.clone();
        bad.head.insert("sig".into(), json!("zz"));
        assert_eq!(
            verify_envelope(&bad, None),
            Err(SignatureError::MalformedSignature)
        );
        bad.head.insert("signer".into(), json!(5));
        assert_eq!(
            verify_envelope(&bad, None),
            Err(SignatureError::MalformedSigner)
        );
    }

    #[test]
    fn signature_survives_python_literal_reencoding() {
        let key = SigningKey::generate();
        let mut reply = crate::codec::Reply::new(
            "T",
            Some("c"),
            crate::codec::ReplyBody::Message(json!("Operator's order accepted")),
        );
        key.sign_envelope(reply.envelope_mut());
        let literal = pylit::to_string(&reply.envelope().to_value());
        let back = decode_reply(literal.as_bytes()).unwrap();
        assert_eq!(
            verify_envelope(back.envelope(), Some(&key.agent_key())).unwrap(),
            key.agent_key()
        );
    }

    use crate::pylit;

    #[test]
    fn canonical_form_sorts_keys_and_drops_sig() {
        let env = Envelope {
            head: serde_json::from_value(json!({"sig": "x", "b": 1, "a": "é"})).unwrap(),
            body: Some(json!({"z": [1.5, null, true], "y": {"d": 1, "c": 2}})),
        };
        assert_eq!(
            String::from_utf8(canonical_bytes(&env)).unwrap(),
            r#"[{"a":"é","b":1},{"y":{"c":2,"d":1},"z":[1.5,null,true]}]"#
        );
    }

    #[test]
    fn the_request_digest_ignores_sig_and_encoding_but_not_content() {
        let key = SigningKey::generate();
        let mut env = Request::ListPartners(Page::default()).envelope("T", Some("c"));
        let unsigned = request_digest(&env);
        assert_eq!(unsigned.len(), 64);
        key.sign_envelope(&mut env);
        // `signer` is part of the request; `sig` is not.
        let signed = request_digest(&env);
        let mut resigned = env.clone();
        resigned.head.insert("sig".into(), json!("00"));
        assert_eq!(request_digest(&resigned), signed);
        let literal = pylit::to_string(&env.to_value());
        let back = Envelope::from_value(&crate::pylit::parse(&literal).unwrap()).unwrap();
        assert_eq!(request_digest(&back), signed);
        let other = Request::ListPartners(Page {
            start: 10,
            limit: 10,
        })
        .envelope("T", Some("c"));
        assert_ne!(request_digest(&other), unsigned);
    }

    #[test]
    fn keys_load_from_hex_and_never_print_the_secret() {
        let key = SigningKey::generate();
        let hex = key.to_hex();
        let loaded = SigningKey::from_hex(&format!("  {hex}\n")).unwrap();
        assert_eq!(loaded.agent_key(), key.agent_key());
        assert!(!format!("{loaded:?}").contains(&hex));
        assert!(SigningKey::from_hex("00").is_err());
        assert!(SigningKey::from_hex(&"0".repeat(64)).is_err());
        assert!(SigningKey::from_hex(&"g".repeat(64)).is_err());
        let e = SigningKey::from_hex(&"f".repeat(64)).unwrap_err();
        assert!(!e.to_string().contains("ffff"));
    }
}
