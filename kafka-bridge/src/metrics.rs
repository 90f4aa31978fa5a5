//! What the bridge, the relay and the server share to expose their figures through
//! `prometheus-client`: the latency buckets, and the writing of figures that are read
//! from live state at each scrape (requests waiting, fences, breakers) instead of being
//! copied into gauges whenever that state changes.

use std::fmt;
use std::hash::Hash;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds of the latency buckets, in seconds (Prometheus `le`): the same for
/// chain round trips and HTTP calls, so that their histograms can be compared.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// A histogram over [`LATENCY_BUCKETS`]: the constructor of every latency family.
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Adds a member to `family` for each of `labels`, at zero until counted: a series
/// that appears with its first increment hides that increment from `rate()` and
/// `increase()`.
pub fn show_at_zero<S, M, C>(family: &Family<S, M, C>, labels: impl IntoIterator<Item = S>)
where
    S: Clone + Hash + Eq,
    C: MetricConstructor<M>,
{
    for label in labels {
        drop(family.get_or_create(&label));
    }
}

/// Registers plain counters into `registry`, each as its name (without `_total`, which
/// the encoding adds), its help and the counter.
pub fn register_counters<const N: usize>(
    registry: &mut Registry,
    counters: [(&str, &str, &Counter); N],
) {
    for (name, help, counter) in counters {
        registry.register(name, help, counter.clone());
    }
}

/// Writes one unlabelled metric read at this scrape, for a
/// [`Collector`](prometheus_client::collector::Collector). `help` ends with a full
/// stop, as the registry writes the help of registered metrics.
pub fn sample(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: impl EncodeMetric,
) -> fmt::Result {
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

/// Writes one metric read at this scrape with one label, a value per member (e.g.
/// `mes_chain_fence_up{shape="list"}`), for a
/// [`Collector`](prometheus_client::collector::Collector).
pub fn sample_family<M: EncodeMetric + TypedMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    label: &str,
    members: impl IntoIterator<Item = (&'static str, M)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, unit, M::TYPE)?;
    for (value, metric) in members {
        metric.encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}
