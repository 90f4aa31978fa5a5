//! Which waiting request a reply from `BLK_Res` belongs to, if any.
//!
//! Pure bookkeeping (no I/O, no async), so every rule is unit-tested:
//!
//! - a reply whose `corr` (head field or header) is pending goes to that request;
//! - a reply without `corr` goes to the request holding the *legacy slot* if the
//!   tokens match; only one request with the slot is ever in flight, which is what
//!   makes token matching exact;
//! - after a legacy request times out, the slot stays taken (*draining*) until its late
//!   reply has been seen or a grace period has passed, so a late reply never becomes
//!   the next caller's answer;
//! - in `auto` mode, a reply that echoes `corr` proves the gateway echoes, and requests
//!   from then on run concurrently; a reply for our token without `corr` that cannot be
//!   matched proves it stopped, and the bridge falls back to the legacy slot, loudly.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mes_core::codec::Reply;
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
    /// The answer to a request that already timed out.
    Late,
    /// Our token, no `corr`, and no legacy request to give it to.
    Unmatched,
    /// A pending `corr`, but another token: refused, the request keeps waiting.
    TokenMismatch,
}

impl DropReason {
    /// Every reason, for metrics.
    pub const ALL: [DropReason; 7] = [
        DropReason::Undecodable,
        DropReason::BadSignature,
        DropReason::OtherToken,
        DropReason::UnknownCorr,
        DropReason::Late,
        DropReason::Unmatched,
        DropReason::TokenMismatch,
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

struct Waiter {
    token: String,
    tx: oneshot::Sender<Reply>,
}

enum Slot {
    Idle,
    Waiting {
        corr: String,
        token: String,
    },
    Draining {
        corr: String,
        token: String,
        done: Option<oneshot::Sender<()>>,
    },
}

struct State {
    pending: HashMap<String, Waiter>,
    slot: Slot,
    echo: Echo,
    late: HashSet<String>,
    late_order: VecDeque<(Instant, String)>,
    legacy_blocked_until: Option<Instant>,
}

/// The reply-to-request bookkeeping of one bridge.
pub(crate) struct Matcher {
    mode: CorrelationMode,
    /// How long a timed-out request's `corr` is remembered as late, and how long the
    /// legacy slot drains.
    grace: Duration,
    /// Request deadline, used to know when requests sent before a fallback are over.
    timeout: Duration,
    state: Mutex<State>,
}

/// Upper bound of remembered late `corr`s, so a flood of timeouts costs bounded memory.
const MAX_LATE: usize = 100_000;

impl Matcher {
    pub(crate) fn new(mode: CorrelationMode, timeout: Duration, grace: Duration) -> Matcher {
        Matcher {
            mode,
            grace,
            timeout,
            state: Mutex::new(State {
                pending: HashMap::new(),
                slot: Slot::Idle,
                echo: Echo::Unknown,
                late: HashSet::new(),
                late_order: VecDeque::new(),
                legacy_blocked_until: None,
            }),
        }
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

    /// Registers a request; with `legacy` it takes the slot (the caller holds the
    /// slot's permit).
    pub(crate) fn register(
        &self,
        corr: &str,
        token: &str,
        legacy: bool,
    ) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.state();
        state.pending.insert(
            corr.to_owned(),
            Waiter {
                token: token.to_owned(),
                tx,
            },
        );
        if legacy {
            state.slot = Slot::Waiting {
                corr: corr.to_owned(),
                token: token.to_owned(),
            };
        }
        rx
    }

    /// The request ended without a reply and without having been sent (broker
    /// error): forget it and free the slot at once.
    pub(crate) fn abandon(&self, corr: &str) {
        let mut state = self.state();
        state.pending.remove(corr);
        if matches!(&state.slot, Slot::Waiting { corr: c, .. } if c == corr) {
            state.slot = Slot::Idle;
        }
    }

    /// The request timed out: remember its `corr` as late, and if it held the legacy
    /// slot, start draining; the returned receiver fires when its late reply arrives.
    pub(crate) fn timed_out(&self, corr: &str, now: Instant) -> Option<oneshot::Receiver<()>> {
        let mut state = self.state();
        state.pending.remove(corr);
        remember_late(&mut state, corr, now + self.grace);
        match std::mem::replace(&mut state.slot, Slot::Idle) {
            Slot::Waiting { corr: c, token } if c == corr => {
                let (tx, rx) = oneshot::channel();
                state.slot = Slot::Draining {
                    corr: c,
                    token,
                    done: Some(tx),
                };
                Some(rx)
            }
            other => {
                state.slot = other;
                None
            }
        }
    }

    /// The drain of `corr` is over (late reply seen or grace passed): free the slot.
    pub(crate) fn drained(&self, corr: &str) {
        let mut state = self.state();
        if matches!(&state.slot, Slot::Draining { corr: c, .. } if c == corr) {
            state.slot = Slot::Idle;
        }
    }

    /// Delivers `reply` to its request or says why it was dropped.
    pub(crate) fn dispatch(&self, reply: Reply, now: Instant) -> Result<(), DropReason> {
        let mut state = self.state();
        prune_late(&mut state, now);
        let token = reply.head.auth.clone();
        if let Some(corr) = reply.head.corr.clone() {
            return self.dispatch_corr(&mut state, corr, &token, reply);
        }
        // No corr: only the legacy slot can take it.
        match &mut state.slot {
            Slot::Waiting { corr, token: t } if *t == token => {
                let corr = corr.clone();
                state.slot = Slot::Idle;
                if state.echo == Echo::Unknown {
                    state.echo = Echo::Silent;
                }
                match state.pending.remove(&corr) {
                    Some(waiter) => {
                        // The receiver may have just timed out; then it is late.
                        waiter.tx.send(reply).map_err(|_| DropReason::Late)
                    }
                    None => Err(DropReason::Late),
                }
            }
            Slot::Draining { token: t, done, .. } if *t == token => {
                if let Some(done) = done.take() {
                    let _ = done.send(());
                }
                Err(DropReason::Late)
            }
            _ => {
                let ours = state.pending.values().any(|w| w.token == token);
                if !ours {
                    return Err(DropReason::OtherToken);
                }
                if self.mode == CorrelationMode::Auto && state.echo == Echo::Echoes {
                    state.echo = Echo::Silent;
                    state.legacy_blocked_until = Some(now + self.timeout + self.grace);
                    tracing::warn!(
                        "the chain gateway stopped echoing correlation ids: falling back to one \
                         request at a time (legacy mode); requests in flight may time out"
                    );
                }
                Err(DropReason::Unmatched)
            }
        }
    }

    fn dispatch_corr(
        &self,
        state: &mut State,
        corr: String,
        token: &str,
        reply: Reply,
    ) -> Result<(), DropReason> {
        match state.pending.get(&corr) {
            Some(waiter) if waiter.token != token => return Err(DropReason::TokenMismatch),
            Some(_) => {
                let Some(waiter) = state.pending.remove(&corr) else {
                    return Err(DropReason::UnknownCorr);
                };
                if matches!(&state.slot, Slot::Waiting { corr: c, .. } if *c == corr) {
                    state.slot = Slot::Idle;
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
                return waiter.tx.send(reply).map_err(|_| DropReason::Late);
            }
            None => {}
        }
        if let Slot::Draining { corr: c, done, .. } = &mut state.slot
            && *c == corr
        {
            if let Some(done) = done.take() {
                let _ = done.send(());
            }
            return Err(DropReason::Late);
        }
        if state.late.contains(&corr) {
            return Err(DropReason::Late);
        }
        Err(DropReason::UnknownCorr)
    }

    /// Requests waiting for a reply.
    pub(crate) fn pending(&self) -> usize {
        self.state().pending.len()
    }

    /// Fails every waiting request (their receivers see a closed channel).
    pub(crate) fn close(&self) {
        let mut state = self.state();
        state.pending.clear();
        state.slot = Slot::Idle;
    }
}

fn remember_late(state: &mut State, corr: &str, until: Instant) {
    if state.late.len() >= MAX_LATE
        && let Some((_, oldest)) = state.late_order.pop_front()
    {
        state.late.remove(&oldest);
    }
    if state.late.insert(corr.to_owned()) {
        state.late_order.push_back((until, corr.to_owned()));
    }
}

fn prune_late(state: &mut State, now: Instant) {
    while let Some((until, _)) = state.late_order.front() {
        if *until > now {
            break;
        }
        if let Some((_, corr)) = state.late_order.pop_front() {
            state.late.remove(&corr);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mes_core::codec::ReplyBody;
    use serde_json::json;

    use super::*;

    const T: Duration = Duration::from_secs(10);

    fn reply(token: &str, corr: Option<&str>, n: i64) -> Reply {
        Reply::new(token, corr, ReplyBody::Data(vec![json!(n)]))
    }

    fn data(r: Reply) -> i64 {
        match r.body {
            ReplyBody::Data(items) => items[0].as_i64().unwrap(),
            _ => -1,
        }
    }

    #[test]
    fn corr_goes_to_its_request() {
        let m = Matcher::new(CorrelationMode::Id, T, T);
        let now = Instant::now();
        let mut a = m.register("a", "tok", false);
        let mut b = m.register("b", "tok", false);
        assert_eq!(m.dispatch(reply("tok", Some("b"), 2), now), Ok(()));
        assert_eq!(m.dispatch(reply("tok", Some("a"), 1), now), Ok(()));
        assert_eq!(data(a.try_recv().unwrap()), 1);
        assert_eq!(data(b.try_recv().unwrap()), 2);
        assert_eq!(m.pending(), 0);
    }

    #[test]
    fn noise_is_dropped_with_a_reason() {
        let m = Matcher::new(CorrelationMode::Id, T, T);
        let now = Instant::now();
        let mut a = m.register("a", "tok", false);
        assert_eq!(
            m.dispatch(reply("other", Some("a"), 0), now),
            Err(DropReason::TokenMismatch)
        );
        assert_eq!(
            m.dispatch(reply("tok", Some("zzz"), 0), now),
            Err(DropReason::UnknownCorr)
        );
        assert_eq!(
            m.dispatch(reply("other", None, 0), now),
            Err(DropReason::OtherToken)
        );
        assert_eq!(
            m.dispatch(reply("tok", None, 0), now),
            Err(DropReason::Unmatched)
        );
        assert!(a.try_recv().is_err());
        assert_eq!(m.dispatch(reply("tok", Some("a"), 7), now), Ok(()));
        assert_eq!(data(a.try_recv().unwrap()), 7);
    }

    #[test]
    fn legacy_slot_matches_by_token() {
        let m = Matcher::new(CorrelationMode::Legacy, T, T);
        let now = Instant::now();
        let mut a = m.register("a", "tok", true);
        assert_eq!(
            m.dispatch(reply("other", None, 0), now),
            Err(DropReason::OtherToken)
        );
        assert_eq!(m.dispatch(reply("tok", None, 5), now), Ok(()));
        assert_eq!(data(a.try_recv().unwrap()), 5);
        // The slot is free: a second reply without corr is nobody's.
        assert_eq!(
            m.dispatch(reply("tok", None, 6), now),
            Err(DropReason::OtherToken)
        );
        assert_eq!(m.echo(), Echo::Silent);
    }

    #[test]
    fn a_late_legacy_reply_never_reaches_the_next_request() {
        let m = Matcher::new(CorrelationMode::Legacy, T, T);
        let now = Instant::now();
        let _a = m.register("a", "tok", true);
        let mut drained = m.timed_out("a", now).unwrap();
        // The late answer to "a" arrives while the slot drains: counted, not delivered.
        assert_eq!(
            m.dispatch(reply("tok", None, 1), now),
            Err(DropReason::Late)
        );
        assert!(drained.try_recv().is_ok());
        m.drained("a");
        let mut b = m.register("b", "tok", true);
        assert_eq!(m.dispatch(reply("tok", None, 2), now), Ok(()));
        assert_eq!(data(b.try_recv().unwrap()), 2);
    }

    #[test]
    fn late_replies_with_corr_are_counted_late() {
        let m = Matcher::new(CorrelationMode::Id, T, Duration::from_secs(1));
        let now = Instant::now();
        let _a = m.register("a", "tok", false);
        assert!(m.timed_out("a", now).is_none());
        assert_eq!(
            m.dispatch(reply("tok", Some("a"), 1), now),
            Err(DropReason::Late)
        );
        // After the grace period it is just unknown.
        assert_eq!(
            m.dispatch(reply("tok", Some("a"), 1), now + Duration::from_secs(2)),
            Err(DropReason::UnknownCorr)
        );
    }

    #[test]
    fn auto_mode_switches_on_echo_and_back_on_silence() {
        let m = Matcher::new(CorrelationMode::Auto, T, T);
        let now = Instant::now();
        assert!(m.uses_legacy());
        let _a = m.register("a", "tok", true);
        assert_eq!(m.dispatch(reply("tok", Some("a"), 1), now), Ok(()));
        assert_eq!(m.echo(), Echo::Echoes);
        assert!(!m.uses_legacy());
        let _b = m.register("b", "tok", false);
        let _c = m.register("c", "tok", false);
        // The gateway stops echoing: the reply cannot be placed, and the bridge falls
        // back to legacy, blocked until requests sent concurrently are over.
        assert_eq!(
            m.dispatch(reply("tok", None, 2), now),
            Err(DropReason::Unmatched)
        );
        assert!(m.uses_legacy());
        assert!(m.legacy_blocked_until().unwrap() >= now + T);
    }

    #[test]
    fn id_mode_never_matches_by_token() {
        let m = Matcher::new(CorrelationMode::Id, T, T);
        let now = Instant::now();
        assert!(!m.uses_legacy());
        let mut a = m.register("a", "tok", false);
        assert_eq!(
            m.dispatch(reply("tok", None, 1), now),
            Err(DropReason::Unmatched)
        );
        assert!(a.try_recv().is_err());
    }

    #[test]
    fn abandon_frees_the_slot() {
        let m = Matcher::new(CorrelationMode::Legacy, T, T);
        let _a = m.register("a", "tok", true);
        m.abandon("a");
        assert_eq!(m.pending(), 0);
        assert_eq!(
            m.dispatch(reply("tok", None, 1), Instant::now()),
            Err(DropReason::OtherToken)
        );
    }
}
