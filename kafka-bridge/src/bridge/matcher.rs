//! Which waiting request a reply from `BLK_Res` belongs to, if any.
//!
//! Pure bookkeeping (no I/O, no async), so every rule is unit-tested:
//!
//! - a reply whose `corr` (head field or header) is pending goes to that request;
//! - a reply without `corr` can only be matched by its token. That is exact only while
//!   one request with that token may still be answered, so behind such a gateway one
//!   request at a time holds the *legacy slot*, and a reply goes to it only if its
//!   token and its *shape* fit: a `data` list answers a list request, a `message`
//!   answers an answer or record request, an `error` either;
//! - a legacy request that ends without its reply (timed out, or its delivery report
//!   lost after sending) leaves a reply outstanding: its shape is *fenced*. While a
//!   shape is fenced no new request of that shape is sent (the caller is told at once:
//!   [`crate::Error::ChainBehind`]); requests of the other shape still run. The fence
//!   lifts when a reply of that shape arrives (it is the outstanding one, and nobody
//!   receives it) or after the fence's bound, `legacy_fence_max` (the reply is then
//!   counted as lost). So a late reply never becomes another caller's answer, however
//!   late it is within that bound;
//! - an `error` reply fits either shape: it goes to the slot's request only when no
//!   reply of the other shape is outstanding, and lifts a fence only when exactly one
//!   shape is fenced; otherwise nobody can tell whose it is, and it is dropped as
//!   ambiguous (docs/protocol.md §9 says what that costs);
//! - in `auto` mode, a reply that echoes `corr` proves the gateway echoes, and requests
//!   from then on run concurrently. One reply for our token without `corr` proves
//!   nothing (anyone who can write to `BLK_Res` can send it): the bridge falls back to
//!   the legacy slot, loudly and counted, only on sustained evidence, when
//!   [`FALLBACK_EVIDENCE`] calls in a row ended without their reply while at least as
//!   many such replies arrived, and no echoed reply came in between;
//! - when replies must be signed (a gateway key is configured), a reply's signed `req`
//!   must be the digest of the request sent under its `corr`
//!   ([`mes_core::signing::request_digest`]): a signed reply for another request is
//!   refused ([`DropReason::WrongRequest`]), and a second reply for a request already
//!   answered is a replay ([`DropReason::Replayed`]).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mes_core::codec::{Reply, ReplyBody, Request};
use tokio::sync::oneshot;

use super::CorrelationMode;

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

/// What the matcher knows about the gateway's echo of `corr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Nothing seen yet.
    Unknown,
    /// The gateway echoed a `corr`: requests may run concurrently.
    Echoes,
    /// The gateway answered without `corr`.
    Silent,
}

/// The kind of reply a request expects: what tells replies apart when only the token
/// is echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// `BLK_Part_Lst`, `BLK_Act_Lst`: answered with a `data` list.
    List,
    /// `BLK_Part_Ans`, `BLK_Act_Ans`, `BLK_Rty`, `BLK_Rec`: answered with a `message`.
    Message,
}

impl Shape {
    /// Both shapes, for metrics and health.
    pub const ALL: [Shape; 2] = [Shape::List, Shape::Message];

    /// The shape of the reply `request` expects.
    pub fn of(request: &Request) -> Shape {
        match request {
            Request::ListPartners(_) | Request::ListOrders(_) => Shape::List,
            _ => Shape::Message,
        }
    }

    /// Label used in logs, metrics and health (`list`, `message`).
    pub fn label(self) -> &'static str {
        match self {
            Shape::List => "list",
            Shape::Message => "message",
        }
    }

    fn index(self) -> usize {
        match self {
            Shape::List => 0,
            Shape::Message => 1,
        }
    }

    /// The shape a reply body fits; `None` for an `error`, which fits both.
    fn of_body(body: &ReplyBody) -> Option<Shape> {
        match body {
            ReplyBody::Data(_) => Some(Shape::List),
            ReplyBody::Message(_) => Some(Shape::Message),
            ReplyBody::Error { .. } => None,
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A fence that is up: a reply of `shape` is outstanding since `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The shape whose new requests wait.
    pub shape: Shape,
    /// When the request whose reply is outstanding ended without it.
    pub since: Instant,
    /// When the fence lifts by itself if that reply never comes.
    pub until: Instant,
}

/// How fences went since start, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FenceCounts {
    /// Fences put up (a legacy request ended without its reply).
    pub raised: u64,
    /// Fences lifted by their late reply.
    pub lifted_by_reply: u64,
    /// Fences lifted by their bound: the reply was lost (or is later still).
    pub expired: u64,
    /// Operators' answers sent unmatched during a fence raised by background work
    /// (confirmed from the chain's state instead of their reply).
    pub unmatched: u64,
}

struct Waiter {
    token: String,
    /// The digest of the request sent ([`mes_core::signing::request_digest`]).
    req: Option<String>,
    tx: oneshot::Sender<Reply>,
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

/// Where [`Matcher::route`] sent a reply.
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
    fn send(waiter: Waiter, corr: String, reply: Reply) -> Routed {
        match waiter.tx.send(reply) {
            Ok(()) => Routed::Delivered,
            Err(reply) => Routed::Late(Box::new(LateReply { corr, reply })),
        }
    }
}

/// The request holding the legacy slot.
struct Held {
    corr: String,
    token: String,
    shape: Shape,
    /// Background work (the relay, the poller), not an operator's call.
    background: bool,
}

/// A reply outstanding for a legacy request that ended without it.
struct Outstanding {
    corr: String,
    token: String,
    req: Option<String>,
    /// When the fence went up.
    since: Instant,
    /// When the last reply counted here was added: the fence's bound runs from then.
    last_added: Instant,
    /// Raised by background work: operators' answers may be sent unmatched
    /// ([`Matcher::add_unmatched`]) rather than wait for it.
    background: bool,
    /// Replies of answers sent unmatched during this fence, still to come.
    extra: u32,
    /// Whether any answer was sent unmatched during this fence: then no reply of its
    /// shape can be attributed to one request any more.
    mixed: bool,
}

struct State {
    pending: HashMap<String, Waiter>,
    slot: Option<Held>,
    fences: [Option<Outstanding>; 2],
    /// Replies counted lost when their fence expired, per shape: one such reply that
    /// still comes is dropped as late when nobody of its shape waits.
    lost: [u32; 2],
    counts: FenceCounts,
    echo: Echo,
    /// Calls that ended without their reply, by `corr`, with their request's digest.
    late: Recent,
    /// Calls that got their reply, by `corr`: another reply for one is a replay.
    answered: Recent,
    legacy_blocked_until: Option<Instant>,
    /// `auto` after an echo: calls in a row that ended without their reply, and
    /// replies for our token without `corr` that nobody could take, since the last
    /// echoed reply. Both must reach [`FALLBACK_EVIDENCE`] to fall back.
    timeouts_in_a_row: u32,
    strays: u32,
    /// Fallbacks from `id` to legacy matching since start.
    fallbacks: u64,
}

/// `corr`s remembered for a while, each with its request's digest, oldest first.
#[derive(Default)]
struct Recent {
    map: HashMap<String, Option<String>>,
    order: VecDeque<(Instant, String)>,
}

impl Recent {
    fn insert(&mut self, corr: &str, req: Option<String>, until: Instant) {
        if self.map.len() >= MAX_LATE
            && let Some((_, oldest)) = self.order.pop_front()
        {
            self.map.remove(&oldest);
        }
        if self.map.insert(corr.to_owned(), req).is_none() {
            self.order.push_back((until, corr.to_owned()));
        }
    }

    fn get(&self, corr: &str) -> Option<&Option<String>> {
        self.map.get(corr)
    }

    fn prune(&mut self, now: Instant) {
        while let Some((until, _)) = self.order.front() {
            if *until > now {
                break;
            }
            if let Some((_, corr)) = self.order.pop_front() {
                self.map.remove(&corr);
            }
        }
    }
}

/// In `auto` mode after an echo, how many calls in a row must end without their reply,
/// while at least as many replies for our token without `corr` arrive, before the
/// bridge concludes that the gateway stopped echoing and falls back to legacy
/// matching. One stray reply (which anyone who can write to `BLK_Res` can send) must
/// never stop concurrent matching.
pub const FALLBACK_EVIDENCE: u32 = 3;

/// The reply-to-request bookkeeping of one bridge.
pub(crate) struct Matcher {
    mode: CorrelationMode,
    /// Replies are signed (a gateway key is configured): each must carry the digest
    /// of its request (`req`), which is checked.
    bound: bool,
    /// How long a reply of a legacy request that ended without it fences its shape,
    /// and how long a timed-out request's `corr` is remembered as late.
    fence_max: Duration,
    /// Request deadline, used to know when requests sent before a fallback are over.
    timeout: Duration,
    state: Mutex<State>,
}

/// Upper bound of remembered late `corr`s, so a flood of timeouts costs bounded memory.
const MAX_LATE: usize = 100_000;

impl Matcher {
    pub(crate) fn new(mode: CorrelationMode, timeout: Duration, fence_max: Duration) -> Matcher {
        Matcher {
            mode,
            bound: false,
            fence_max,
            timeout,
            state: Mutex::new(State {
                pending: HashMap::new(),
                slot: None,
                fences: [None, None],
                lost: [0, 0],
                counts: FenceCounts::default(),
                echo: Echo::Unknown,
                late: Recent::default(),
                answered: Recent::default(),
                legacy_blocked_until: None,
                timeouts_in_a_row: 0,
                strays: 0,
                fallbacks: 0,
            }),
        }
    }

    /// Requires every reply to carry its request's digest (`req`), as signed replies
    /// do (docs/protocol.md §5); a reply whose digest is not its request's is dropped.
    pub(crate) fn bound(mut self, bound: bool) -> Matcher {
        self.bound = bound;
        self
    }

    /// Whether `reply` may answer the request whose digest is `expected`.
    fn fits(&self, expected: Option<&str>, reply: &Reply) -> bool {
        !self.bound || (expected.is_some() && reply.head.req.as_deref() == expected)
    }

    /// Fallbacks from `id` to legacy matching since start (`auto` mode).
    pub(crate) fn fallbacks(&self) -> u64 {
        self.state().fallbacks
    }

    /// Falls back to legacy matching if the evidence is sustained (see
    /// [`FALLBACK_EVIDENCE`]).
    fn maybe_fall_back(&self, state: &mut State, now: Instant) {
        if self.mode != CorrelationMode::Auto
            || state.echo != Echo::Echoes
            || state.timeouts_in_a_row < FALLBACK_EVIDENCE
            || state.strays < FALLBACK_EVIDENCE
        {
            return;
        }
        tracing::warn!(
            timeouts = state.timeouts_in_a_row,
            stray_replies = state.strays,
            "the chain gateway stopped echoing correlation ids: calls in a row got no reply \
             while replies without one kept arriving; falling back to one request at a time \
             (legacy mode)"
        );
        state.echo = Echo::Silent;
        state.legacy_blocked_until = Some(now + self.timeout * 2);
        state.fallbacks += 1;
        state.timeouts_in_a_row = 0;
        state.strays = 0;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug in this module; the state
        // stays consistent (every mutation is a single assignment), so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the next request must take the legacy slot.
    pub(crate) fn uses_legacy(&self) -> bool {
        match self.mode {
            CorrelationMode::Legacy => true,
            CorrelationMode::Id => false,
            CorrelationMode::Auto => self.state().echo != Echo::Echoes,
        }
    }

    /// What is known about the gateway's echo.
    pub(crate) fn echo(&self) -> Echo {
        self.state().echo
    }

    /// Until when a legacy request must wait after falling back from concurrent mode:
    /// requests sent concurrently may still be answered without `corr`.
    pub(crate) fn legacy_blocked_until(&self) -> Option<Instant> {
        self.state().legacy_blocked_until
    }

    /// The fence of `shape` if it is up (an expired one is lifted first).
    pub(crate) fn fence(&self, shape: Shape, now: Instant) -> Option<Fence> {
        let mut state = self.state();
        self.expire_fences(&mut state, now);
        self.fence_of(&state, shape)
    }

    /// Every fence that is up.
    pub(crate) fn fences(&self, now: Instant) -> Vec<Fence> {
        let mut state = self.state();
        self.expire_fences(&mut state, now);
        Shape::ALL
            .iter()
            .filter_map(|shape| self.fence_of(&state, *shape))
            .collect()
    }

    /// How fences went since start.
    pub(crate) fn fence_counts(&self) -> FenceCounts {
        self.state().counts
    }

    fn fence_of(&self, state: &State, shape: Shape) -> Option<Fence> {
        state.fences[shape.index()].as_ref().map(|o| Fence {
            shape,
            since: o.since,
            until: o.last_added + self.fence_max,
        })
    }

    fn expire_fences(&self, state: &mut State, now: Instant) {
        for shape in Shape::ALL {
            let i = shape.index();
            if state.fences[i]
                .as_ref()
                .is_some_and(|o| now.saturating_duration_since(o.last_added) >= self.fence_max)
            {
                state.fences[i] = None;
                state.lost[i] = state.lost[i].saturating_add(1);
                state.counts.expired += 1;
                tracing::warn!(
                    shape = shape.label(),
                    "no late reply within {:?}: counted as lost; {shape} requests run again",
                    self.fence_max
                );
            }
        }
    }

    /// [`Matcher::register_request`] without a digest.
    #[cfg(test)]
    pub(crate) fn register(
        &self,
        corr: &str,
        token: &str,
        shape: Shape,
        legacy: bool,
    ) -> oneshot::Receiver<Reply> {
        self.register_request(corr, token, shape, legacy, None, false)
    }

    /// Registers a request expecting a reply of `shape`, whose envelope has the digest
    /// `req`; with `legacy` it takes the slot (the caller holds the slot's permit and
    /// has checked the fence). A fence raised by background work (`background`) lets
    /// operators' answers through unmatched ([`Matcher::add_unmatched`]).
    pub(crate) fn register_request(
        &self,
        corr: &str,
        token: &str,
        shape: Shape,
        legacy: bool,
        req: Option<String>,
        background: bool,
    ) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.state();
        state.pending.insert(
            corr.to_owned(),
            Waiter {
                token: token.to_owned(),
                req,
                tx,
            },
        );
        if legacy {
            state.slot = Some(Held {
                corr: corr.to_owned(),
                token: token.to_owned(),
                shape,
                background,
            });
        }
        rx
    }

    /// Whether `shape` is fenced by background work for `token`: an operator's answer
    /// of that shape can then be sent unmatched instead of being refused.
    pub(crate) fn fenced_by_background(&self, shape: Shape, token: &str, now: Instant) -> bool {
        let mut state = self.state();
        self.expire_fences(&mut state, now);
        state.fences[shape.index()]
            .as_ref()
            .is_some_and(|o| o.background && o.token == token)
    }

    /// An operator's answer `corr` of `shape` goes out while background work's reply
    /// of that shape is outstanding: nobody waits for its reply, which is counted as
    /// one more outstanding reply of the fence (the fence lifts when all have come, or
    /// at its bound from now). Returns false, changing nothing, if there is no such
    /// fence any more: the caller takes the usual way. The answer's outcome is to be
    /// confirmed from the chain's state; an echoed `corr` still settles it as late.
    pub(crate) fn add_unmatched(
        &self,
        corr: &str,
        shape: Shape,
        token: &str,
        now: Instant,
    ) -> bool {
        let mut state = self.state();
        self.expire_fences(&mut state, now);
        let Some(fence) = state.fences[shape.index()]
            .as_mut()
            .filter(|o| o.background && o.token == token)
        else {
            return false;
        };
        fence.extra = fence.extra.saturating_add(1);
        fence.mixed = true;
        fence.last_added = now;
        state.counts.unmatched += 1;
        state.late.insert(corr, None, now + self.fence_max);
        true
    }

    /// An answer counted by [`Matcher::add_unmatched`] was refused before it was
    /// queued: its reply will never come.
    pub(crate) fn withdraw_unmatched(&self, shape: Shape) {
        let mut state = self.state();
        if let Some(fence) = state.fences[shape.index()].as_mut() {
            fence.extra = fence.extra.saturating_sub(1);
        }
    }

    /// The request ended without a reply and without having been sent (refused before
    /// it was queued): forget it and free the slot, no fence.
    pub(crate) fn abandon(&self, corr: &str) {
        let mut state = self.state();
        state.pending.remove(corr);
        if state.slot.as_ref().is_some_and(|h| h.corr == corr) {
            state.slot = None;
        }
    }

    /// The request ended without its reply after it may have been sent (timeout, lost
    /// delivery report): remember its `corr` as late, free the slot, and if it held the
    /// slot, fence its shape until its reply comes. Returns whether a fence went up.
    pub(crate) fn timed_out(&self, corr: &str, now: Instant) -> bool {
        let mut state = self.state();
        let req = state.pending.remove(corr).and_then(|w| w.req);
        state.late.insert(corr, req.clone(), now + self.fence_max);
        match state.slot.take() {
            Some(held) if held.corr == corr => {
                state.fences[held.shape.index()] = Some(Outstanding {
                    corr: held.corr,
                    token: held.token,
                    req,
                    since: now,
                    last_added: now,
                    background: held.background,
                    extra: 0,
                    mixed: false,
                });
                state.counts.raised += 1;
                true
            }
            other => {
                state.slot = other;
                if state.echo == Echo::Echoes {
                    state.timeouts_in_a_row = state.timeouts_in_a_row.saturating_add(1);
                    self.maybe_fall_back(&mut state, now);
                }
                false
            }
        }
    }

    /// Delivers `reply` to its request or says why it was dropped.
    #[cfg(test)]
    pub(crate) fn dispatch(&self, reply: Reply, now: Instant) -> Result<(), DropReason> {
        match self.route(reply, now) {
            Routed::Delivered => Ok(()),
            Routed::Late(_) => Err(DropReason::Late),
            Routed::Dropped(reason) => Err(reason),
        }
    }

    /// Delivers `reply` to its request, or hands it back as late with the `corr` of
    /// the call it belonged to, or says why it was dropped.
    pub(crate) fn route(&self, reply: Reply, now: Instant) -> Routed {
        let mut state = self.state();
        state.late.prune(now);
        state.answered.prune(now);
        self.expire_fences(&mut state, now);
        let token = reply.head.auth.clone();
        if let Some(corr) = reply.head.corr.clone() {
            return self.dispatch_corr(&mut state, corr, &token, reply, now);
        }
        if self.bound {
            // Signed replies carry `corr` (the consumer refuses others first); a reply
            // without one is never matched by token.
            return Routed::Dropped(DropReason::Unbound);
        }
        self.dispatch_legacy(&mut state, &token, reply, now)
    }

    /// A reply without `corr`: only the slot's request or a fence of its shape may
    /// take it, and only when nothing else could.
    fn dispatch_legacy(
        &self,
        state: &mut State,
        token: &str,
        reply: Reply,
        now: Instant,
    ) -> Routed {
        let held = state
            .slot
            .as_ref()
            .filter(|h| h.token == token)
            .map(|h| h.shape);
        let fenced = |shape: Shape| {
            state.fences[shape.index()]
                .as_ref()
                .is_some_and(|o| o.token == token)
        };
        let (list_fenced, message_fenced) = (fenced(Shape::List), fenced(Shape::Message));
        let is_fenced = |shape: Shape| match shape {
            Shape::List => list_fenced,
            Shape::Message => message_fenced,
        };
        let target = match Shape::of_body(&reply.body) {
            Some(shape) => {
                if held == Some(shape) && !is_fenced(shape) {
                    Target::Slot
                } else if is_fenced(shape) {
                    Target::Fence(shape)
                } else {
                    Target::Nobody(Some(shape))
                }
            }
            None => match (held, list_fenced, message_fenced) {
                (Some(_), false, false) => Target::Slot,
                (Some(_), _, _) | (None, true, true) => Target::Ambiguous,
                (None, true, false) => Target::Fence(Shape::List),
                (None, false, true) => Target::Fence(Shape::Message),
                (None, false, false) => Target::Nobody(None),
            },
        };
        match target {
            Target::Slot => {
                let Some(held) = state.slot.take() else {
                    return Routed::Dropped(DropReason::Unmatched);
                };
                if state.echo == Echo::Unknown {
                    state.echo = Echo::Silent;
                }
                match state.pending.remove(&held.corr) {
                    // The receiver may have just timed out; then it is late.
                    Some(waiter) => Routed::send(waiter, held.corr, reply),
                    None => Routed::Late(Box::new(LateReply {
                        corr: held.corr,
                        reply,
                    })),
                }
            }
            Target::Fence(shape) => match state.fences[shape.index()].take() {
                Some(mut outstanding) if outstanding.extra > 0 => {
                    // One of several outstanding replies of this shape: whose, nobody
                    // can tell. The fence stays for the others.
                    outstanding.extra -= 1;
                    state.fences[shape.index()] = Some(outstanding);
                    Routed::Dropped(DropReason::Late)
                }
                Some(outstanding) => {
                    state.counts.lifted_by_reply += 1;
                    tracing::info!(
                        shape = shape.label(),
                        late_by = ?now.saturating_duration_since(outstanding.since),
                        "the outstanding reply arrived; {shape} requests run again"
                    );
                    if state.lost[shape.index()] > 0 || outstanding.mixed {
                        // An earlier reply of this shape, counted lost when its fence
                        // expired, may be this one: it lifts the fence but is nobody's.
                        return Routed::Dropped(DropReason::Late);
                    }
                    Routed::Late(Box::new(LateReply {
                        corr: outstanding.corr,
                        reply,
                    }))
                }
                None => Routed::Dropped(DropReason::Late),
            },
            Target::Ambiguous => Routed::Dropped(DropReason::Ambiguous),
            Target::Nobody(shape) => {
                let ours = state.pending.values().any(|w| w.token == token);
                if let Some(shape) = shape
                    && state.lost[shape.index()] > 0
                {
                    state.lost[shape.index()] -= 1;
                    return Routed::Dropped(DropReason::Late);
                }
                if !ours {
                    return Routed::Dropped(DropReason::OtherToken);
                }
                if state.echo == Echo::Echoes {
                    // Evidence, not proof: see `maybe_fall_back`.
                    state.strays = state.strays.saturating_add(1);
                    self.maybe_fall_back(state, now);
                }
                Routed::Dropped(DropReason::Unmatched)
            }
        }
    }

    fn dispatch_corr(
        &self,
        state: &mut State,
        corr: String,
        token: &str,
        reply: Reply,
        now: Instant,
    ) -> Routed {
        match state.pending.get(&corr) {
            Some(waiter) if waiter.token != token => {
                return Routed::Dropped(DropReason::TokenMismatch);
            }
            Some(waiter) if !self.fits(waiter.req.as_deref(), &reply) => {
                // The request keeps waiting for its own reply.
                return Routed::Dropped(DropReason::WrongRequest);
            }
            Some(_) => {
                let Some(waiter) = state.pending.remove(&corr) else {
                    return Routed::Dropped(DropReason::UnknownCorr);
                };
                state
                    .answered
                    .insert(&corr, waiter.req.clone(), now + self.fence_max);
                state.timeouts_in_a_row = 0;
                state.strays = 0;
                if state.slot.as_ref().is_some_and(|h| h.corr == corr) {
                    state.slot = None;
                }
                if state.echo != Echo::Echoes {
                    if self.mode == CorrelationMode::Auto {
                        tracing::info!(
                            "the chain gateway echoes correlation ids: requests now run concurrently"
                        );
                    }
                    state.echo = Echo::Echoes;
                    state.legacy_blocked_until = None;
                }
                return Routed::send(waiter, corr, reply);
            }
            None => {}
        }
        // The echoed reply of a request that fenced its shape: the fence lifts.
        for shape in Shape::ALL {
            let i = shape.index();
            if let Some(o) = state.fences[i]
                .as_ref()
                .filter(|o| o.corr == corr && o.token == token)
            {
                if !self.fits(o.req.as_deref(), &reply) {
                    return Routed::Dropped(DropReason::WrongRequest);
                }
                state.fences[i] = None;
                state.counts.lifted_by_reply += 1;
                return Routed::Late(Box::new(LateReply { corr, reply }));
            }
        }
        if let Some(req) = state.late.get(&corr) {
            if !self.fits(req.as_deref(), &reply) {
                return Routed::Dropped(DropReason::WrongRequest);
            }
            return Routed::Late(Box::new(LateReply { corr, reply }));
        }
        if state.answered.get(&corr).is_some() {
            return Routed::Dropped(DropReason::Replayed);
        }
        Routed::Dropped(DropReason::UnknownCorr)
    }

    /// Requests waiting for a reply.
    pub(crate) fn pending(&self) -> usize {
        self.state().pending.len()
    }

    /// Fails every waiting request (their receivers see a closed channel).
    pub(crate) fn close(&self) {
        let mut state = self.state();
        state.pending.clear();
        state.slot = None;
    }
}

/// Who a reply without `corr` goes to.
enum Target {
    /// The request holding the slot.
    Slot,
    /// The outstanding reply of a fenced shape: nobody receives it, the fence lifts.
    Fence(Shape),
    /// Whose it is cannot be told.
    Ambiguous,
    /// Nobody of its shape (if it has one) waits or is outstanding.
    Nobody(Option<Shape>),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use mes_core::codec::ReplyBody;
    use serde_json::json;

    use super::*;

    const T: Duration = Duration::from_secs(10);
    const FENCE: Duration = Duration::from_secs(120);

    fn data(token: &str, corr: Option<&str>, n: i64) -> Reply {
        Reply::new(token, corr, ReplyBody::Data(vec![json!(n)]))
    }

    fn message(token: &str, text: &str) -> Reply {
        Reply::new(token, None, ReplyBody::Message(json!(text)))
    }

    fn error(token: &str, text: &str) -> Reply {
        Reply::new(
            token,
            None,
            ReplyBody::Error {
                error: json!(text),
                code: None,
            },
        )
    }

    fn n_of(r: Reply) -> i64 {
        match r.body {
            ReplyBody::Data(items) => items[0].as_i64().unwrap(),
            _ => -1,
        }
    }

    fn text_of(r: Reply) -> String {
        r.body.text()
    }

    #[test]
    fn corr_goes_to_its_request() {
        let m = Matcher::new(CorrelationMode::Id, T, FENCE);
        let now = Instant::now();
        let mut a = m.register("a", "tok", Shape::List, false);
        let mut b = m.register("b", "tok", Shape::List, false);
        assert_eq!(m.dispatch(data("tok", Some("b"), 2), now), Ok(()));
        assert_eq!(m.dispatch(data("tok", Some("a"), 1), now), Ok(()));
        assert_eq!(n_of(a.try_recv().unwrap()), 1);
        assert_eq!(n_of(b.try_recv().unwrap()), 2);
        assert_eq!(m.pending(), 0);
    }

    #[test]
    fn noise_is_dropped_with_a_reason() {
        let m = Matcher::new(CorrelationMode::Id, T, FENCE);
        let now = Instant::now();
        let mut a = m.register("a", "tok", Shape::List, false);
        assert_eq!(
            m.dispatch(data("other", Some("a"), 0), now),
            Err(DropReason::TokenMismatch)
        );
        assert_eq!(
            m.dispatch(data("tok", Some("zzz"), 0), now),
            Err(DropReason::UnknownCorr)
        );
        assert_eq!(
            m.dispatch(data("other", None, 0), now),
            Err(DropReason::OtherToken)
        );
        assert_eq!(
            m.dispatch(data("tok", None, 0), now),
            Err(DropReason::Unmatched)
        );
        assert!(a.try_recv().is_err());
        assert_eq!(m.dispatch(data("tok", Some("a"), 7), now), Ok(()));
        assert_eq!(n_of(a.try_recv().unwrap()), 7);
    }

    #[test]
    fn legacy_slot_matches_by_token_and_shape() {
        let m = Matcher::new(CorrelationMode::Legacy, T, FENCE);
        let now = Instant::now();
        let mut a = m.register("a", "tok", Shape::List, true);
        assert_eq!(
            m.dispatch(data("other", None, 0), now),
            Err(DropReason::OtherToken)
        );
        // A message never answers a list.
        assert_eq!(
            m.dispatch(message("tok", "Request X accepted"), now),
            Err(DropReason::Unmatched)
        );
        assert_eq!(m.dispatch(data("tok", None, 5), now), Ok(()));
        assert_eq!(n_of(a.try_recv().unwrap()), 5);
        // The slot is free: a second reply without corr is nobody's.
        assert_eq!(
            m.dispatch(data("tok", None, 6), now),
            Err(DropReason::OtherToken)
        );
        assert_eq!(m.echo(), Echo::Silent);
        // A data list never answers an answer.
        let mut b = m.register("b", "tok", Shape::Message, true);
        assert_eq!(
            m.dispatch(data("tok", None, 7), now),
            Err(DropReason::Unmatched)
        );
        assert!(b.try_recv().is_err());
        assert_eq!(m.dispatch(message("tok", "B done"), now), Ok(()));
        assert_eq!(text_of(b.try_recv().unwrap()), "B done");
    }

    #[test]
    fn a_late_reply_fences_its_shape_until_it_comes_however_late() {
        let m = Matcher::new(CorrelationMode::Legacy, T, FENCE);
        let t0 = Instant::now();
        let _a = m.register("a", "tok", Shape::Message, true);
        assert!(m.timed_out("a", t0));
        let fence = m.fence(Shape::Message, t0).unwrap();
        assert_eq!(fence.since, t0);
        assert_eq!(fence.until, t0 + FENCE);
        assert!(m.fence(Shape::List, t0).is_none());
        // Lists still run during the fence, and the late message is nobody's answer,
        // whenever it comes (here: 100 s later, far past the request's timeout).
        let later = t0 + Duration::from_secs(100);
        let mut b = m.register("b", "tok", Shape::List, true);
        assert_eq!(
            m.dispatch(message("tok", "Request A accepted"), later),
            Err(DropReason::Late)
        );
        assert!(b.try_recv().is_err());
        assert!(m.fence(Shape::Message, later).is_none());
        assert_eq!(m.dispatch(data("tok", None, 2), later), Ok(()));
        assert_eq!(n_of(b.try_recv().unwrap()), 2);
        // Answers run again and get their own replies.
        let mut c = m.register("c", "tok", Shape::Message, true);
        assert_eq!(
            m.dispatch(message("tok", "Request C accepted"), later),
            Ok(())
        );
        assert_eq!(text_of(c.try_recv().unwrap()), "Request C accepted");
        assert_eq!(
            m.fence_counts(),
            FenceCounts {
                raised: 1,
                lifted_by_reply: 1,
                expired: 0,
                unmatched: 0
            }
        );
    }

    #[test]
    fn a_fence_expires_after_its_bound_and_a_still_later_reply_is_dropped_as_late() {
        let m = Matcher::new(CorrelationMode::Legacy, T, FENCE);
        let t0 = Instant::now();
        let _a = m.register("a", "tok", Shape::List, true);
        assert!(m.timed_out("a", t0));
        assert!(
            m.fence(Shape::List, t0 + FENCE - Duration::from_millis(1))
                .is_some()
        );
        let after = t0 + FENCE;
        assert!(m.fence(Shape::List, after).is_none());
        assert_eq!(m.fence_counts().expired, 1);
        // The lost reply comes after all while nobody lists: late, not unmatched.
        assert_eq!(
            m.dispatch(data("tok", None, 1), after),
            Err(DropReason::Late)
        );
        // The residual risk (docs/protocol.md §9): had a list been waiting, it would
        // have taken it. Here the next list gets its own.
        let mut b = m.register("b", "tok", Shape::List, true);
        assert_eq!(m.dispatch(data("tok", None, 2), after), Ok(()));
        assert_eq!(n_of(b.try_recv().unwrap()), 2);
    }

    #[test]
    fn an_error_goes_to_the_slot_only_when_nothing_else_is_outstanding() {
        let m = Matcher::new(CorrelationMode::Legacy, T, FENCE);
        let now = Instant::now();
        // Nothing else outstanding: the error is the slot's.
        let mut a = m.register("a", "tok", Shape::List, true);
        assert_eq!(m.dispatch(error("tok", "unauthorized"), now), Ok(()));
        assert_eq!(text_of(a.try_recv().unwrap()), "unauthorized");
        // An answer's reply is outstanding while a list waits: an error could be
        // either's, so nobody gets it and the fence stays.
        let _b = m.register("b", "tok", Shape::Message, true);
        assert!(m.timed_out("b", now));
        let mut c = m.register("c", "tok", Shape::List, true);
        assert_eq!(
            m.dispatch(error("tok", "Request already answered"), now),
            Err(DropReason::Ambiguous)
        );
        assert!(c.try_recv().is_err());
        assert!(m.fence(Shape::Message, now).is_some());
        // The list whose error was dropped ends without a reply: its shape is fenced
        // too, until a reply lifts it or the bound passes.
        assert!(m.timed_out("c", now));
        assert_eq!(m.fences(now).len(), 2);
    }

    #[test]
    fn an_error_lifts_the_only_fence_and_is_ambiguous_with_two() {
        let m = Matcher::new(CorrelationMode::Legacy, T, FENCE);
        let now = Instant::now();
        let _a = m.register("a", "tok", Shape::Message, true);
        assert!(m.timed_out("a", now));
        assert_eq!(
            m.dispatch(error("tok", "not open"), now),
            Err(DropReason::Late)
        );
        assert!(m.fences(now).is_empty());

        let _b = m.register("b", "tok", Shape::Message, true);
        assert!(m.timed_out("b", now));
        let _c = m.register("c", "tok", Shape::List, true);
        assert!(m.timed_out("c", now));
        assert_eq!(m.fences(now).len(), 2);
        assert_eq!(
            m.dispatch(error("tok", "?"), now),
            Err(DropReason::Ambiguous)
        );
        assert_eq!(m.fences(now).len(), 2);
        // Shaped replies still lift their own fence.
        assert_eq!(m.dispatch(data("tok", None, 1), now), Err(DropReason::Late));
        assert_eq!(m.dispatch(message("tok", "B"), now), Err(DropReason::Late));
        assert!(m.fences(now).is_empty());
    }

    #[test]
    fn an_echoed_reply_of_a_fenced_request_lifts_its_fence() {
        let m = Matcher::new(CorrelationMode::Auto, T, FENCE);
        let now = Instant::now();
        let _a = m.register("a", "tok", Shape::Message, true);
        assert!(m.timed_out("a", now));
        let mut echoed = message("tok", "A");
        echoed.head.corr = Some("a".into());
        assert_eq!(m.dispatch(echoed, now), Err(DropReason::Late));
        assert!(m.fences(now).is_empty());
    }

    fn late_corr(routed: Routed) -> String {
        match routed {
            Routed::Late(late) => late.corr,
            other => panic!("expected a late reply, got {other:?}"),
        }
    }

    #[test]
    fn a_late_reply_comes_back_with_the_corr_of_the_call_it_belonged_to() {
        // id mode: the echoed corr of a call that timed out.
        let m = Matcher::new(CorrelationMode::Id, T, FENCE);
        let now = Instant::now();
        let _a = m.register("a", "tok", Shape::Message, false);
        m.timed_out("a", now);
        assert_eq!(late_corr(m.route(data("tok", Some("a"), 1), now)), "a");
        // legacy mode: the call whose unanswered reply fenced its shape, even though
        // the gateway echoes nothing.
        let m = Matcher::new(CorrelationMode::Legacy, T, FENCE);
        let _b = m.register("b", "tok", Shape::Message, true);
        assert!(m.timed_out("b", now));
        let late = m.route(message("tok", "Request B accepted"), now + T * 3);
        assert_eq!(late_corr(late), "b");
        // A reply whose call is unknown is only dropped.
        assert!(matches!(
            m.route(message("tok", "?"), now + T * 3),
            Routed::Dropped(_)
        ));
        // Once a fence expired (its reply counted lost), a reply lifting a later fence
        // may be that lost one: it lifts the fence but is attributed to nobody.
        let m = Matcher::new(CorrelationMode::Legacy, T, FENCE);
        let _c = m.register("c", "tok", Shape::Message, true);
        assert!(m.timed_out("c", now));
        let expired = now + FENCE + T;
        assert!(m.fence(Shape::Message, expired).is_none());
        let _d = m.register("d", "tok", Shape::Message, true);
        assert!(m.timed_out("d", expired));
        assert!(matches!(
            m.route(message("tok", "Request C accepted"), expired),
            Routed::Dropped(DropReason::Late)
        ));
        assert!(
            m.fence(Shape::Message, expired).is_none(),
            "the fence lifted"
        );
    }

    #[test]
    fn answers_go_out_unmatched_behind_a_background_fence_and_replies_are_nobodys() {
        let m = Matcher::new(CorrelationMode::Legacy, T, FENCE);
        let t0 = Instant::now();
        // An operator's own late answer fences answers the usual way: no unmatched sends.
        let _op = m.register_request("op", "tok", Shape::Message, true, None, false);
        assert!(m.timed_out("op", t0));
        assert!(!m.fenced_by_background(Shape::Message, "tok", t0));
        assert!(!m.add_unmatched("x", Shape::Message, "tok", t0));
        assert!(matches!(
            m.route(message("tok", "op's reply"), t0),
            Routed::Late(_)
        ));
        // The relay's record send times out: its reply is outstanding.
        let _rec = m.register_request("rec", "tok", Shape::Message, true, None, true);
        assert!(m.timed_out("rec", t0));
        assert!(m.fenced_by_background(Shape::Message, "tok", t0));
        assert!(!m.fenced_by_background(Shape::Message, "other-token", t0));
        // Two operators' answers go out unmatched.
        let t1 = t0 + Duration::from_secs(1);
        assert!(m.add_unmatched("a1", Shape::Message, "tok", t1));
        assert!(m.add_unmatched("a2", Shape::Message, "tok", t1));
        // Three replies are outstanding; none can be attributed, the fence lifts with
        // the third, and its bound runs from the last unmatched send.
        assert_eq!(m.fence(Shape::Message, t1).unwrap().until, t1 + FENCE);
        for n in 0..2 {
            assert!(
                matches!(
                    m.route(message("tok", "?"), t1),
                    Routed::Dropped(DropReason::Late)
                ),
                "reply {n}"
            );
            assert!(m.fence(Shape::Message, t1).is_some(), "reply {n}");
        }
        assert!(matches!(
            m.route(message("tok", "?"), t1),
            Routed::Dropped(DropReason::Late)
        ));
        assert!(m.fence(Shape::Message, t1).is_none());
        // Answers take the slot again and get their own replies.
        let mut b = m.register_request("b", "tok", Shape::Message, true, None, false);
        assert_eq!(m.dispatch(message("tok", "B"), t1), Ok(()));
        assert_eq!(text_of(b.try_recv().unwrap()), "B");
        // An unmatched send whose answer was refused before the broker had it is taken back.
        let _rec2 = m.register_request("rec2", "tok", Shape::Message, true, None, true);
        assert!(m.timed_out("rec2", t1));
        assert!(m.add_unmatched("a3", Shape::Message, "tok", t1));
        m.withdraw_unmatched(Shape::Message);
        assert!(matches!(
            m.route(message("tok", "rec2's reply"), t1),
            Routed::Dropped(DropReason::Late)
        ));
        assert!(m.fence(Shape::Message, t1).is_none());
        assert_eq!(m.fence_counts().unmatched, 3);
    }

    #[test]
    fn a_timeout_without_the_slot_fences_nothing() {
        let m = Matcher::new(CorrelationMode::Id, T, Duration::from_secs(1));
        let now = Instant::now();
        let _a = m.register("a", "tok", Shape::List, false);
        assert!(!m.timed_out("a", now));
        assert!(m.fences(now).is_empty());
        assert_eq!(
            m.dispatch(data("tok", Some("a"), 1), now),
            Err(DropReason::Late)
        );
        // After the bound it is just unknown.
        assert_eq!(
            m.dispatch(data("tok", Some("a"), 1), now + Duration::from_secs(2)),
            Err(DropReason::UnknownCorr)
        );
    }

    /// An `auto` matcher that has seen the gateway echo.
    fn echoing() -> (Matcher, Instant) {
        let m = Matcher::new(CorrelationMode::Auto, T, FENCE);
        let now = Instant::now();
        assert!(m.uses_legacy());
        let _a = m.register("a", "tok", Shape::List, true);
        assert_eq!(m.dispatch(data("tok", Some("a"), 1), now), Ok(()));
        assert_eq!(m.echo(), Echo::Echoes);
        assert!(!m.uses_legacy());
        (m, now)
    }

    #[test]
    fn auto_mode_keeps_id_matching_through_stray_replies() {
        let (m, now) = echoing();
        // Anyone who can write to BLK_Res can send replies for our token without corr:
        // they are dropped, and calls keep running concurrently and get their replies.
        for i in 0..10 {
            let corr = format!("c{i}");
            let mut rx = m.register(&corr, "tok", Shape::List, false);
            assert_eq!(
                m.dispatch(data("tok", None, -1), now),
                Err(DropReason::Unmatched)
            );
            assert_eq!(
                m.dispatch(message("tok", "stray"), now),
                Err(DropReason::Unmatched)
            );
            assert!(!m.uses_legacy(), "one stray reply must not change the mode");
            assert_eq!(m.dispatch(data("tok", Some(&corr), i), now), Ok(()));
            assert_eq!(n_of(rx.try_recv().unwrap()), i);
        }
        assert_eq!(m.legacy_blocked_until(), None);
        assert_eq!(m.fallbacks(), 0);
        // Strays while calls time out one by one, each followed by an echoed reply,
        // are no sustained evidence either: the echo resets it.
        for round in 0..5 {
            let corr = format!("t{round}");
            let _rx = m.register(&corr, "tok", Shape::List, false);
            for _ in 0..FALLBACK_EVIDENCE {
                let _ = m.dispatch(data("tok", None, 0), now);
            }
            assert!(!m.timed_out(&corr, now));
            let ok = format!("ok{round}");
            let _ok = m.register(&ok, "tok", Shape::List, false);
            assert_eq!(m.dispatch(data("tok", Some(&ok), 0), now), Ok(()));
        }
        assert!(!m.uses_legacy());
        assert_eq!(m.fallbacks(), 0);
    }

    #[test]
    fn auto_mode_falls_back_only_on_sustained_evidence() {
        let (m, now) = echoing();
        // Calls time out without stray replies: a slow chain, not a silent echo.
        for i in 0..FALLBACK_EVIDENCE + 2 {
            let corr = format!("slow{i}");
            let _rx = m.register(&corr, "tok", Shape::List, false);
            m.timed_out(&corr, now);
        }
        assert!(!m.uses_legacy());
        let _ok = m.register("ok", "tok", Shape::List, false);
        assert_eq!(m.dispatch(data("tok", Some("ok"), 0), now), Ok(()));
        // The gateway stops echoing: every call times out while its reply comes
        // without corr. After FALLBACK_EVIDENCE such calls the bridge falls back,
        // blocked until requests sent concurrently are over.
        for i in 0..FALLBACK_EVIDENCE {
            assert!(!m.uses_legacy(), "fell back after {i} calls");
            let corr = format!("lost{i}");
            let _rx = m.register(&corr, "tok", Shape::List, false);
            assert_eq!(
                m.dispatch(data("tok", None, 2), now),
                Err(DropReason::Unmatched)
            );
            m.timed_out(&corr, now);
        }
        assert!(m.uses_legacy());
        assert_eq!(m.echo(), Echo::Silent);
        assert_eq!(m.fallbacks(), 1);
        assert!(m.legacy_blocked_until().unwrap() >= now + T);
    }

    #[test]
    fn bound_replies_must_name_the_request_they_answer() {
        let m = Matcher::new(CorrelationMode::Id, T, FENCE).bound(true);
        let now = Instant::now();
        let mut a = m.register_request("a", "tok", Shape::List, false, Some("ra".into()), false);
        let with_req = |corr: &str, req: Option<&str>, n: i64| {
            let mut reply = data("tok", Some(corr), n);
            reply.head.req = req.map(str::to_owned);
            reply
        };
        // The gateway's answer to another request sent with our corr, or none at all.
        assert_eq!(
            m.dispatch(with_req("a", Some("other"), 0), now),
            Err(DropReason::WrongRequest)
        );
        assert_eq!(
            m.dispatch(with_req("a", None, 0), now),
            Err(DropReason::WrongRequest)
        );
        assert!(a.try_recv().is_err(), "the request keeps waiting");
        assert_eq!(m.dispatch(with_req("a", Some("ra"), 7), now), Ok(()));
        assert_eq!(n_of(a.try_recv().unwrap()), 7);
        // The same signed reply again: a replay.
        assert_eq!(
            m.dispatch(with_req("a", Some("ra"), 7), now),
            Err(DropReason::Replayed)
        );
        // A corr-less reply is never matched by token when replies are bound.
        let _b = m.register_request("b", "tok", Shape::List, false, Some("rb".into()), false);
        assert_eq!(
            m.dispatch(data("tok", None, 1), now),
            Err(DropReason::Unbound)
        );
        // A late reply settles its call only if it is that call's.
        assert!(!m.timed_out("b", now));
        assert_eq!(
            m.dispatch(with_req("b", Some("ra"), 1), now),
            Err(DropReason::WrongRequest)
        );
        assert_eq!(late_corr(m.route(with_req("b", Some("rb"), 1), now)), "b");
        // After the bound, both are forgotten.
        let later = now + FENCE + T;
        assert_eq!(
            m.dispatch(with_req("a", Some("ra"), 7), later),
            Err(DropReason::UnknownCorr)
        );
    }

    #[test]
    fn id_mode_never_matches_by_token() {
        let m = Matcher::new(CorrelationMode::Id, T, FENCE);
        let now = Instant::now();
        assert!(!m.uses_legacy());
        let mut a = m.register("a", "tok", Shape::List, false);
        assert_eq!(
            m.dispatch(data("tok", None, 1), now),
            Err(DropReason::Unmatched)
        );
        assert!(a.try_recv().is_err());
    }

    #[test]
    fn abandon_frees_the_slot_without_a_fence() {
        let m = Matcher::new(CorrelationMode::Legacy, T, FENCE);
        let now = Instant::now();
        let _a = m.register("a", "tok", Shape::Message, true);
        m.abandon("a");
        assert_eq!(m.pending(), 0);
        assert!(m.fences(now).is_empty());
        assert_eq!(
            m.dispatch(data("tok", None, 1), now),
            Err(DropReason::OtherToken)
        );
    }
}
