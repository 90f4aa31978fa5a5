//! Partner and order requests: the original's four endpoints (APIs 37–40 of the
//! reference) and the proper `POST …/answer` beside them.

use mes_core::codec::Page;
use mes_core::db::decisions;
use mes_core::db::orders::ProductionOrder;
use mes_core::domain::{Answer, RequestId};
use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{FromForm, State, get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::app::App;
use crate::auth::{Reader, Writer};
use crate::error::{ApiError, ApiResult, Body, ChainCall, ErrorCode, Errors, Params};
use crate::request_id::Trace;
use crate::routes::paging::{MAX_OFFSET, Strict, whole_number};
use crate::routes::records::{DecisionView, ProductionOrderView};
use crate::routes::units::body_error;
use crate::service::requests::{AnswerOutcome, Kind};

/// Most items one list call may ask for.
pub const MAX_LIMIT: u32 = 100;

/// Query of the list endpoints; every field optional and read as text, checked by hand
/// so that each problem gets its own 400. The OpenAPI document shows the integers and
/// bounds the text must hold (a test keeps them equal to [`MAX_LIMIT`] and the
/// chain's default page).
#[derive(Debug, FromForm, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Index of the first item, 0–2147483647 (default 0)
    #[param(value_type = Option<i64>, minimum = 0, maximum = 2147483647, default = 0)]
    start: Option<String>,
    /// Most items, 1–100 (default 10)
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100, default = 10)]
    limit: Option<String>,
    /// Only items with this status (OPEN, ACCEPTED, REJECTED; any case); the filter applies to the chain's whole list (at most 5,000 items) and `start`/`limit` page over the matching items
    #[param(min_length = 1)]
    status: Option<String>,
}

impl ListQuery {
    fn parse(&self) -> ApiResult<(Page, Option<&str>)> {
        let mut page = Page::default();
        if let Some(start) = &self.start {
            page.start = whole_number(start)
                .filter(|s| (0..=MAX_OFFSET).contains(s))
                .and_then(|s| u32::try_from(s).ok())
                .ok_or_else(|| {
                    ApiError::invalid("start", format!("must be between 0 and {MAX_OFFSET}"))
                })?;
        }
        if let Some(limit) = &self.limit {
            page.limit = whole_number(limit)
                .and_then(|l| u32::try_from(l).ok())
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| ApiError::invalid("limit", "must be between 1 and 100"))?;
        }
        let status = match self.status.as_deref().map(str::trim) {
            Some("") => return Err(ApiError::invalid("status", "must not be empty")),
            other => other,
        };
        Ok((page, status))
    }
}

/// Query of the original's answer endpoints: `ID` and `Response` (0 or 1), read as
/// text so that a missing or bad one gets its own 400. `ID` is documented on each
/// route, as a partner request's id or an order's.
#[derive(Debug, FromForm, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnsQuery {
    #[field(name = "ID")]
    #[param(ignore)]
    id: Option<String>,
    /// 0 rejects, 1 accepts
    #[field(name = "Response")]
    #[param(rename = "Response", value_type = u8, required = true, minimum = 0, maximum = 1)]
    response: Option<String>,
}

impl AnsQuery {
    fn parse(&self) -> ApiResult<(RequestId, Answer)> {
        let id = self.id.as_deref().ok_or_else(|| ApiError::missing("ID"))?;
        let id = parse_id("ID", id)?;
        let answer = match self.response.as_deref() {
            None => return Err(ApiError::missing("Response")),
            Some("1") => Answer::Accept,
            Some("0") => Answer::Reject,
            Some(_) => {
                return Err(ApiError::invalid(
                    "Response",
                    "must be 0 (reject) or 1 (accept)",
                ));
            }
        };
        Ok((id, answer))
    }
}

/// The request id in parameter `name`, exactly as given: no trimming, no case folding,
/// so the chain gets back the id it listed.
fn parse_id(name: &str, id: &str) -> ApiResult<RequestId> {
    id.parse::<RequestId>()
        .map_err(|e| ApiError::invalid(name, format!("not a request id: {}", e.reason)))
}

/// The original LIST routes: one page of the chain's requests of `kind`.
async fn list_route(
    app: &State<App>,
    caller: Reader,
    trace: Trace,
    kind: Kind,
    query: Strict<ListQuery>,
) -> ApiResult<Json<Vec<Value>>> {
    let query = query.checked()?;
    let (page, status) = query.parse()?;
    app.limits.chain_call(caller.0.id)?;
    let items = trace.scope(app.requests.list(kind, page, status)).await?;
    Ok(Json(items))
}

/// The original ANS routes: answers a request of `kind` and returns the chain's
/// `message`.
async fn ans_route(
    app: &State<App>,
    caller: Writer,
    trace: Trace,
    kind: Kind,
    query: Strict<AnsQuery>,
) -> ApiResult<Json<Value>> {
    let (id, answer) = query.checked()?.parse()?;
    app.limits.chain_call(caller.0.id)?;
    let outcome = trace
        .scope(app.requests.answer(kind, id, answer, &caller.0.name))
        .await?;
    Ok(Json(original_answer(outcome)?))
}

/// The original's four routes, `/api/Kafka{Partner,Order}/{LIST,ANS}`: the same LIST and
/// ANS route for each kind of request, written once. Each use names the routes' paths,
/// tag and functions, so a search for a path still finds it.
macro_rules! original_routes {
    (
        $kind:expr, tag = $tag:tt, id = $id_doc:tt,
        list: $list:ident = $list_doc:tt $list_path:tt $list_uri:tt,
        ans: $ans:ident = $ans_doc:tt $ans_path:tt $ans_uri:tt $(,)?
    ) => {
        #[doc = $list_doc]
        #[utoipa::path(get, path = $list_path, tag = $tag,
            params(Strict<ListQuery>),
            responses(
                (status = 200, description = "The chain's `data` list, as it sent it", body = Vec<Object>),
                Errors<Reader, Params, ChainCall>,
            ))]
        #[get($list_uri)]
        pub async fn $list(
            app: &State<App>,
            caller: Reader,
            trace: Trace,
            query: Strict<ListQuery>,
        ) -> ApiResult<Json<Vec<Value>>> {
            list_route(app, caller, trace, $kind, query).await
        }

        #[doc = $ans_doc]
        #[utoipa::path(get, path = $ans_path, tag = $tag,
            params(("ID" = String, Query, description = $id_doc, pattern = r"^[A-Za-z0-9_-]{1,128}$"), Strict<AnsQuery>),
            responses(
                (status = 200, description = "The chain's `message`, as it sent it (usually a string)", body = Value),
                Errors<Writer, Params, ChainCall>,
            ))]
        #[get($ans_uri)]
        pub async fn $ans(
            app: &State<App>,
            caller: Writer,
            trace: Trace,
            query: Strict<AnsQuery>,
        ) -> ApiResult<Json<Value>> {
            ans_route(app, caller, trace, $kind, query).await
        }
    };
}

original_routes! {
    Kind::Partner, tag = "partners",
    id = "The partner request id (1–128 characters from A-Z, a-z, 0-9, `_` and `-`, exactly as the chain spells it)",
    list: partner_list = "`GET /api/KafkaPartner/LIST`: the chain's partner requests."
        "/api/KafkaPartner/LIST" "/api/KafkaPartner/LIST?<query..>",
    ans: partner_ans = "`GET /api/KafkaPartner/ANS?ID=…&Response=0|1`: the chain's `message`."
        "/api/KafkaPartner/ANS" "/api/KafkaPartner/ANS?<query..>",
}

original_routes! {
    Kind::Order, tag = "orders",
    id = "The order id, `abs_action_id` (1–128 characters from A-Z, a-z, 0-9, `_` and `-`, exactly as the chain spells it)",
    list: order_list = "`GET /api/KafkaOrder/LIST`: the chain's order requests."
        "/api/KafkaOrder/LIST" "/api/KafkaOrder/LIST?<query..>",
    ans: order_ans = "`GET /api/KafkaOrder/ANS?ID=…&Response=0|1`: the chain's `message`."
        "/api/KafkaOrder/ANS" "/api/KafkaOrder/ANS?<query..>",
}

/// The original routes answer the chain's message, and 504 `chain_timeout` (naming the
/// decision) when it did not confirm: their clients know no 202.
fn original_answer(outcome: AnswerOutcome) -> ApiResult<Value> {
    if is_unconfirmed(&outcome) {
        return Err(ApiError::new(
            ErrorCode::ChainTimeout,
            format!(
                "the chain did not answer in time; decision {} is unknown until the chain's \
                 list shows the request answered (GET /api/decisions)",
                outcome.decision.id
            ),
        ));
    }
    Ok(outcome.message)
}

fn is_unconfirmed(outcome: &AnswerOutcome) -> bool {
    outcome.decision.outcome == decisions::OUTCOME_UNKNOWN
        || outcome.decision.outcome == decisions::OUTCOME_PENDING
}

/// Body of `POST /api/{partners,orders}/<id>/answer`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    /// `"accept"` or `"reject"` (any case), or `1` or `0`.
    #[schema(schema_with = answer_schema, example = "accept")]
    pub response: Value,
}

/// The schema of [`AnswerRequest::response`]: one of two words or two numbers.
fn answer_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    Schema::OneOf(
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["accept", "reject"])),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .enum_values(Some([1, 0])),
            )
            .build(),
    )
}

impl AnswerRequest {
    fn answer(&self) -> ApiResult<Answer> {
        match &self.response {
            Value::String(s) if s.eq_ignore_ascii_case("accept") => Ok(Answer::Accept),
            Value::String(s) if s.eq_ignore_ascii_case("reject") => Ok(Answer::Reject),
            Value::Number(n) if n.as_u64() == Some(1) => Ok(Answer::Accept),
            Value::Number(n) if n.as_u64() == Some(0) => Ok(Answer::Reject),
            _ => Err(ApiError::invalid(
                "response",
                "must be \"accept\", \"reject\", 1 or 0",
            )),
        }
    }
}

/// What `POST …/answer` returns.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnswerResponse {
    /// The chain's `message` (usually a string); `"sent; the chain has not confirmed
    /// yet"` with 202.
    pub message: Value,
    /// The recorded decision: its `outcome` is `accepted`/`rejected` with 200, and
    /// `unknown` with 202 (it turns by itself once the chain's list shows the answer).
    pub decision: DecisionView,
    /// The id of the recorded decision.
    pub decision_id: i64,
    /// The correlation id the request carried.
    pub correlation_id: Option<String>,
    /// The production order an accepted order became.
    pub production_order: Option<ProductionOrderView>,
}

async fn answer_route(
    app: &State<App>,
    caller: Writer,
    trace: Trace,
    kind: Kind,
    id: &str,
    body: Result<Json<AnswerRequest>, rocket::serde::json::Error<'_>>,
) -> ApiResult<(Status, Json<AnswerResponse>)> {
    let id = parse_id("id", id)?;
    let body = body.map_err(|e| body_error(&e, r#"{"response": "accept"|"reject"}"#))?;
    let answer = body.answer()?;
    app.limits.chain_call(caller.0.id)?;
    let outcome = trace
        .scope(app.requests.answer(kind, id, answer, &caller.0.name))
        .await?;
    let status = if is_unconfirmed(&outcome) {
        Status::Accepted
    } else {
        Status::Ok
    };
    let production_order = outcome
        .production_order
        .map(|o: ProductionOrder| ProductionOrderView::with_decision(o, Some(&outcome.decision)));
    Ok((
        status,
        Json(AnswerResponse {
            message: outcome.message,
            decision_id: outcome.decision.id,
            correlation_id: outcome.decision.correlation_id.clone(),
            decision: outcome.decision.into(),
            production_order,
        }),
    ))
}

/// `POST /api/partners/<id>/answer`: accept or reject a partner request.
///
/// A 503 `broker_unavailable`, `overloaded` or `chain_behind` means the answer was not
/// sent (decision `not_sent`): answering again is safe.
#[utoipa::path(post, path = "/api/partners/{id}/answer", tag = "partners",
    params(("id" = String, Path, description = "The partner request id (1–128 characters from A-Z, a-z, 0-9, `_` and `-`, exactly as the chain spells it)", pattern = r"^[A-Za-z0-9_-]{1,128}$")),
    request_body = AnswerRequest,
    responses(
        (status = 200, description = "The chain applied the answer", body = AnswerResponse),
        (status = 202, description = "Sent, not confirmed yet (decision `unknown`): it settles from the chain's list by itself; answering again sends nothing meanwhile", body = AnswerResponse),
        Errors<Writer, Params, Body, ChainCall>,
    ))]
#[post("/api/partners/<id>/answer", data = "<body>")]
pub async fn partner_answer(
    app: &State<App>,
    caller: Writer,
    trace: Trace,
    id: &str,
    body: Result<Json<AnswerRequest>, rocket::serde::json::Error<'_>>,
) -> ApiResult<(Status, Json<AnswerResponse>)> {
    answer_route(app, caller, trace, Kind::Partner, id, body).await
}

/// `POST /api/orders/<id>/answer`: accept or reject an order request; an accepted
/// order becomes a production order.
///
/// A 503 `broker_unavailable`, `overloaded` or `chain_behind` means the answer was not
/// sent (decision `not_sent`): answering again is safe.
#[utoipa::path(post, path = "/api/orders/{id}/answer", tag = "orders",
    params(("id" = String, Path, description = "The order id, `abs_action_id` (1–128 characters from A-Z, a-z, 0-9, `_` and `-`, exactly as the chain spells it)", pattern = r"^[A-Za-z0-9_-]{1,128}$")),
    request_body = AnswerRequest,
    responses(
        (status = 200, description = "The chain applied the answer", body = AnswerResponse),
        (status = 202, description = "Sent, not confirmed yet (decision `unknown`): it settles from the chain's list by itself; answering again sends nothing meanwhile", body = AnswerResponse),
        Errors<Writer, Params, Body, ChainCall>,
    ))]
#[post("/api/orders/<id>/answer", data = "<body>")]
pub async fn order_answer(
    app: &State<App>,
    caller: Writer,
    trace: Trace,
    id: &str,
    body: Result<Json<AnswerRequest>, rocket::serde::json::Error<'_>>,
) -> ApiResult<(Status, Json<AnswerResponse>)> {
    answer_route(app, caller, trace, Kind::Order, id, body).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rocket::form::{Form, ValueField};
    use serde_json::json;

    use super::*;
    use crate::routes::paging::query_param_schema;

    fn list_query(pairs: &[(&str, &str)]) -> ListQuery {
        let fields = pairs
            .iter()
            .map(|(name, value)| ValueField::from((*name, *value)));
        Form::parse_iter(fields).unwrap()
    }

    #[test]
    fn the_documented_list_bounds_are_the_checked_ones() {
        let default = Page::default();
        let start = query_param_schema::<ListQuery>("start");
        assert_eq!(start["minimum"], json!(0));
        assert_eq!(start["default"], json!(default.start));
        let limit = query_param_schema::<ListQuery>("limit");
        assert_eq!(limit["minimum"], json!(1));
        assert_eq!(limit["maximum"], json!(MAX_LIMIT));
        assert_eq!(limit["default"], json!(default.limit));

        assert_eq!(list_query(&[]).parse().unwrap(), (default, None));
        let max = MAX_LIMIT.to_string();
        assert_eq!(
            list_query(&[("limit", &max)]).parse().unwrap().0.limit,
            MAX_LIMIT
        );
        for (name, value) in [
            ("limit", "0"),
            ("limit", "101"),
            ("start", "-1"),
            ("status", " "),
        ] {
            let e = list_query(&[(name, value)]).parse().unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidParameter, "{name}={value}");
            assert!(e.message.starts_with(name), "{}", e.message);
        }
    }

    #[test]
    fn the_answer_query_reads_id_and_response_by_their_original_names() {
        let query = Form::<AnsQuery>::parse("ID=req-1&Response=1").unwrap();
        let (id, answer) = query.parse().unwrap();
        assert_eq!((id.as_str(), answer), ("req-1", Answer::Accept));
        let names: Vec<_> = AnsQuery::into_params(|| None)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["Response"], "`ID` is documented on each route");
        let response = query_param_schema::<AnsQuery>("Response");
        assert_eq!(
            (&response["minimum"], &response["maximum"]),
            (&json!(0), &json!(1))
        );
    }
}
