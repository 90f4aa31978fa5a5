//! The daily report (store a unit's day, look at stored days, publish a day on
//! demand) and the outbox the relay delivers, for the console.

use chrono::{Days, NaiveDate, Utc};
use mes_core::db::outbox::{self, OutboxRow};
use rocket::serde::json::Json;
use rocket::{FromForm, State, get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::app::App;
use crate::auth::{Reader, Writer};
use crate::error::{ApiError, ApiResult, Body, ErrorCode, Errors, Lookup, Params, Unique};
use crate::request_id::Trace;
use crate::routes::paging::{Paged, Strict};
use crate::routes::units::{Delivery, ObjectBody, object_body};
use crate::service::reports::{self, DailyRun, DayReportInput, StoredDayReport};

fn parse_date(name: &str, date: &str) -> ApiResult<NaiveDate> {
    NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid(name, "expected a calendar date as YYYY-MM-DD"))
}

/// A stored day with the delivery of its chain report.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayReportView {
    /// The day as stored: `unit`, `date`, `report_id` (the flow id), `shifts` (shift,
    /// inputs, kpis) and `enqueued` (changes stored after that are not published).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub report: StoredDayReport,
    /// Where its `create_day_report` stands (`none` until the daily run enqueued it).
    pub chain: Delivery,
}

fn view(
    conn: &mut mes_core::db::DbConnection,
    report: StoredDayReport,
) -> Result<DayReportView, ApiError> {
    let row = reports::report_message(conn, &report)?;
    Ok(DayReportView {
        chain: Delivery::of(row.as_ref()),
        report,
    })
}

/// The body of `POST /api/DayReport` in the OpenAPI document: [`DayReportInput`] with
/// the ranges [`reports::store_day_report`] checks (those between two fields, APT at
/// most PBT and GQ at most PQ, and a date not after tomorrow, are in the text only).
#[derive(Debug)]
pub struct DayReportBody;

impl utoipa::PartialSchema for DayReportBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::AdditionalProperties;
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        let number = |min: f64, max: Option<f64>| {
            ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                    Type::Number,
                    Type::Null,
                ]))
                .minimum(Some(min))
                .maximum(max)
        };
        let seconds = || number(0.0, Some(86_400.0));
        let mut shift = ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        for (name, field) in [
            ("planned_busy_time_s", seconds()),
            ("actual_production_time_s", seconds()),
            ("planned_unit_time_s", seconds()),
            ("produced_quantity", number(0.0, None)),
            ("good_quantity", number(0.0, None)),
            (
                "failure_count",
                ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                        Type::Integer,
                        Type::Null,
                    ]))
                    .minimum(Some(0.0))
                    .maximum(Some(f64::from(i32::MAX))),
            ),
            ("repair_time_s", seconds()),
            ("availability", number(0.0, Some(1.0))),
            ("performance", number(0.0, None)),
            ("quality", number(0.0, Some(1.0))),
            ("oee", number(0.0, None)),
            ("mtbf_s", seconds()),
            ("mttr_s", seconds()),
            ("production_time_s", seconds()),
        ] {
            shift = shift.property(name, field);
        }
        let shift = shift.build();
        let mut shifts = ObjectBuilder::new()
            .schema_type(Type::Object)
            .min_properties(Some(1))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        for name in ["A", "B", "C", "DAY"] {
            shifts = shifts.property(name, shift.clone());
        }
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "unit",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[A-Za-z0-9.-]{1,64}$")),
            )
            .property(
                "date",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date))),
            )
            .property("shifts", shifts)
            .required("unit")
            .required("date")
            .required("shifts")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}

impl utoipa::ToSchema for DayReportBody {}

/// `POST /api/DayReport`: stores a unit's day (per shift A, B, C and DAY, the seven
/// indicators or the inputs they are computed from).
#[utoipa::path(post, path = "/api/DayReport", tag = "daily report",
    request_body(content = DayReportBody, description = "`{\"unit\": \"PT10\", \"date\": \"YYYY-MM-DD\", \"shifts\": {\"A\": {...}, \"B\": {...}, \"C\": {...}, \"DAY\": {...}}}`; per shift the inputs (`planned_busy_time_s`, `actual_production_time_s`, `planned_unit_time_s`, `produced_quantity`, `good_quantity`, `failure_count`, `repair_time_s`) and/or the indicators (`availability`, `performance`, `quality`, `oee`, `mtbf_s`, `mttr_s`, `production_time_s`). Shifts given replace the stored ones. A day already sent to the chain is read-only (409)."),
    responses(
        (status = 200, description = "The day as stored", body = DayReportView),
        Errors<Writer, Body, Lookup, Unique>,
    ))]
#[post("/api/DayReport", data = "<body>")]
pub async fn day_report_store(
    app: &State<App>,
    _caller: Writer,
    body: ObjectBody<'_>,
) -> ApiResult<Json<DayReportView>> {
    let body = match body {
        Ok(Json(mut map)) => {
            prepare_day_report(&mut map)?;
            Ok(Json(map))
        }
        Err(e) => Err(e),
    };
    let input: DayReportInput = object_body(
        body,
        r#"{"unit", "date", "shifts": {"A"|"B"|"C"|"DAY": {...}}}"#,
    )?;
    let stored = app
        .db
        .run(move |conn| {
            let stored = reports::store_day_report(conn, &input)?;
            view(conn, stored)
        })
        .await?;
    // The Performance tabs open on this server redraw the unit (docs/console.md).
    let shifts: Vec<_> = stored.report.shifts.iter().map(|s| s.shift).collect();
    app.events.publish(
        "day_report",
        serde_json::json!({"unit": stored.report.unit, "date": stored.report.date, "shifts": shifts}),
    );
    Ok(Json(stored))
}

/// Readies a day report's body for serde: a shift given as `null` is refused (leave it
/// out instead; serde would read it as absent), and `failure_count` written as a
/// number with a zero fraction (`3.0`) is the whole number it equals, as JSON (and its
/// schema's `integer`) has it, where serde would refuse it for an integer field.
fn prepare_day_report(body: &mut serde_json::Map<String, Value>) -> ApiResult<()> {
    let Some(Value::Object(shifts)) = body.get_mut("shifts") else {
        return Ok(());
    };
    for (name, shift) in shifts.iter_mut() {
        if shift.is_null() {
            return Err(ApiError::new(
                ErrorCode::InvalidBody,
                format!("shifts.{name}: must be an object (leave the shift out instead of null)"),
            ));
        }
        if let Some(count) = shift.get_mut("failure_count")
            && count.is_f64()
            && let Some(f) = count.as_f64()
            && f.fract() == 0.0
            && (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&f)
        {
            #[allow(clippy::cast_possible_truncation)]
            let whole = f as i64;
            *count = Value::from(whole);
        }
    }
    Ok(())
}

/// Query of `GET /api/DayReport`; read as text so that a missing or bad `date` gets
/// its own 400.
#[derive(Debug, FromForm, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DayReportQuery {
    /// The day, YYYY-MM-DD
    #[param(value_type = String, format = Date, required = true)]
    date: Option<String>,
    /// Only this unit's day
    unit: Option<String>,
}

/// `GET /api/DayReport?date=YYYY-MM-DD[&unit=CODE]`: the stored days of every unit
/// (or of one) on a date, with their delivery.
#[utoipa::path(get, path = "/api/DayReport", tag = "daily report",
    params(Strict<DayReportQuery>),
    responses(
        (status = 200, description = "Stored days, by unit (empty when none is stored)", body = Vec<DayReportView>),
        Errors<Reader, Params, Lookup>,
    ))]
#[get("/api/DayReport?<query..>")]
pub async fn day_report_get(
    app: &State<App>,
    _caller: Reader,
    query: Strict<DayReportQuery>,
) -> ApiResult<Json<Vec<DayReportView>>> {
    let query = query.checked()?;
    let date = query
        .date
        .as_deref()
        .ok_or_else(|| ApiError::missing("date"))?;
    let date = parse_date("date", date)?;
    let unit = query.unit.map(|u| u.trim().to_owned());
    let views = app
        .db
        .run(move |conn| {
            let stored = reports::day_reports_on(conn, date, unit.as_deref())?;
            stored
                .into_iter()
                .map(|report| view(conn, report))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    Ok(Json(views))
}

/// Query of `POST /api/reports/daily/run`; read as text so that a bad `date` gets
/// its own 400.
#[derive(Debug, FromForm, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    /// The day, YYYY-MM-DD, before today in MES_REPORT_TZ (default: yesterday there)
    #[param(value_type = Option<String>, format = Date)]
    date: Option<String>,
}

/// `POST /api/reports/daily/run?date=YYYY-MM-DD`: enqueues every unit's report of
/// the day now, as the daily job does. Exactly once per unit and day: a day already
/// enqueued (by this run, another server, the job) adds nothing.
#[utoipa::path(post, path = "/api/reports/daily/run", tag = "daily report",
    params(Strict<RunQuery>),
    responses(
        (status = 200, description = "What the run did, unit by unit", body = Object),
        Errors<Writer, Params, Unique>,
    ))]
#[post("/api/reports/daily/run?<query..>")]
pub async fn daily_run(
    app: &State<App>,
    _caller: Writer,
    trace: Trace,
    query: Strict<RunQuery>,
) -> ApiResult<Json<DailyRun>> {
    let query = query.checked()?;
    let today = Utc::now()
        .with_timezone(&app.schedule.time_zone())
        .date_naive();
    let date = match query.date.as_deref() {
        Some(date) => parse_date("date", date)?,
        None => today.checked_sub_days(Days::new(1)).unwrap_or(today),
    };
    if date >= today {
        // A well-formed date the run cannot take yet: a conflict with the clock, not a
        // malformed request.
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "date: {date} is not over yet in {} (a day's report is published once)",
                app.schedule.time_zone()
            ),
        ));
    }
    let run = trace
        .scope(app.db.run(move |conn| Ok(reports::daily_run(conn, date)?)))
        .await?;
    if !run.enqueued.is_empty() {
        app.relay.notify();
    }
    Ok(Json(run))
}

/// One `chain_outbox` row, for the console.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxView {
    /// Id (delivery order within an ordering key).
    pub id: i64,
    /// Request topic (default name).
    pub topic: String,
    /// Idempotency key (sent as `idem`).
    pub dedup_key: String,
    /// Rows sharing it are delivered one at a time, in id order.
    pub ordering_key: String,
    /// `pending`, `in_flight`, `done`, `failed` or `discarded`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// The request's body (no token: the relay adds it when sending); `null` once
    /// retention purged it (`purged_at`).
    #[schema(value_type = Object, nullable)]
    pub payload: Value,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// The chain's answer.
    pub chain_message: Option<String>,
    /// When a pending row is due (RFC 3339, UTC).
    pub next_attempt_at: String,
    /// When it was enqueued.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// When the chain answered.
    pub delivered_at: Option<String>,
    /// Who discarded it (an operator's name).
    pub discarded_by: Option<String>,
    /// Why it was discarded.
    pub discard_reason: Option<String>,
    /// When it was discarded.
    pub discarded_at: Option<String>,
    /// When an operator last retried it.
    pub retried_at: Option<String>,
    /// When retention emptied its payload (the row stays, keeping its dedup key).
    pub purged_at: Option<String>,
}

impl From<OutboxRow> for OutboxView {
    fn from(r: OutboxRow) -> Self {
        let t = |t: chrono::NaiveDateTime| t.and_utc().to_rfc3339();
        OutboxView {
            id: r.id,
            payload: if r.purged_at.is_some() {
                Value::Null
            } else {
                serde_json::from_str(&r.payload).unwrap_or(Value::String(r.payload))
            },
            topic: r.topic,
            dedup_key: r.dedup_key,
            ordering_key: r.ordering_key,
            status: r.status,
            attempts: r.attempts,
            last_error: r.last_error,
            chain_message: r.chain_message,
            next_attempt_at: t(r.next_attempt_at),
            created_at: t(r.created_at),
            updated_at: t(r.updated_at),
            delivered_at: r.delivered_at.map(t),
            discarded_by: r.discarded_by,
            discard_reason: r.discard_reason,
            discarded_at: r.discarded_at.map(t),
            retried_at: r.retried_at.map(t),
            purged_at: r.purged_at.map(t),
        }
    }
}

/// Filter of `GET /api/outbox`, whose page comes beside it in [`Paged`].
#[derive(Debug, FromForm, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    /// Only rows in this status: pending, in_flight, done, failed, discarded
    #[param(value_type = Option<String>, pattern = "^(pending|in_flight|done|failed|discarded)$")]
    status: Option<String>,
}

/// `GET /api/outbox`: chain messages waiting, in flight, delivered or failed, newest
/// first.
#[utoipa::path(get, path = "/api/outbox", tag = "daily report",
    params(Strict<Paged<OutboxQuery>>),
    responses(
        (status = 200, description = "Outbox rows, newest first", body = Vec<OutboxView>),
        Errors<Reader, Params>,
    ))]
#[get("/api/outbox?<query..>")]
pub async fn outbox_list(
    app: &State<App>,
    _caller: Reader,
    query: Strict<Paged<OutboxQuery>>,
) -> ApiResult<Json<Vec<OutboxView>>> {
    let query = query.checked()?;
    let status = match query.filter.status.as_deref() {
        None => None,
        Some(s) if outbox::STATUSES.contains(&s) => Some(s.to_owned()),
        Some(_) => {
            return Err(ApiError::invalid(
                "status",
                "must be pending, in_flight, done, failed or discarded",
            ));
        }
    };
    let (limit, offset) = query.page.parse()?;
    let rows = app
        .db
        .run(move |conn| Ok(outbox::list(conn, status.as_deref(), limit, offset)?))
        .await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// `id` of `/api/outbox/<id>/…`, or 400.
fn outbox_id(id: &str) -> ApiResult<i64> {
    id.trim()
        .parse()
        .map_err(|_| ApiError::invalid("id", "must be a whole number"))
}

/// The answer to an action on a failed row: the row, or 404/409.
fn acted(id: i64, action: &str, acted: outbox::Acted) -> ApiResult<Json<OutboxView>> {
    match acted {
        outbox::Acted::Done(row) => Ok(Json((*row).into())),
        outbox::Acted::Missing => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no outbox row {id}"),
        )),
        outbox::Acted::NotFailed(status) => Err(ApiError::new(
            ErrorCode::Conflict,
            format!("outbox row {id} is {status}: only a failed row can be {action}"),
        )),
    }
}

/// `POST /api/outbox/<id>/retry`: puts a failed row back to pending, due now, its
/// attempts and its idempotency key kept: once the cause is fixed (a unit created on
/// the chain, a topic answered again), the message goes out as it was.
#[utoipa::path(post, path = "/api/outbox/{id}/retry", tag = "daily report",
    params(("id" = i64, Path, description = "The outbox row's id")),
    responses(
        (status = 200, description = "The row, pending again", body = OutboxView),
        Errors<Writer, Params, Lookup, Unique>,
    ))]
#[post("/api/outbox/<id>/retry")]
pub async fn outbox_retry(
    app: &State<App>,
    caller: Writer,
    id: &str,
) -> ApiResult<Json<OutboxView>> {
    let id = outbox_id(id)?;
    let result = app
        .db
        .run(move |conn| Ok(outbox::retry_failed(conn, id)?))
        .await?;
    if matches!(result, outbox::Acted::Done(_)) {
        tracing::info!(operator = %caller.0.name, id, "outbox row retried");
        app.relay.notify();
    }
    acted(id, "retried", result)
}

/// Body of `POST /api/outbox/<id>/discard`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscardBody {
    /// Why the message is given up on (1 to 1000 characters, at least one that is
    /// neither a space nor a control character, no NUL), kept with the row.
    #[schema(
        min_length = 1,
        max_length = 1000,
        pattern = "^[^\\u0000]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000]*$"
    )]
    pub reason: String,
}

/// Longest discard reason, in characters.
pub const MAX_REASON_CHARS: usize = 1000;

/// `reason` trimmed, or 400 when it says nothing (only spaces and control characters),
/// holds a NUL (which PostgreSQL cannot store in text) or is too long: what
/// [`DiscardBody`]'s pattern states.
pub fn discard_reason(reason: &str) -> Result<String, String> {
    if reason.contains('\0') {
        return Err("reason: must not contain NUL characters".to_owned());
    }
    let reason = reason.trim();
    if !reason
        .chars()
        .any(|c| !c.is_whitespace() && !c.is_control())
    {
        return Err("reason: must not be empty: say why the message is given up on".to_owned());
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(format!(
            "reason: must have at most {MAX_REASON_CHARS} characters"
        ));
    }
    Ok(reason.to_owned())
}

/// `POST /api/outbox/<id>/discard` with `{"reason": "..."}`: marks a failed row
/// `discarded`, with the operator's name and reason: it is never sent, and the row
/// stays as the record of that decision.
#[utoipa::path(post, path = "/api/outbox/{id}/discard", tag = "daily report",
    params(("id" = i64, Path, description = "The outbox row's id")),
    request_body = DiscardBody,
    responses(
        (status = 200, description = "The row, discarded", body = OutboxView),
        Errors<Writer, Params, Body, Lookup, Unique>,
    ))]
#[post("/api/outbox/<id>/discard", data = "<body>")]
pub async fn outbox_discard(
    app: &State<App>,
    caller: Writer,
    id: &str,
    body: ObjectBody<'_>,
) -> ApiResult<Json<OutboxView>> {
    let id = outbox_id(id)?;
    let body: DiscardBody = object_body(body, r#"{"reason": "..."}"#)?;
    let reason =
        discard_reason(&body.reason).map_err(|why| ApiError::new(ErrorCode::InvalidBody, why))?;
    let by = caller.0.name.clone();
    let result = app
        .db
        .run(move |conn| Ok(outbox::discard_failed(conn, id, &by, &reason)?))
        .await?;
    if matches!(result, outbox::Acted::Done(_)) {
        tracing::info!(operator = %caller.0.name, id, "outbox row discarded");
    }
    acted(id, "discarded", result)
}

/// The answer of `GET /api/outbox/relay`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RelayView {
    /// `wait` or `none` (`MES_RECORD_REPLIES`): whether record messages wait for the
    /// chain's reply.
    pub record_replies: String,
    /// Each record topic: whether the chain answers it (see `/health/ready`).
    pub topics: Vec<crate::routes::ops::RelayTopicView>,
    /// Rows put back unsent because their topic was on hold, since start-up.
    pub held: u64,
    /// No master token is configured: nothing is sent.
    pub waiting_for_token: bool,
    /// The relay's last error, if any (never a secret).
    pub last_error: Option<String>,
}

/// `GET /api/outbox/relay`: how this instance's outbox relay stands, for the console's
/// outbox tab ("the chain has not answered BLK_Rec since 10:42; next try 10:52").
#[utoipa::path(get, path = "/api/outbox/relay", tag = "daily report",
    responses(
        (status = 200, description = "The relay's state", body = RelayView),
        Errors<Reader>,
    ))]
#[get("/api/outbox/relay")]
pub fn outbox_relay(app: &State<App>, _caller: Reader) -> Json<RelayView> {
    let status = app.relay.status();
    Json(RelayView {
        record_replies: app.relay.config().record_replies.to_string(),
        topics: crate::routes::ops::topic_views(&status),
        held: status.held,
        waiting_for_token: status.waiting_for_token,
        last_error: status.last_error,
    })
}
