//! What the bridge, the relay and the server share to expose their figures through
//! `prometheus-client`: the latency buckets, and the writing of figures that are read
//! from live state at each scrape (requests waiting, fences, breakers) instead of being
//! copied into gauges whenever that state changes.

use std::fmt;
use std::hash::Hash;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

/// Upper bounds of the latency buckets, in seconds (Prometheus `le`): the same for
/// chain round trips and HTTP calls, so that their histograms can be compared.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// A histogram over [`LATENCY_BUCKETS`]: the constructor of every latency family.
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// `family` with a member for each of `labels`, at zero from the start: a series that
/// appears with its first increment hides that increment from `rate()` and
/// `increase()`.
pub fn with_members<S, M, C>(
    family: Family<S, M, C>,
    labels: impl IntoIterator<Item = S>,
) -> Family<S, M, C>
where
    S: Clone + Hash + Eq,
    C: MetricConstructor<M>,
{
    for label in labels {
        drop(family.get_or_create(&label));
    }
    family
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
