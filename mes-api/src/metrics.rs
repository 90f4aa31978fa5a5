//! `/metrics`: one `prometheus-client` registry per [`App`](crate::app::App), not a
//! global recorder, so that several servers in one process (the tests) keep their
//! figures apart. It holds the HTTP figures (from a fairing), the bridge's, the
//! relay's, the live updates' and the outbox's depth, written as OpenMetrics text.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use chrono::NaiveDateTime;
use kafka_bridge::bridge::Bridge;
use kafka_bridge::metrics::{latency_histogram, show_at_zero};
use kafka_bridge::relay::Relay;
use mes_core::db::notifications::NotificationCounts;
use mes_core::db::outbox::OutboxDepth;
use prometheus_client::encoding::{EncodeLabelSet, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use rocket::fairing::{Fairing, Info, Kind};
use rocket::{Data, Request, Response};

use crate::events::Hub;

/// `/metrics` of one server: its registry, filled once when the [`App`](crate::app::App)
/// is built.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// A registry holding the figures of `http`, `bridge`, `relay` and `events`.
    pub fn new(http: &HttpMetrics, bridge: &Bridge, relay: &Relay, events: &Hub) -> Metrics {
        let mut registry = Registry::default();
        http.register(&mut registry);
        bridge.register_metrics(&mut registry);
        relay.register_metrics(&mut registry);
        events.register_metrics(&mut registry);
        Metrics { registry }
    }

    /// Everything, as OpenMetrics text, with the outbox's depth and its oldest
    /// unsettled row's creation as read for this scrape (`None`, the database did not
    /// answer: no `mes_outbox_rows` nor `mes_outbox_oldest_pending_seconds` at all
    /// rather than stale ones).
    ///
    /// The webhook notifications (`notifications`, read likewise) give
    /// `mes_notification_rows{status}` and `mes_notification_oldest_pending_seconds`
    /// (0 when none is pending).
    pub fn encode(
        &self,
        outbox: Option<(OutboxDepth, Option<NaiveDateTime>)>,
        notifications: Option<NotificationCounts>,
    ) -> String {
        // The depth is this scrape's, so it goes in a registry of this scrape's: no
        // shared gauges that two scrapes at once could both be setting.
        let mut scrape = Registry::default();
        if let Some((depth, oldest)) = outbox {
            let age = Gauge::<f64, AtomicU64>::default();
            age.set(oldest.map_or(0.0, age_seconds));
            scrape.register_with_unit(
                "mes_outbox_oldest_pending",
                "Age of the oldest outbox row not yet settled, pending or in flight (0 when none): a growing value is a backlog that does not drain",
                Unit::Seconds,
                age,
            );
            let rows = Family::<StatusLabel, Gauge>::default();
            for (status, n) in depth.by_status() {
                rows.get_or_create(&StatusLabel { status }).set(n);
            }
            scrape.register(
                "mes_outbox_rows",
                "Outbox rows by status (all instances)",
                rows,
            );
        }
        if let Some(counts) = notifications {
            let rows = Family::<StatusLabel, Gauge>::default();
            for (status, n) in [
                ("pending", counts.pending),
                ("delivered", counts.delivered),
                ("failed", counts.failed),
            ] {
                rows.get_or_create(&StatusLabel { status }).set(n);
            }
            scrape.register(
                "mes_notification_rows",
                "Webhook notifications by status (all instances)",
                rows,
            );
            let age = counts.oldest_pending.map_or(0.0, age_seconds);
            let oldest = Gauge::<f64, AtomicU64>::default();
            oldest.set(age);
            scrape.register_with_unit(
                "mes_notification_oldest_pending",
                "Age of the oldest pending webhook notification (0 when none is pending)",
                Unit::Seconds,
                oldest,
            );
        }
        let mut out = String::new();
        let written = text::encode_registry(&mut out, &self.registry)
            .and_then(|()| text::encode_registry(&mut out, &scrape))
            .and_then(|()| text::encode_eof(&mut out));
        if written.is_err() {
            tracing::error!("/metrics: a collector failed; the answer is incomplete");
        }
        out
    }
}

/// Seconds from `at` (stored UTC) to now; 0 for a time not yet reached.
fn age_seconds(at: NaiveDateTime) -> f64 {
    let age = mes_core::db::now() - at;
    age.num_milliseconds().max(0) as f64 / 1000.0
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

/// The `outcome` label of the poller's and the webhooks' counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Counters by outcome (`mes_chain_polls_total{outcome}`,
/// `mes_webhook_notifications_total{outcome}`). Cheap to clone; clones count together.
#[derive(Clone, Debug, Default)]
pub struct OutcomeCounters(Family<OutcomeLabel, Counter>);

impl OutcomeCounters {
    /// Shows each of `outcomes` from now on, at zero until counted.
    pub fn show(&self, outcomes: &[&'static str]) {
        let labels = outcomes.iter().map(|&outcome| OutcomeLabel { outcome });
        show_at_zero(&self.0, labels);
    }

    /// Counts one `outcome`.
    pub fn count(&self, outcome: &'static str) {
        self.0.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Registers these counters as `name` into `registry`; none is written until one
    /// is shown or counted.
    pub fn register(&self, registry: &mut Registry, name: &str, help: &str) {
        registry.register(name, help, self.0.clone());
    }
}

/// Per-endpoint HTTP figures; the fairing that fills them is [`HttpMetrics::fairing`].
#[derive(Debug)]
pub struct HttpMetrics {
    /// Requests by method, route and status.
    requests: Family<RequestLabels, Counter>,
    /// Latency by method and route.
    latency: Family<RouteLabels, Histogram>,
    /// Requests received and not yet answered: shutdown waits for them.
    in_flight: Arc<AtomicUsize>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            in_flight: Arc::default(),
        }
    }
}

struct Started(Instant);

/// One request counted in [`HttpMetrics::in_flight`]: uncounted when its response is
/// ready, or when it is dropped unanswered (the client went away).
struct InFlight {
    count: Arc<AtomicUsize>,
    answered: AtomicBool,
}

impl InFlight {
    fn done(&self) {
        if !self.answered.swap(true, Ordering::AcqRel) {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.done();
    }
}

/// The fairing that times every request.
#[derive(Debug)]
pub struct MetricsFairing(pub Arc<HttpMetrics>);

impl HttpMetrics {
    /// A fairing that records into `self`.
    pub fn fairing(self: &Arc<Self>) -> MetricsFairing {
        MetricsFairing(Arc::clone(self))
    }

    /// HTTP requests received and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Waits until every HTTP request received so far is answered, for at most
    /// `within`; whether they all were. Shutdown calls it before it stops what those
    /// requests use (the bridge, the database).
    pub async fn wait_idle(&self, within: std::time::Duration) -> bool {
        let deadline = rocket::tokio::time::Instant::now() + within;
        loop {
            if self.in_flight() == 0 {
                return true;
            }
            if rocket::tokio::time::Instant::now() >= deadline {
                return false;
            }
            rocket::tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn record(&self, method: &'static str, route: String, status: u16, started: Instant) {
        self.latency
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "mes_http_requests",
            "HTTP requests by method, route and status",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "mes_http_request_duration",
            "Time from request to response, by route",
            Unit::Seconds,
            self.latency.clone(),
        );
    }
}

#[rocket::async_trait]
impl Fairing for MetricsFairing {
    fn info(&self) -> Info {
        Info {
            name: "HTTP metrics",
            kind: Kind::Request | Kind::Response,
        }
    }

    async fn on_request(&self, request: &mut Request<'_>, _: &mut Data<'_>) {
        request.local_cache(|| Started(Instant::now()));
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        request.local_cache(|| InFlight {
            count: Arc::clone(&self.0.in_flight),
            answered: AtomicBool::new(false),
        });
    }

    async fn on_response<'r>(&self, request: &'r Request<'_>, response: &mut Response<'r>) {
        // Answered: a streamed body (the event stream) ends with the server anyway.
        // (A request that skipped `on_request` gets an entry that counts nothing.)
        request
            .local_cache(|| InFlight {
                count: Arc::default(),
                answered: AtomicBool::new(true),
            })
            .done();
        let started = request.local_cache(|| Started(Instant::now())).0;
        // The route's pattern, not the path: ids must not explode the label space.
        let route = request
            .route()
            .map_or_else(|| "unmatched".to_owned(), |r| r.uri.path().to_string());
        self.0.record(
            request.method().as_str(),
            route,
            response.status().code,
            started,
        );
    }
}
