//! A circuit breaker per record topic, so that a gateway that never answers a topic
//! costs one unanswered send per backoff period instead of one per row.
//!
//! A gateway like the original answers only the list and answer topics: every
//! `BLK_Rec` send then waits the full timeout (holding the bridge's legacy slot, which
//! operators need). After [`BreakerConfig::threshold`] consecutive timeouts the topic's
//! breaker opens: its rows stay pending (not claimed, no attempt spent), and once per
//! backoff period one row goes as a probe. Any answer closes the breaker; a probe that
//! times out doubles the backoff, up to [`BreakerConfig::backoff_max`].
//!
//! Pure: no clock, no I/O. The caller passes the time of every event, so the state
//! machine is tested without waiting.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// When a breaker opens and how it probes; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive timeouts that open the breaker; 0 never opens it.
    pub threshold: u32,
    /// Wait before the first probe after the breaker opens.
    pub backoff: Duration,
    /// Longest wait between two probes.
    pub backoff_max: Duration,
}

/// Where a topic's breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BreakerState {
    /// Rows are sent as usual.
    Closed,
    /// Rows are held; one goes as a probe at `next_probe`.
    Open {
        /// When the first of the unanswered sends that opened it timed out.
        since: DateTime<Utc>,
        /// When the next probe may go.
        next_probe: DateTime<Utc>,
        /// The wait that led to `next_probe`; doubled after a probe that times out.
        #[serde(skip)]
        backoff: Duration,
    },
    /// One probe is being sent; the other rows are held until it is answered.
    HalfOpen {
        /// As in [`BreakerState::Open`].
        since: DateTime<Utc>,
        /// When the probe was admitted.
        probing_since: DateTime<Utc>,
        /// The wait before this probe.
        #[serde(skip)]
        backoff: Duration,
    },
}

impl BreakerState {
    /// 0 closed, 1 open, 2 half-open: the value of `mes_relay_topic_state`.
    pub fn gauge(&self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open { .. } => 1,
            BreakerState::HalfOpen { .. } => 2,
        }
    }

    /// `closed`, `open` or `half_open`, as in JSON.
    pub fn label(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }
}

/// What to do with a row whose topic has this breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send it.
    Send,
    /// Send it as the probe; report its outcome with [`Breaker::record`].
    Probe,
    /// Do not send it: put it back unsent.
    Hold,
}

/// How a send ended, as far as the breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The chain answered (a message or an error): the topic is served.
    Answered,
    /// No answer within the send's deadline.
    TimedOut,
    /// Says nothing about the chain (the broker is down, the bridge overloaded or
    /// stopping), or the row was not sent at all.
    Inconclusive,
}

/// One topic's breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    consecutive_timeouts: u32,
    /// When the current run of timeouts began.
    first_timeout: Option<DateTime<Utc>>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            state: BreakerState::Closed,
            consecutive_timeouts: 0,
            first_timeout: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Timeouts since the chain last answered on this topic.
    pub fn consecutive_timeouts(&self) -> u32 {
        self.consecutive_timeouts
    }

    /// Whether rows of this topic should not even be claimed at `now`: open with its
    /// probe not yet due, or half-open (a probe is out).
    pub fn holds(&self, now: DateTime<Utc>) -> bool {
        match self.state {
            BreakerState::Closed => false,
            BreakerState::Open { next_probe, .. } => now < next_probe,
            BreakerState::HalfOpen { .. } => true,
        }
    }

    /// Decides about one row at `now`; admitting a probe makes the breaker half-open.
    pub fn admit(&mut self, now: DateTime<Utc>) -> Admission {
        match self.state {
            BreakerState::Closed => Admission::Send,
            BreakerState::Open {
                since,
                next_probe,
                backoff,
            } if now >= next_probe => {
                self.state = BreakerState::HalfOpen {
                    since,
                    probing_since: now,
                    backoff,
                };
                Admission::Probe
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => Admission::Hold,
        }
    }

    /// Records how a send admitted by [`Breaker::admit`] ended, at `now`. `probe` says
    /// whether it was the probe: only the probe's end leaves the half-open state
    /// (other sends may still be finishing from before the breaker opened).
    pub fn record(&mut self, outcome: Outcome, probe: bool, now: DateTime<Utc>) {
        match outcome {
            Outcome::Answered => {
                self.state = BreakerState::Closed;
                self.consecutive_timeouts = 0;
                self.first_timeout = None;
            }
            Outcome::TimedOut => {
                self.consecutive_timeouts = self.consecutive_timeouts.saturating_add(1);
                let since = *self.first_timeout.get_or_insert(now);
                match self.state {
                    BreakerState::Closed
                        if self.config.threshold > 0
                            && self.consecutive_timeouts >= self.config.threshold =>
                    {
                        self.open(since, self.config.backoff, now);
                    }
                    BreakerState::HalfOpen { since, backoff, .. } if probe => {
                        let doubled = backoff.saturating_mul(2).min(self.config.backoff_max);
                        self.open(since, doubled, now);
                    }
                    _ => {}
                }
            }
            Outcome::Inconclusive => {
                if let BreakerState::HalfOpen { since, backoff, .. } = self.state
                    && probe
                {
                    // The probe said nothing about the chain: probe again soon, at the
                    // same backoff.
                    self.state = BreakerState::Open {
                        since,
                        next_probe: now,
                        backoff,
                    };
                }
            }
        }
    }

    fn open(&mut self, since: DateTime<Utc>, backoff: Duration, now: DateTime<Utc>) {
        let next_probe = chrono::Duration::from_std(backoff)
            .ok()
            .and_then(|wait| now.checked_add_signed(wait))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.state = BreakerState::Open {
            since,
            next_probe,
            backoff,
        };
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            threshold: 3,
            backoff: Duration::from_secs(30),
            backoff_max: Duration::from_secs(300),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn next_probe(b: &Breaker) -> DateTime<Utc> {
        match b.state() {
            BreakerState::Open { next_probe, .. } => next_probe,
            other => panic!("not open: {other:?}"),
        }
    }

    #[test]
    fn opens_after_the_threshold_of_consecutive_timeouts_only() {
        let mut b = Breaker::new(config());
        for t in 0..2 {
            assert_eq!(b.admit(at(t)), Admission::Send);
            b.record(Outcome::TimedOut, false, at(t));
        }
        // An answer breaks the run.
        b.record(Outcome::Answered, false, at(3));
        assert_eq!(b.consecutive_timeouts(), 0);
        // Broker trouble says nothing about the chain.
        b.record(Outcome::Inconclusive, false, at(4));
        for t in 10..13 {
            assert_eq!(b.state(), BreakerState::Closed);
            b.record(Outcome::TimedOut, false, at(t));
        }
        assert_eq!(
            b.state(),
            BreakerState::Open {
                since: at(10),
                next_probe: at(12 + 30),
                backoff: Duration::from_secs(30),
            }
        );
        assert_eq!(b.consecutive_timeouts(), 3);
        assert_eq!(b.state().gauge(), 1);
    }

    #[test]
    fn an_open_breaker_holds_rows_until_its_probe_is_due_then_lets_one_go() {
        let mut b = Breaker::new(config());
        for _ in 0..3 {
            b.record(Outcome::TimedOut, false, at(0));
        }
        assert!(b.holds(at(29)));
        assert_eq!(b.admit(at(29)), Admission::Hold);
        assert!(!b.holds(at(30)));
        assert_eq!(b.admit(at(30)), Admission::Probe);
        assert_eq!(b.state().label(), "half_open");
        assert_eq!(b.state().gauge(), 2);
        // One probe at a time.
        assert!(b.holds(at(31)));
        assert_eq!(b.admit(at(31)), Admission::Hold);
        // A send from before the breaker opened ends: the probe is still out.
        b.record(Outcome::TimedOut, false, at(32));
        assert_eq!(b.state().label(), "half_open");
    }

    #[test]
    fn unanswered_probes_double_the_backoff_up_to_the_cap() {
        let mut b = Breaker::new(config());
        for _ in 0..3 {
            b.record(Outcome::TimedOut, false, at(0));
        }
        let mut waits = Vec::new();
        for _ in 0..6 {
            let mut now = next_probe(&b);
            assert_eq!(b.admit(now), Admission::Probe);
            now += chrono::Duration::seconds(10);
            b.record(Outcome::TimedOut, true, now);
            waits.push((next_probe(&b) - now).num_seconds());
        }
        assert_eq!(waits, [60, 120, 240, 300, 300, 300]);
        // It still says since when the chain has been silent.
        assert!(matches!(b.state(), BreakerState::Open { since, .. } if since == at(0)));
    }

    #[test]
    fn any_answer_closes_it_and_an_inconclusive_probe_is_retried_soon() {
        let mut b = Breaker::new(config());
        for _ in 0..3 {
            b.record(Outcome::TimedOut, false, at(0));
        }
        assert_eq!(b.admit(at(30)), Admission::Probe);
        b.record(Outcome::Inconclusive, true, at(31));
        assert_eq!(
            b.state(),
            BreakerState::Open {
                since: at(0),
                next_probe: at(31),
                backoff: Duration::from_secs(30),
            }
        );
        assert_eq!(b.admit(at(31)), Admission::Probe);
        b.record(Outcome::Answered, true, at(32));
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.consecutive_timeouts(), 0);
        assert_eq!(b.admit(at(32)), Admission::Send);
        // A late answer to an old send closes an open breaker too.
        for _ in 0..3 {
            b.record(Outcome::TimedOut, false, at(40));
        }
        b.record(Outcome::Answered, false, at(41));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_zero_threshold_never_opens() {
        let mut b = Breaker::new(BreakerConfig {
            threshold: 0,
            ..config()
        });
        for t in 0..100 {
            b.record(Outcome::TimedOut, false, at(t));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(at(100)), Admission::Send);
    }

    #[test]
    fn the_state_serialises_with_its_label_and_times() {
        let state = BreakerState::Open {
            since: at(0),
            next_probe: at(30),
            backoff: Duration::from_secs(30),
        };
        let json = serde_json::to_value(state).unwrap();
        assert_eq!(json["state"], "open");
        assert!(
            json["since"]
                .as_str()
                .unwrap()
                .starts_with("2023-11-14T22:13:20")
        );
        assert!(json.get("backoff").is_none());
    }
}
