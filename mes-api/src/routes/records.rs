//! What the MES itself stores about the chain: the audit trail of decisions and the
//! production orders taken over from accepted orders.

use std::collections::HashMap;

use mes_core::db::DbConnection;
use mes_core::db::decisions::{self, Decision};
use mes_core::db::orders::{self, ProductionOrder};
use rocket::serde::json::Json;
use rocket::{State, get};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::app::App;
use crate::auth::Reader;
use crate::error::{ApiError, ApiResult, Errors, Params};
use crate::routes::paging::{PageQuery, Strict};
use crate::routes::rfc3339;

/// A decision as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionView {
    /// Id.
    pub id: i64,
    /// `partner` or `order`.
    pub kind: String,
    /// The chain's request id.
    pub request_id: String,
    /// `accept` or `reject`.
    pub response: String,
    /// Who decided.
    pub operator: String,
    /// The Kafka request's correlation id.
    pub correlation_id: Option<String>,
    /// `pending` (being sent), `accepted`, `rejected`, `chain_error` (the chain refused),
    /// `unknown` (sent, not confirmed yet: settles from the chain's list), `not_sent`
    /// (never reached the broker), `not_applied` (the chain's list never showed it).
    pub outcome: String,
    /// The chain's message.
    pub chain_message: Option<String>,
    /// The chain's error (or why no answer came).
    pub chain_error: Option<String>,
    /// When the operator decided (RFC 3339, UTC).
    pub created_at: String,
    /// When the outcome was written.
    pub updated_at: String,
}

impl From<Decision> for DecisionView {
    fn from(d: Decision) -> Self {
        DecisionView {
            id: d.id,
            kind: d.kind,
            request_id: d.request_id,
            response: if d.response == decisions::ACCEPT {
                "accept"
            } else {
                "reject"
            }
            .to_owned(),
            operator: d.operator,
            correlation_id: d.correlation_id,
            outcome: d.outcome,
            chain_message: d.chain_message,
            chain_error: d.chain_error,
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
        }
    }
}

/// A production order as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductionOrderView {
    /// Id.
    pub id: i64,
    /// The chain's `abs_action_id`.
    pub chain_order_id: String,
    /// The ERP that ordered.
    pub issuing_agent: String,
    /// The order's `type`.
    pub order_type: String,
    /// The order's description.
    pub description: String,
    /// The order's metadata, as the chain sent it.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// The chain's timestamp of the order.
    pub chain_timestamp: i64,
    /// The decision that accepted it.
    pub decision_id: Option<i64>,
    /// The operator who accepted it (from that decision); `null` without one.
    pub accepted_by: Option<String>,
    /// When that operator accepted it (RFC 3339, UTC); `null` without a decision.
    pub accepted_at: Option<String>,
    /// Production status (`planned` first).
    pub status: String,
    /// When it was taken over (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
}

impl ProductionOrderView {
    /// The order, with who accepted it and when from `decision` (its `decision_id`'s).
    pub(crate) fn with_decision(o: ProductionOrder, decision: Option<&Decision>) -> Self {
        ProductionOrderView {
            accepted_by: decision.map(|d| d.operator.clone()),
            accepted_at: decision.map(|d| rfc3339(d.created_at)),
            id: o.id,
            metadata: serde_json::from_str(&o.metadata).unwrap_or(Value::String(o.metadata)),
            chain_order_id: o.chain_order_id,
            issuing_agent: o.issuing_agent,
            order_type: o.order_type,
            description: o.description,
            chain_timestamp: o.chain_timestamp,
            decision_id: o.decision_id,
            status: o.status,
            created_at: rfc3339(o.created_at),
            updated_at: rfc3339(o.updated_at),
        }
    }
}

/// `GET /api/decisions`: every accept/reject, newest first.
#[utoipa::path(get, path = "/api/decisions", tag = "audit",
    params(Strict<PageQuery>),
    responses(
        (status = 200, description = "Decisions, newest first", body = Vec<DecisionView>),
        Errors<Reader, Params>,
    ))]
#[get("/api/decisions?<query..>")]
pub async fn decision_list(
    app: &State<App>,
    _caller: Reader,
    query: Strict<PageQuery>,
) -> ApiResult<Json<Vec<DecisionView>>> {
    let (limit, offset) = query.checked()?.parse()?;
    let rows = app
        .db
        .run(move |conn| Ok(decisions::list(conn, limit, offset)?))
        .await?;
    Ok(Json(rows.into_iter().map(DecisionView::from).collect()))
}

/// `GET /api/production-orders`: orders taken over from the chain, newest first.
#[utoipa::path(get, path = "/api/production-orders", tag = "orders",
    params(Strict<PageQuery>),
    responses(
        (status = 200, description = "Production orders, newest first", body = Vec<ProductionOrderView>),
        Errors<Reader, Params>,
    ))]
#[get("/api/production-orders?<query..>")]
pub async fn production_order_list(
    app: &State<App>,
    _caller: Reader,
    query: Strict<PageQuery>,
) -> ApiResult<Json<Vec<ProductionOrderView>>> {
    let (limit, offset) = query.checked()?.parse()?;
    let views = app
        .db
        .run(move |conn| production_orders(conn, limit, offset))
        .await?;
    Ok(Json(views))
}

/// A page of production orders, newest first, each with who accepted it and when
/// (their decisions read in one query): the list and its CSV export show the same.
pub(crate) fn production_orders(
    conn: &mut DbConnection,
    limit: i64,
    offset: i64,
) -> Result<Vec<ProductionOrderView>, ApiError> {
    let rows = orders::list(conn, limit, offset)?;
    let ids: Vec<i64> = rows.iter().filter_map(|o| o.decision_id).collect();
    let by_id: HashMap<i64, Decision> = decisions::by_ids(conn, &ids)?
        .into_iter()
        .map(|d| (d.id, d))
        .collect();
    Ok(rows
        .into_iter()
        .map(|o| {
            let decision = o.decision_id.and_then(|id| by_id.get(&id));
            ProductionOrderView::with_decision(o, decision)
        })
        .collect())
}
