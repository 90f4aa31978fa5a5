//! `/metrics` in Prometheus text format: HTTP requests per endpoint (counts and
//! latency histograms, from a fairing), the bridge's per-topic figures, timeouts,
//! dropped replies by reason, the outbox depth and the outbox relay's counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kafka_bridge::bridge::{Histogram, HistogramSnapshot, LATENCY_BUCKETS_MS, MetricsSnapshot};
use kafka_bridge::relay::RelayStatus;
use mes_core::db::outbox::OutboxDepth;
use rocket::fairing::{Fairing, Info, Kind};
use rocket::{Data, Request, Response};

/// Per-endpoint HTTP figures; the fairing that fills them is [`HttpMetrics::fairing`].
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// Requests by (method, route, status).
    counts: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// Latency by (method, route).
    latency: Mutex<BTreeMap<(String, String), Arc<Histogram>>>,
    /// Requests received and not yet answered: shutdown waits for them.
    in_flight: Arc<AtomicUsize>,
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

    fn record(&self, method: &str, route: &str, status: u16, started: Instant) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts
                .entry((method.to_owned(), route.to_owned(), status))
                .or_default() += 1;
        }
        let histogram = self.latency.lock().ok().map(|mut latency| {
            Arc::clone(
                latency
                    .entry((method.to_owned(), route.to_owned()))
                    .or_default(),
            )
        });
        if let Some(histogram) = histogram {
            histogram.observe(started.elapsed());
        }
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
            &route,
            response.status().code,
            started,
        );
    }
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (le, count) in LATENCY_BUCKETS_MS.iter().zip(&h.cumulative) {
        let le = *le as f64 / 1000.0;
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(
        out,
        "{name}_sum{{{labels}}} {}",
        h.sum_us as f64 / 1_000_000.0
    );
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// Everything `/metrics` shows, as Prometheus text (format 0.0.4).
pub fn render(
    http: &HttpMetrics,
    bridge: &MetricsSnapshot,
    outbox: Option<OutboxDepth>,
    pending: usize,
) -> String {
    let mut out = String::new();
    out.push_str("# HELP mes_http_requests_total HTTP requests by method, route and status.\n");
    out.push_str("# TYPE mes_http_requests_total counter\n");
    if let Ok(counts) = http.counts.lock() {
        for ((method, route, status), n) in counts.iter() {
            let _ = writeln!(
                out,
                "mes_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                label(route)
            );
        }
    }
    out.push_str(
        "# HELP mes_http_request_duration_seconds Time from request to response, by route.\n",
    );
    out.push_str("# TYPE mes_http_request_duration_seconds histogram\n");
    let latencies: Vec<((String, String), Arc<Histogram>)> = http
        .latency
        .lock()
        .map(|l| l.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect())
        .unwrap_or_default();
    for ((method, route), h) in latencies {
        let labels = format!("method=\"{method}\",route=\"{}\"", label(&route));
        histogram(
            &mut out,
            "mes_http_request_duration_seconds",
            &labels,
            &h.snapshot(),
        );
    }

    out.push_str("# HELP mes_chain_requests_total Requests published to each chain topic.\n");
    out.push_str("# TYPE mes_chain_requests_total counter\n");
    for t in &bridge.per_topic {
        let _ = writeln!(
            out,
            "mes_chain_requests_total{{topic=\"{}\"}} {}",
            t.topic.name(),
            t.requests
        );
    }
    out.push_str(
        "# HELP mes_chain_request_duration_seconds Time from publishing a request to its reply.\n",
    );
    out.push_str("# TYPE mes_chain_request_duration_seconds histogram\n");
    for t in &bridge.per_topic {
        let labels = format!("topic=\"{}\"", t.topic.name());
        histogram(
            &mut out,
            "mes_chain_request_duration_seconds",
            &labels,
            &t.latency,
        );
    }
    let counters: [(&str, &str, u64); 8] = [
        (
            "mes_chain_behind_total",
            "Calls refused at once because an earlier reply of their shape is outstanding (503 chain_behind).",
            bridge.chain_behind,
        ),
        (
            "mes_chain_timeouts_total",
            "Chain requests that got no reply in time.",
            bridge.timeouts,
        ),
        (
            "mes_chain_overloaded_total",
            "Calls refused because too many requests were in flight.",
            bridge.overloaded,
        ),
        (
            "mes_chain_broker_errors_total",
            "Requests the broker did not take.",
            bridge.broker_errors,
        ),
        (
            "mes_chain_errors_total",
            "Replies that carried an error.",
            bridge.chain_errors,
        ),
        (
            "mes_chain_replies_delivered_total",
            "Replies handed to a waiting request.",
            bridge.delivered,
        ),
        (
            "mes_chain_coalesced_total",
            "List calls that joined an identical request in flight.",
            bridge.coalesced,
        ),
        (
            "mes_chain_consumer_errors_total",
            "Errors reported by the reply consumer.",
            bridge.consumer_errors,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    out.push_str("# HELP mes_chain_replies_dropped_total Replies dropped, by reason.\n");
    out.push_str("# TYPE mes_chain_replies_dropped_total counter\n");
    for (reason, n) in &bridge.dropped {
        let _ = writeln!(
            out,
            "mes_chain_replies_dropped_total{{reason=\"{reason}\"}} {n}"
        );
    }
    out.push_str("# HELP mes_chain_pending Requests waiting for a reply now.\n");
    out.push_str("# TYPE mes_chain_pending gauge\n");
    let _ = writeln!(out, "mes_chain_pending {pending}");
    if let Some(depth) = outbox {
        out.push_str("# HELP mes_outbox_rows Outbox rows by status.\n");
        out.push_str("# TYPE mes_outbox_rows gauge\n");
        for (status, n) in [
            ("pending", depth.pending),
            ("in_flight", depth.in_flight),
            ("done", depth.done),
            ("failed", depth.failed),
        ] {
            let _ = writeln!(out, "mes_outbox_rows{{status=\"{status}\"}} {n}");
        }
    }
    out
}

/// Appends whether replies are verified and how often `auto` matching fell back to
/// legacy: an operator who chose `MES_REPLY_TRUST=unsigned` sees it here too.
pub fn render_trust(out: &mut String, bridge: &kafka_bridge::bridge::Bridge) {
    out.push_str(
        "# HELP mes_chain_reply_verification 1 when only replies signed by the gateway's key are taken, 0 when unsigned replies are (MES_REPLY_TRUST=unsigned).\n\
         # TYPE mes_chain_reply_verification gauge\n",
    );
    let _ = writeln!(
        out,
        "mes_chain_reply_verification {}",
        u8::from(bridge.verifies_replies())
    );
    out.push_str(
        "# HELP mes_chain_matching_fallbacks_total Times auto matching fell back from correlation ids to the token, on sustained evidence.\n\
         # TYPE mes_chain_matching_fallbacks_total counter\n",
    );
    let _ = writeln!(
        out,
        "mes_chain_matching_fallbacks_total {}",
        bridge.matching_fallbacks()
    );
}

/// The reply-shape fences (docs/protocol.md §9) in Prometheus text, appended to
/// [`render`]'s output: alert on `mes_chain_fence_up` staying 1.
pub fn render_fences(out: &mut String, bridge: &kafka_bridge::bridge::Bridge) {
    use kafka_bridge::bridge::Shape;
    let now = Instant::now();
    let fences = bridge.fences();
    out.push_str(
        "# HELP mes_chain_fence_up 1 while requests of this reply shape wait for an outstanding reply.\n\
         # TYPE mes_chain_fence_up gauge\n",
    );
    for shape in Shape::ALL {
        let up = fences.iter().any(|f| f.shape == shape);
        let _ = writeln!(
            out,
            "mes_chain_fence_up{{shape=\"{shape}\"}} {}",
            u8::from(up)
        );
    }
    out.push_str(
        "# HELP mes_chain_fence_age_seconds How long the outstanding reply of this shape has been awaited (0 when none).\n\
         # TYPE mes_chain_fence_age_seconds gauge\n",
    );
    for shape in Shape::ALL {
        let age = fences.iter().find(|f| f.shape == shape).map_or(0.0, |f| {
            now.saturating_duration_since(f.since).as_secs_f64()
        });
        let _ = writeln!(
            out,
            "mes_chain_fence_age_seconds{{shape=\"{shape}\"}} {age}"
        );
    }
    let counts = bridge.fence_counts();
    out.push_str(
        "# HELP mes_chain_fences_total Fences raised, lifted by their late reply, or expired (reply lost).\n\
         # TYPE mes_chain_fences_total counter\n",
    );
    for (outcome, n) in [
        ("raised", counts.raised),
        ("lifted_by_reply", counts.lifted_by_reply),
        ("expired", counts.expired),
    ] {
        let _ = writeln!(out, "mes_chain_fences_total{{outcome=\"{outcome}\"}} {n}");
    }
    out.push_str(
        "# HELP mes_chain_unmatched_answers_total Operators' answers sent while background work's reply was outstanding, confirmed from the chain's list.\n\
         # TYPE mes_chain_unmatched_answers_total counter\n",
    );
    let _ = writeln!(
        out,
        "mes_chain_unmatched_answers_total {}",
        counts.unmatched
    );
}

/// The outbox relay's counters in Prometheus text, appended to [`render`]'s output:
/// a relay whose `passes` stand still is stuck, one `waiting_for_token` sends nothing.
pub fn render_relay(out: &mut String, relay: &RelayStatus) {
    let counters: [(&str, &str, u64); 6] = [
        (
            "mes_outbox_relay_sent_total",
            "Outbox rows handed to the bridge (every attempt).",
            relay.sent,
        ),
        (
            "mes_outbox_relay_done_total",
            "Outbox rows the chain answered (already-exists included).",
            relay.done,
        ),
        (
            "mes_outbox_relay_failed_total",
            "Outbox rows the chain refused for good.",
            relay.failed,
        ),
        (
            "mes_outbox_relay_retried_total",
            "Outbox rows put back for a later attempt.",
            relay.retried,
        ),
        (
            "mes_outbox_relay_database_errors_total",
            "Database errors of the relay.",
            relay.database_errors,
        ),
        (
            "mes_outbox_relay_passes_total",
            "Relay batches run, empty ones included.",
            relay.passes,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP mes_outbox_relay_waiting_for_token 1 while no master token is configured (nothing is sent).\n\
         # TYPE mes_outbox_relay_waiting_for_token gauge\n\
         mes_outbox_relay_waiting_for_token {}",
        u8::from(relay.waiting_for_token)
    );
    let _ = writeln!(
        out,
        "# HELP mes_outbox_relay_held_total Outbox rows put back unsent because their topic was on hold.\n\
         # TYPE mes_outbox_relay_held_total counter\n\
         mes_outbox_relay_held_total {}",
        relay.held
    );
    out.push_str(
        "# HELP mes_relay_topic_state The relay's breaker per record topic: 0 closed, 1 open (on hold: the chain does not answer), 2 half-open (probing).\n",
    );
    out.push_str("# TYPE mes_relay_topic_state gauge\n");
    for topic in &relay.topics {
        let _ = writeln!(
            out,
            "mes_relay_topic_state{{topic=\"{}\"}} {}",
            topic.topic.name(),
            topic.state.gauge()
        );
    }
}
