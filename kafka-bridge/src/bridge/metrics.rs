//! Counters and latency histograms of a bridge, cheap enough for every request
//! (relaxed atomics, no locks), read by the server's `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mes_core::codec::Topic;
use serde::Serialize;

use super::matcher::DropReason;

/// Upper bounds of the latency buckets, in milliseconds (Prometheus `le`).
pub const LATENCY_BUCKETS_MS: [u64; 14] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

/// A point-in-time copy of a [`Histogram`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HistogramSnapshot {
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS_MS`].
    pub cumulative: Vec<u64>,
    /// Observations.
    pub count: u64,
    /// Sum of observations, microseconds.
    pub sum_us: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        if let Some(i) = LATENCY_BUCKETS_MS.iter().position(|&le| ms < le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// A copy with cumulative buckets, as Prometheus expects.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            count: self.count.load(Ordering::Relaxed),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// Everything a bridge counts.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [AtomicU64; 6],
    latency: [Histogram; 6],
    pub(crate) coalesced: AtomicU64,
    pub(crate) delivered: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    pub(crate) timeouts: AtomicU64,
    pub(crate) overloaded: AtomicU64,
    pub(crate) broker_errors: AtomicU64,
    pub(crate) chain_errors: AtomicU64,
    pub(crate) consumer_errors: AtomicU64,
    pub(crate) chain_behind: AtomicU64,
}

fn topic_index(topic: Topic) -> usize {
    Topic::ALL.iter().position(|t| *t == topic).unwrap_or(0)
}

impl Metrics {
    pub(crate) fn sent(&self, topic: Topic) {
        self.requests[topic_index(topic)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn answered(&self, topic: Topic, elapsed: Duration) {
        self.latency[topic_index(topic)].observe(elapsed);
    }

    pub(crate) fn dropped(&self, reason: DropReason) {
        let i = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.dropped[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            per_topic: Topic::ALL
                .iter()
                .enumerate()
                .map(|(i, t)| TopicMetrics {
                    topic: *t,
                    requests: load(&self.requests[i]),
                    latency: self.latency[i].snapshot(),
                })
                .collect(),
            coalesced: load(&self.coalesced),
            delivered: load(&self.delivered),
            dropped: DropReason::ALL
                .iter()
                .enumerate()
                .map(|(i, r)| (r.label(), load(&self.dropped[i])))
                .collect(),
            timeouts: load(&self.timeouts),
            overloaded: load(&self.overloaded),
            broker_errors: load(&self.broker_errors),
            chain_errors: load(&self.chain_errors),
            consumer_errors: load(&self.consumer_errors),
            chain_behind: load(&self.chain_behind),
        }
    }
}

/// One topic's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicMetrics {
    /// The request topic.
    pub topic: Topic,
    /// Requests published to it.
    pub requests: u64,
    /// Time from publishing to the matching reply.
    pub latency: HistogramSnapshot,
}

/// A copy of a bridge's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Per request topic.
    pub per_topic: Vec<TopicMetrics>,
    /// Calls that joined an identical list request already in flight.
    pub coalesced: u64,
    /// Replies delivered to a waiting request.
    pub delivered: u64,
    /// Replies dropped, by reason.
    pub dropped: Vec<(&'static str, u64)>,
    /// Requests that got no reply in time.
    pub timeouts: u64,
    /// Calls refused because too many requests were in flight.
    pub overloaded: u64,
    /// Requests the broker did not take.
    pub broker_errors: u64,
    /// Replies that carried `error`.
    pub chain_errors: u64,
    /// Errors reported by the reply consumer.
    pub consumer_errors: u64,
    /// Calls refused because their reply shape was fenced ([`crate::Error::ChainBehind`]).
    pub chain_behind: u64,
}

impl MetricsSnapshot {
    /// Replies dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped
            .iter()
            .find(|(label, _)| *label == reason.label())
            .map_or(0, |(_, n)| *n)
    }

    /// Requests published to `topic`.
    pub fn requests(&self, topic: Topic) -> u64 {
        self.per_topic
            .iter()
            .find(|t| t.topic == topic)
            .map_or(0, |t| t.requests)
    }
}
