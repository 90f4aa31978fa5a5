//! What a bridge counts, as `prometheus-client` metrics it owns: recorded on every
//! request, registered into the server's registry by [`Bridge::register_metrics`], and
//! read back by [`Bridge::metrics`] for tests and benchmarks.

use std::sync::Weak;
use std::time::{Duration, Instant};

use mes_core::codec::Topic;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::matcher::{DropReason, Shape};
use super::{Bridge, Inner};
use crate::metrics::{latency_histogram, register_counters, sample, sample_family, show_at_zero};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: &'static str,
}

impl TopicLabel {
    fn of(topic: Topic) -> TopicLabel {
        TopicLabel {
            topic: topic.name(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Everything a bridge counts as it happens.
#[derive(Debug)]
pub(crate) struct Metrics {
    requests: Family<TopicLabel, Counter>,
    latency: Family<TopicLabel, Histogram>,
    dropped: Family<ReasonLabel, Counter>,
    pub(crate) coalesced: Counter,
    pub(crate) delivered: Counter,
    pub(crate) timeouts: Counter,
    pub(crate) overloaded: Counter,
    pub(crate) broker_errors: Counter,
    pub(crate) chain_errors: Counter,
    pub(crate) consumer_errors: Counter,
    pub(crate) chain_behind: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            dropped: Family::default(),
            coalesced: Counter::default(),
            delivered: Counter::default(),
            timeouts: Counter::default(),
            overloaded: Counter::default(),
            broker_errors: Counter::default(),
            chain_errors: Counter::default(),
            consumer_errors: Counter::default(),
            chain_behind: Counter::default(),
        };
        show_at_zero(&metrics.requests, Topic::ALL.map(TopicLabel::of));
        show_at_zero(&metrics.latency, Topic::ALL.map(TopicLabel::of));
        let reasons = DropReason::ALL.map(|r| ReasonLabel { reason: r.label() });
        show_at_zero(&metrics.dropped, reasons);
        metrics
    }
}

impl Metrics {
    pub(crate) fn sent(&self, topic: Topic) {
        self.requests.get_or_create(&TopicLabel::of(topic)).inc();
    }

    pub(crate) fn answered(&self, topic: Topic, elapsed: Duration) {
        self.latency
            .get_or_create(&TopicLabel::of(topic))
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn dropped(&self, reason: DropReason) {
        self.dropped
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc();
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "mes_chain_requests",
            "Requests published to each chain topic",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "mes_chain_request_duration",
            "Time from publishing a request to its reply",
            Unit::Seconds,
            self.latency.clone(),
        );
        register_counters(
            registry,
            [
                (
                    "mes_chain_behind",
                    "Calls refused at once because an earlier reply of their shape is outstanding (503 chain_behind)",
                    &self.chain_behind,
                ),
                (
                    "mes_chain_timeouts",
                    "Chain requests that got no reply in time",
                    &self.timeouts,
                ),
                (
                    "mes_chain_overloaded",
                    "Calls refused because too many requests were in flight",
                    &self.overloaded,
                ),
                (
                    "mes_chain_broker_errors",
                    "Requests the broker did not take",
                    &self.broker_errors,
                ),
                (
                    "mes_chain_errors",
                    "Replies that carried an error",
                    &self.chain_errors,
                ),
                (
                    "mes_chain_replies_delivered",
                    "Replies handed to a waiting request",
                    &self.delivered,
                ),
                (
                    "mes_chain_coalesced",
                    "List calls that joined an identical request in flight",
                    &self.coalesced,
                ),
                (
                    "mes_chain_consumer_errors",
                    "Errors reported by the reply consumer",
                    &self.consumer_errors,
                ),
            ],
        );
        registry.register(
            "mes_chain_replies_dropped",
            "Replies dropped, by reason",
            self.dropped.clone(),
        );
    }

    fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            requests: Topic::ALL
                .iter()
                .map(|t| (*t, count(&self.requests, &TopicLabel::of(*t))))
                .collect(),
            coalesced: self.coalesced.get(),
            delivered: self.delivered.get(),
            dropped: DropReason::ALL
                .iter()
                .map(|r| {
                    let label = ReasonLabel { reason: r.label() };
                    (r.label(), count(&self.dropped, &label))
                })
                .collect(),
            timeouts: self.timeouts.get(),
            overloaded: self.overloaded.get(),
            broker_errors: self.broker_errors.get(),
            chain_errors: self.chain_errors.get(),
            consumer_errors: self.consumer_errors.get(),
            chain_behind: self.chain_behind.get(),
        }
    }
}

fn count<S: Clone + std::hash::Hash + Eq>(family: &Family<S, Counter>, label: &S) -> u64 {
    family.get(label).map_or(0, |c| c.get())
}

/// What a bridge keeps as state rather than counts as it happens (requests waiting,
/// fences, how replies are matched and trusted), read at each scrape. Weak: a
/// registry outliving its bridge shows none of it rather than keeping it alive.
#[derive(Debug)]
struct StateCollector(Weak<Inner>);

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(inner) = self.0.upgrade() else {
            return Ok(());
        };
        let e = &mut encoder;
        sample(
            e,
            "mes_chain_pending",
            "Requests waiting for a reply now.",
            None,
            ConstGauge::new(inner.matcher.pending()),
        )?;
        let now = Instant::now();
        let fences = inner.matcher.fences(now);
        let fence = |shape| fences.iter().find(|f| f.shape == shape);
        sample_family(
            e,
            "mes_chain_fence_up",
            "1 while requests of this reply shape wait for an outstanding reply.",
            None,
            "shape",
            Shape::ALL.map(|s| (s.label(), ConstGauge::new(i64::from(fence(s).is_some())))),
        )?;
        sample_family(
            e,
            "mes_chain_fence_age",
            "How long the outstanding reply of this shape has been awaited (0 when none).",
            Some(&Unit::Seconds),
            "shape",
            Shape::ALL.map(|s| {
                let age = fence(s).map_or(0.0, |f| {
                    now.saturating_duration_since(f.since).as_secs_f64()
                });
                (s.label(), ConstGauge::new(age))
            }),
        )?;
        let counts = inner.matcher.fence_counts();
        sample_family(
            e,
            "mes_chain_fences",
            "Fences raised, lifted by their late reply, or expired (reply lost).",
            None,
            "outcome",
            [
                ("raised", ConstCounter::new(counts.raised)),
                ("lifted_by_reply", ConstCounter::new(counts.lifted_by_reply)),
                ("expired", ConstCounter::new(counts.expired)),
            ],
        )?;
        sample(
            e,
            "mes_chain_unmatched_answers",
            "Operators' answers sent while background work's reply was outstanding, confirmed from the chain's list.",
            None,
            ConstCounter::new(counts.unmatched),
        )?;
        sample(
            e,
            "mes_chain_reply_verification",
            "1 when only replies signed by the gateway's key are taken, 0 when unsigned replies are (MES_REPLY_TRUST=unsigned).",
            None,
            ConstGauge::new(i64::from(inner.config.gateway_key.is_some())),
        )?;
        sample(
            e,
            "mes_chain_matching_fallbacks",
            "Times auto matching fell back from correlation ids to the token, on sustained evidence.",
            None,
            ConstCounter::new(inner.matcher.fallbacks()),
        )
    }
}

impl Bridge {
    /// Registers this bridge's figures (`mes_chain_*`) into `registry`: its counters
    /// and latency histograms, and what is read from its state at each scrape. One
    /// registry per server keeps several servers in one process apart.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.inner.metrics.register(registry);
        registry.register_collector(Box::new(StateCollector(std::sync::Arc::downgrade(
            &self.inner,
        ))));
    }

    /// A copy of the counters, read from the same metrics `/metrics` shows.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }
}

/// A copy of a bridge's counters, for tests and benchmarks that check what a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Requests published, per request topic.
    pub requests: Vec<(Topic, u64)>,
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
        self.requests
            .iter()
            .find(|(t, _)| *t == topic)
            .map_or(0, |(_, n)| *n)
    }
}
