//! Where a reply went: delivered, handed back late with its call's `corr`
//! ([`LateReply`]), or dropped for a [`DropReason`].

use std::fmt;

use mes_core::codec::Reply;

use super::Waiter;

/// Why a reply was not delivered to anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Neither JSON nor a Python literal, or not an envelope.
    Undecodable,
    /// A gateway key is configured and the signature is missing or wrong.
    BadSignature,
    /// For another MES's token.
    OtherToken,
    /// A `corr` nobody waits for (another instance's request, or a forgery).
    UnknownCorr,
    /// The answer to a request that already timed out (it lifts that request's fence).
    Late,
    /// Our token, no `corr`, and no legacy request or fence of its shape to give it to.
    Unmatched,
    /// A pending `corr`, but another token: refused, the request keeps waiting.
    TokenMismatch,
    /// An `error` without `corr` while replies of both shapes may be outstanding:
    /// nobody can tell whose it is, so nobody gets it.
    Ambiguous,
    /// Signed, but the Kafka header `correlation_id` differs from the signed `corr`:
    /// the header is never trusted over the signed head.
    HeaderMismatch,
    /// Signed, but the signed head lacks `corr` or `req`: it cannot be tied to a
    /// request, so it answers none.
    Unbound,
    /// Signed for a `corr` we sent, but its `req` is not the digest of the request we
    /// sent under it: the gateway's answer to another request (one sent by someone
    /// else with our `corr`, or an older one).
    WrongRequest,
    /// A second reply for a request already answered: a duplicate, or a replay.
    Replayed,
}

impl DropReason {
    /// Every reason, for metrics.
    pub const ALL: [DropReason; 12] = [
        DropReason::Undecodable,
        DropReason::BadSignature,
        DropReason::OtherToken,
        DropReason::UnknownCorr,
        DropReason::Late,
        DropReason::Unmatched,
        DropReason::TokenMismatch,
        DropReason::Ambiguous,
        DropReason::HeaderMismatch,
        DropReason::Unbound,
        DropReason::WrongRequest,
        DropReason::Replayed,
    ];

    /// Label used in logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Undecodable => "undecodable",
            DropReason::BadSignature => "bad_signature",
            DropReason::OtherToken => "other_token",
            DropReason::UnknownCorr => "unknown_corr",
            DropReason::Late => "late",
            DropReason::Unmatched => "unmatched",
            DropReason::TokenMismatch => "token_mismatch",
            DropReason::Ambiguous => "ambiguous",
            DropReason::HeaderMismatch => "header_mismatch",
            DropReason::Unbound => "unbound",
            DropReason::WrongRequest => "wrong_request",
            DropReason::Replayed => "replayed",
        }
    }
}

/// A reply that came after its call ended without it (a timeout, a lost delivery
/// report), with the `corr` the call was sent with: nobody waits for it any more, but
/// whoever recorded what the call was for (an operator's decision) can settle it.
///
/// In `id` mode the `corr` is the echoed one; in `legacy` mode it is the call whose
/// unanswered reply fenced its shape, which this reply lifts (docs/protocol.md §9).
#[derive(Clone)]
pub struct LateReply {
    /// The correlation id the call was sent with.
    pub corr: String,
    /// The reply as it came (its head holds the master token: never log it).
    pub reply: Reply,
}

impl fmt::Debug for LateReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LateReply")
            .field("corr", &self.corr)
            .finish_non_exhaustive()
    }
}

/// Where [`Matcher::route`](super::Matcher::route) sent a reply.
#[derive(Debug)]
pub(crate) enum Routed {
    /// To the call waiting for it.
    Delivered,
    /// Nobody: its call ended without it (counted as a [`DropReason::Late`] drop).
    Late(Box<LateReply>),
    /// Nobody, for this reason.
    Dropped(DropReason),
}

impl Routed {
    /// A reply handed to a waiter whose call just ended is late, not lost.
    pub(super) fn send(waiter: Waiter, corr: String, reply: Reply) -> Routed {
        match waiter.tx.send(reply) {
            Ok(()) => Routed::Delivered,
            Err(reply) => Routed::Late(Box::new(LateReply { corr, reply })),
        }
    }
}
