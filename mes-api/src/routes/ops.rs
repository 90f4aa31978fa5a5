//! For operations: liveness, readiness, Prometheus metrics, the OpenAPI document.
//! None of these needs a key.

use mes_core::db::outbox;
use rocket::http::ContentType;
use rocket::serde::json::Json;
use rocket::{State, get};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::app::{App, not_ready};
use crate::error::{ApiResult, ErrorBody};

/// The answer of the health endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
}

/// `GET /health/live`: the process answers HTTP.
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
#[get("/health/live")]
pub fn live() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `GET /health/ready`: the database answers and the bridge's reply consumer runs.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready; the message says what is missing", body = ErrorBody),
    ))]
#[get("/health/ready")]
pub async fn ready(app: &State<App>) -> ApiResult<Json<Health>> {
    match app.ready().await {
        (true, true) => Ok(Json(Health { status: "ok" })),
        (database, bridge) => Err(not_ready(database, bridge)),
    }
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
#[get("/metrics")]
pub async fn metrics(app: &State<App>) -> (ContentType, String) {
    let depth = app.db.run(|conn| Ok(outbox::depth(conn)?)).await.ok();
    let mut text = crate::metrics::render(
        &app.http_metrics,
        &app.bridge.metrics(),
        depth,
        app.bridge.pending(),
    );
    text.push_str(&app.events.render_metrics());
    (
        ContentType::new("text", "plain").with_params(("version", "0.0.4")),
        text,
    )
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
