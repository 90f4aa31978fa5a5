//! The record topics' breakers ([`breaker`](super::breaker)) as the relay uses them:
//! which topics are on hold (their rows are not claimed), whether a row may go (or goes
//! as the probe), each send's outcome fed back (logged when a topic goes on hold or
//! comes back), and how each topic stands ([`RecordTopicStatus`]).

use chrono::{DateTime, Utc};
use mes_core::codec::Topic;

use super::breaker::{Admission, BreakerState, Outcome};
use super::{Inner, lock};

/// How the relay stands with one record topic, for `/health/ready`, `/metrics` and the
/// console ("the chain has not answered BLK_Rec since 10:42; next try 10:52").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordTopicStatus {
    /// The topic.
    pub topic: Topic,
    /// The Kafka topic its rows are sent to (the configured name).
    pub name: String,
    /// Its breaker's state.
    pub state: BreakerState,
    /// Sends in a row that got no answer.
    pub consecutive_timeouts: u32,
}

impl RecordTopicStatus {
    /// Since when the chain has not answered, while the topic is on hold.
    pub fn since(&self) -> Option<DateTime<Utc>> {
        match self.state {
            BreakerState::Closed => None,
            BreakerState::Open { since, .. } | BreakerState::HalfOpen { since, .. } => Some(since),
        }
    }

    /// When the next probe goes (open), or went (half-open: being sent now).
    pub fn next_try(&self) -> Option<DateTime<Utc>> {
        match self.state {
            BreakerState::Closed => None,
            BreakerState::Open { next_probe, .. } => Some(next_probe),
            BreakerState::HalfOpen { probing_since, .. } => Some(probing_since),
        }
    }
}

/// The topics with a breaker: those the chain may leave unanswered.
pub(super) const RECORD_TOPICS: [Topic; 2] = [Topic::RecordType, Topic::Record];

impl Inner {
    /// Names (default and configured) of the topics on hold at `now`, for the claim.
    pub(super) fn held_topics(&self, now: DateTime<Utc>) -> Vec<String> {
        let topics = &self.bridge.config().topics;
        let mut names = Vec::new();
        for (topic, breaker) in lock(&self.breakers).iter() {
            if breaker.holds(now) {
                names.push(topic.name().to_owned());
                let configured = topics.request(*topic);
                if configured != topic.name() {
                    names.push(configured.to_owned());
                }
            }
        }
        names
    }

    pub(super) fn admit(&self, topic: Topic) -> Admission {
        let now = Utc::now();
        let mut breakers = lock(&self.breakers);
        let Some((_, breaker)) = breakers.iter_mut().find(|(t, _)| *t == topic) else {
            return Admission::Send;
        };
        let admission = breaker.admit(now);
        if admission == Admission::Probe {
            tracing::info!(relay = %self.config.name, topic = topic.name(), "probing a topic on hold with one row");
        }
        admission
    }

    pub(super) fn record(&self, topic: Topic, outcome: Outcome, probe: bool) {
        let now = Utc::now();
        let mut breakers = lock(&self.breakers);
        let Some((_, breaker)) = breakers.iter_mut().find(|(t, _)| *t == topic) else {
            return;
        };
        let before = breaker.state();
        breaker.record(outcome, probe, now);
        let name = &self.config.name;
        match (before, breaker.state()) {
            (
                BreakerState::Closed,
                BreakerState::Open {
                    since, next_probe, ..
                },
            ) => {
                tracing::warn!(
                    relay = %name,
                    topic = topic.name(),
                    %since,
                    %next_probe,
                    "the chain does not answer this topic: its rows are on hold, probed once per backoff period"
                );
            }
            (BreakerState::Open { .. } | BreakerState::HalfOpen { .. }, BreakerState::Closed) => {
                tracing::info!(relay = %name, topic = topic.name(), "the chain answers this topic again: its rows go out");
            }
            _ => {}
        }
    }

    /// Why a held row waits, as stored in the row (times in UTC).
    pub(super) fn hold_note(&self, topic: Topic) -> String {
        let status = lock(&self.breakers)
            .iter()
            .find(|(t, _)| *t == topic)
            .map(|(_, b)| b.state());
        let (since, next) = match status {
            Some(BreakerState::Open {
                since, next_probe, ..
            }) => (since, next_probe),
            Some(BreakerState::HalfOpen {
                since,
                probing_since,
                ..
            }) => (since, probing_since),
            _ => return format!("on hold: {} is being probed", topic.name()),
        };
        format!(
            "on hold: the chain has not answered {} since {} UTC; next try {} UTC",
            topic.name(),
            since.format("%H:%M:%S"),
            next.format("%H:%M:%S"),
        )
    }
}
