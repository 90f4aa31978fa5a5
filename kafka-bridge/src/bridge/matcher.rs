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
//!
//! Here: the state, registration, and matching by `corr`; in `legacy`, replies without
//! `corr` (the slot, reply shapes, the fences); in `routed`, where a reply went.

mod legacy;
mod routed;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mes_core::codec::Reply;
use tokio::sync::oneshot;

pub use self::legacy::{Fence, FenceCounts, Shape};
pub(crate) use self::routed::Routed;
pub use self::routed::{DropReason, LateReply};

use super::CorrelationMode;

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

struct Waiter {
    token: String,
    /// The digest of the request sent ([`mes_core::signing::request_digest`]).
    req: Option<String>,
    tx: oneshot::Sender<Reply>,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use mes_core::codec::ReplyBody;
    use serde_json::json;

    use super::*;

    pub(super) const T: Duration = Duration::from_secs(10);
    pub(super) const FENCE: Duration = Duration::from_secs(120);

    pub(super) fn data(token: &str, corr: Option<&str>, n: i64) -> Reply {
        Reply::new(token, corr, ReplyBody::Data(vec![json!(n)]))
    }

    pub(super) fn message(token: &str, text: &str) -> Reply {
        Reply::new(token, None, ReplyBody::Message(json!(text)))
    }

    pub(super) fn n_of(r: Reply) -> i64 {
        match r.body {
            ReplyBody::Data(items) => items[0].as_i64().unwrap(),
            _ => -1,
        }
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
