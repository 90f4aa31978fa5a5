//! What a relay counts (`mes_outbox_relay_*`) and how its breakers stand
//! (`mes_relay_topic_state`), registered into the server's registry by
//! [`Relay::register_metrics`].

use std::sync::{Arc, Mutex, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use super::{Inner, Relay, lock};
use crate::metrics::{register_counters, sample_family};

/// The relay's counters, and the last error for the console.
#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) sent: Counter,
    pub(super) done: Counter,
    pub(super) failed: Counter,
    pub(super) retried: Counter,
    pub(super) database_errors: Counter,
    pub(super) passes: Counter,
    pub(super) held: Counter,
    /// Settled attempts by record topic and outcome (`mes_outbox_deliveries_total`).
    pub(super) deliveries: Family<DeliveryLabels, Counter>,
    /// 1 while no master token is configured.
    pub(super) waiting_for_token: Gauge,
    pub(super) last_error: Mutex<Option<(&'static str, String)>>,
}

/// The labels of `mes_outbox_deliveries_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DeliveryLabels {
    /// The record topic's name (`BLK_Rty`, `BLK_Rec` or the configured one).
    pub(super) topic: String,
    /// `delivered`, `failed` (refused by the chain), `capped` (past
    /// `MES_OUTBOX_MAX_ATTEMPTS`/`MES_OUTBOX_MAX_AGE`), `retried` (no answer: later),
    /// `released` (put back unsent) or `held` (its topic on hold).
    pub(super) outcome: &'static str,
}

impl Stats {
    /// Counts one settled attempt of a row of `topic`.
    pub(super) fn delivery(&self, topic: &str, outcome: &'static str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                topic: topic.to_owned(),
                outcome,
            })
            .inc();
    }

    fn register(&self, registry: &mut Registry) {
        register_counters(
            registry,
            [
                (
                    "mes_outbox_relay_sent",
                    "Outbox rows handed to the bridge (every attempt)",
                    &self.sent,
                ),
                (
                    "mes_outbox_relay_done",
                    "Outbox rows the chain answered (already-exists included)",
                    &self.done,
                ),
                (
                    "mes_outbox_relay_failed",
                    "Outbox rows the chain refused for good",
                    &self.failed,
                ),
                (
                    "mes_outbox_relay_retried",
                    "Outbox rows put back for a later attempt",
                    &self.retried,
                ),
                (
                    "mes_outbox_relay_database_errors",
                    "Database errors of the relay",
                    &self.database_errors,
                ),
                (
                    "mes_outbox_relay_passes",
                    "Relay batches run, empty ones included",
                    &self.passes,
                ),
                (
                    "mes_outbox_relay_held",
                    "Outbox rows put back unsent because their topic was on hold",
                    &self.held,
                ),
            ],
        );
        registry.register(
            "mes_outbox_deliveries",
            "Outbox rows settled by this relay, by record topic and outcome: delivered, failed (refused), capped (past the attempts or age cap), retried (no answer), released (unsent), held (topic on hold)",
            self.deliveries.clone(),
        );
        registry.register(
            "mes_outbox_relay_waiting_for_token",
            "1 while no master token is configured (nothing is sent)",
            self.waiting_for_token.clone(),
        );
    }
}

/// The breakers' states, read at each scrape. Weak: a registry outliving its relay
/// shows none of it rather than keeping it alive.
#[derive(Debug)]
struct BreakerCollector(Weak<Inner>);

impl Collector for BreakerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(inner) = self.0.upgrade() else {
            return Ok(());
        };
        let states: Vec<_> = lock(&inner.breakers)
            .iter()
            .map(|(topic, breaker)| {
                let state = i64::from(breaker.state().gauge());
                (topic.name(), ConstGauge::new(state))
            })
            .collect();
        sample_family(
            &mut encoder,
            "mes_relay_topic_state",
            "The relay's breaker per record topic: 0 closed, 1 open (on hold: the chain does not answer), 2 half-open (probing).",
            None,
            "topic",
            states,
        )
    }
}

impl Relay {
    /// Registers this relay's counters and its breakers' states into `registry`, for
    /// `/metrics`: a relay whose passes stand still is stuck, one waiting for a token
    /// sends nothing.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.inner.stats.register(registry);
        registry.register_collector(Box::new(BreakerCollector(Arc::downgrade(&self.inner))));
    }
}
