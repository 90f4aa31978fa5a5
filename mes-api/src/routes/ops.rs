//! For operations: liveness, readiness, metrics for Prometheus, the OpenAPI document.
//! None of these needs a key.

use kafka_bridge::relay::{RecordTopicStatus, RelayStatus};
use rocket::http::ContentType;
use rocket::serde::json::Json;
use rocket::{State, get};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::app::{App, not_ready};
use crate::config::ReplyVerification;
use crate::error::{ApiResult, Errors, NotReady};

/// The answer of the health endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
    /// `/health/ready` only: how the outbox and its relay stand. Informative: a
    /// backlog or a relay without a token does not make the server unready (it
    /// still takes changes, which are delivered later).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxHealth>,
    /// `/health/ready` only: how replies are matched, and whether the chain is behind.
    /// Informative, like `outbox`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainHealth>,
    /// `/health/ready` only: `on` when only replies signed by the gateway's key
    /// (`MES_GATEWAY_KEY_FILE`) are taken, `off` when any reply with the right token
    /// is (`MES_REPLY_TRUST=unsigned`): then anyone who can write to the reply topic
    /// can answer for the chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "on")]
    pub reply_verification: Option<&'static str>,
}

/// The chain part of `/health/ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainHealth {
    /// `id` (replies matched by correlation id) or `legacy` (by token, one request at
    /// a time; docs/protocol.md §9).
    pub matching: &'static str,
    /// Reply shapes whose new requests wait for an outstanding reply; empty when the
    /// chain is not behind.
    pub fences: Vec<FenceHealth>,
}

/// A fence that is up: requests of `shape` get 503 `chain_behind` until it lifts.
#[derive(Debug, Serialize, ToSchema)]
pub struct FenceHealth {
    /// `list` or `message` (answers and records).
    pub shape: &'static str,
    /// Seconds since the request whose reply is outstanding ended.
    pub since_secs: u64,
    /// Seconds until the fence lifts by itself at the latest (`MES_LEGACY_FENCE_MAX`).
    pub lifts_in_secs: u64,
}

impl ChainHealth {
    /// What `bridge` says now.
    pub fn of(bridge: &kafka_bridge::bridge::Bridge) -> ChainHealth {
        let now = std::time::Instant::now();
        let fences = bridge
            .fences()
            .into_iter()
            .map(|f| FenceHealth {
                shape: f.shape.label(),
                since_secs: now.saturating_duration_since(f.since).as_secs(),
                lifts_in_secs: f.until.saturating_duration_since(now).as_secs(),
            })
            .collect();
        ChainHealth {
            matching: if bridge.uses_legacy() { "legacy" } else { "id" },
            fences,
        }
    }
}

/// The outbox part of `/health/ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxHealth {
    /// Rows waiting to be sent (or to be retried).
    pub pending: i64,
    /// Rows being sent now, by any server.
    pub in_flight: i64,
    /// Rows the chain refused for good.
    pub failed: i64,
    /// No master token is configured: the relay sends nothing.
    pub waiting_for_token: bool,
    /// What kind of thing last went wrong in the relay, if anything: `refused` (the
    /// chain refused a row), `no_answer` (a send got no answer) or `database`. A state,
    /// never the chain's text: this endpoint needs no key (the texts are in
    /// `GET /api/outbox`).
    pub last_error: Option<String>,
    /// How this instance's relay stands with each record topic: `open` means the chain
    /// has not answered it for a while and its rows are on hold (docs/operations.md).
    pub topics: Vec<RelayTopicView>,
}

/// One record topic as the outbox relay sees it: whether the chain answers it, and if
/// not since when and when the relay tries again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RelayTopicView {
    /// The record topic: `BLK_Rty` or `BLK_Rec`.
    pub topic: String,
    /// The Kafka topic its messages go to (`MES_TOPIC_RECORD…`).
    pub name: String,
    /// `closed` (sent as usual), `open` (on hold: the chain has not answered) or
    /// `half_open` (one message is being sent as a probe).
    pub state: String,
    /// While on hold: since when the chain has not answered (RFC 3339, UTC).
    pub since: Option<String>,
    /// While on hold: when the next probe goes (RFC 3339, UTC).
    pub next_try: Option<String>,
    /// Sends in a row the chain did not answer.
    pub consecutive_timeouts: u32,
}

impl From<&RecordTopicStatus> for RelayTopicView {
    fn from(t: &RecordTopicStatus) -> Self {
        RelayTopicView {
            topic: t.topic.name().to_owned(),
            name: t.name.clone(),
            state: t.state.label().to_owned(),
            since: t.since().map(|t| t.to_rfc3339()),
            next_try: t.next_try().map(|t| t.to_rfc3339()),
            consecutive_timeouts: t.consecutive_timeouts,
        }
    }
}

/// The per-topic part of a relay's status.
pub fn topic_views(relay: &RelayStatus) -> Vec<RelayTopicView> {
    relay.topics.iter().map(Into::into).collect()
}

/// `GET /health/live`: the process answers HTTP.
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
#[get("/health/live")]
pub fn live() -> Json<Health> {
    Json(Health {
        status: "ok",
        outbox: None,
        chain: None,
        reply_verification: None,
    })
}

/// `GET /health/ready`: the database answers and the bridge's reply consumer runs;
/// the answer also says how the outbox and its relay stand.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        Errors<NotReady>,
    ))]
#[get("/health/ready")]
pub async fn ready(app: &State<App>) -> ApiResult<Json<Health>> {
    // One query, at most once a second, both proves the database answers and reads
    // the outbox's depth.
    let depth = app.outbox_depth().await;
    match (depth, app.bridge.is_ready()) {
        (Some(d), true) => {
            let relay = app.relay.status();
            Ok(Json(Health {
                status: "ok",
                outbox: Some(OutboxHealth {
                    pending: d.pending,
                    in_flight: d.in_flight,
                    failed: d.failed,
                    waiting_for_token: relay.waiting_for_token,
                    topics: topic_views(&relay),
                    last_error: relay.last_error_kind.map(str::to_owned),
                }),
                chain: Some(ChainHealth::of(&app.bridge)),
                reply_verification: Some(reply_verification(&app.bridge).label()),
            }))
        }
        (depth, bridge) => Err(not_ready(depth.is_some(), bridge)),
    }
}

/// Whether `bridge` verifies the chain's replies.
pub fn reply_verification(bridge: &kafka_bridge::bridge::Bridge) -> ReplyVerification {
    if bridge.verifies_replies() {
        ReplyVerification::On
    } else {
        ReplyVerification::Off
    }
}

/// `GET /metrics`: OpenMetrics text, which Prometheus scrapes.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text format 1.0.0", body = String, content_type = "application/openmetrics-text")))]
#[get("/metrics")]
pub async fn metrics(app: &State<App>) -> (ContentType, String) {
    let notifications = app.events.notification_counts(&app.db).await;
    let oldest = app
        .db
        .run(|conn| Ok(mes_core::db::outbox::oldest_unsettled(conn)?))
        .await
        .ok();
    let outbox = app
        .outbox_depth()
        .await
        .map(|depth| (depth, oldest.flatten()));
    let text = app.metrics.encode(outbox, notifications);
    let openmetrics = ContentType::new("application", "openmetrics-text")
        .with_params([("version", "1.0.0"), ("charset", "utf-8")]);
    (openmetrics, text)
}

/// `GET /api/openapi.json`: the OpenAPI 3 document of every route.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "This document", body = Object)))]
#[get("/api/openapi.json")]
pub fn openapi() -> (ContentType, String) {
    let doc = crate::routes::ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|_| "{}".to_owned());
    (ContentType::JSON, doc)
}
