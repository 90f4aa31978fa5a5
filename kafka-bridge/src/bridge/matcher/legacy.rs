//! Replies without `corr`: the legacy slot's request, matched by token and reply
//! [`Shape`], and the fences that keep a late reply from becoming another call's
//! answer (the module documentation of `matcher` states the rules).

use std::fmt;
use std::time::Instant;

use mes_core::codec::{Reply, ReplyBody, Request};

use super::{DropReason, Echo, LateReply, Matcher, Routed, State};

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

    pub(super) fn index(self) -> usize {
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

impl Matcher {
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

    pub(super) fn expire_fences(&self, state: &mut State, now: Instant) {
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

    /// A reply without `corr`: only the slot's request or a fence of its shape may
    /// take it, and only when nothing else could.
    pub(super) fn dispatch_legacy(
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
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use mes_core::codec::ReplyBody;
    use serde_json::json;

    use super::*;
    use crate::bridge::CorrelationMode;
    use crate::bridge::matcher::tests::{FENCE, T, data, message, n_of};

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

    fn text_of(r: Reply) -> String {
        r.body.text()
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
}
