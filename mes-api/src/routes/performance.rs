//! Performance against targets (issue 13): a unit's targets, and the series of its
//! day reports the console's chart draws. Local data only: nothing here reaches the
//! chain ([`crate::service::performance`]).

use chrono::NaiveDate;
use rocket::serde::json::Json;
use rocket::{FromForm, State, get, put};
use utoipa::IntoParams;

use crate::app::App;
use crate::auth::{Reader, Writer};
use crate::error::{ApiError, ApiResult, Body, Errors, Lookup, Params};
use crate::routes::paging::Strict;
use crate::routes::units::{ObjectBody, UnitView, object_body};
use crate::service::performance::{self, MAX_SERIES_DAYS, Series, SeriesShift, Target};
use crate::service::units::check_code;

/// `PUT /api/ProductionUnit/<id>/target`: sets the unit's targets (all of them: an
/// optional target left out is cleared) and answers the unit with them. Stored
/// locally; nothing goes to the chain.
#[utoipa::path(put, path = "/api/ProductionUnit/{id}/target", tag = "production units",
    params(("id" = String, Path, description = "The unit's code, or its database id when no unit has that code")),
    request_body = Target,
    responses(
        (status = 200, description = "The unit with its targets as stored", body = UnitView),
        Errors<Writer, Body, Lookup>,
    ))]
#[put("/api/ProductionUnit/<id>/target", data = "<body>")]
pub async fn unit_target_put(
    app: &State<App>,
    _caller: Writer,
    id: &str,
    body: ObjectBody<'_>,
) -> ApiResult<Json<UnitView>> {
    let target: Target = object_body(
        body,
        r#"{"oee": 0–1, "availability"?: 0–1|null, "performance"?: 0–1|null, "quality"?: 0–1|null}"#,
    )?;
    target.check()?;
    let id = id.to_owned();
    let units = app.units.clone();
    let view = app
        .db
        .run(move |conn| {
            let unit = units.resolve(conn, &id)?;
            performance::put_target(conn, &unit, &target)?;
            UnitView::load(conn, &units, unit)
        })
        .await?;
    // The Performance and units tabs open on this server show the new line.
    app.events.publish(
        "target",
        serde_json::json!({"unit": view.code, "target": view.target}),
    );
    Ok(Json(view))
}

/// A required query parameter.
pub(crate) fn required<'a>(value: Option<&'a str>, name: &str) -> ApiResult<&'a str> {
    value.ok_or_else(|| ApiError::missing(name))
}

/// A `YYYY-MM-DD` query parameter.
pub(crate) fn date(name: &str, text: &str) -> ApiResult<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid(name, "expected a calendar date as YYYY-MM-DD"))
}

/// A unit code in the query: the rules of unit codes (1–64 ASCII letters, digits,
/// `-` or `.`).
pub(crate) fn unit_code(text: &str) -> ApiResult<String> {
    check_code(text).map_err(|_| {
        ApiError::invalid(
            "unit",
            "expected a unit code: 1–64 ASCII letters, digits, '-' or '.'",
        )
    })?;
    Ok(text.to_owned())
}

/// `from` to `to`: not backwards, at most [`MAX_SERIES_DAYS`] days. Checked after the
/// unit is found (a check between two parameters comes after the 404).
pub(crate) fn check_range(from: NaiveDate, to: NaiveDate) -> ApiResult<()> {
    if from > to {
        return Err(ApiError::invalid("from", "must not be after to"));
    }
    if to.signed_duration_since(from).num_days() + 1 > MAX_SERIES_DAYS {
        return Err(ApiError::invalid(
            "to",
            format!("at most {MAX_SERIES_DAYS} days from from"),
        ));
    }
    Ok(())
}

/// Query of `GET /api/DayReport/series`; read as text so that each problem is this
/// API's 400 naming the parameter.
#[derive(Debug, FromForm, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// The unit's code
    #[param(value_type = String, required = true, pattern = "^[0-9A-Za-z.-]{1,64}$")]
    unit: Option<String>,
    /// First day, YYYY-MM-DD
    #[param(value_type = String, required = true, format = Date)]
    from: Option<String>,
    /// Last day, YYYY-MM-DD: not before `from`, at most 366 days after it counting both
    #[param(value_type = String, required = true, format = Date)]
    to: Option<String>,
    /// `A`, `B`, `C`, or `day` (the stored whole-day row; default)
    #[param(value_type = Option<String>, pattern = "^(A|B|C|day)$", default = "day")]
    shift: Option<String>,
}

/// `GET /api/DayReport/series?unit=&from=&to=&shift=`: per day from `from` to `to`
/// the stored availability, performance, quality and OEE of the shift (or the whole
/// day), whether the OEE is under the unit's target, the targets, and a summary as of
/// `to` (last day's OEE, 7-day average, trend, days under target this month).
#[utoipa::path(get, path = "/api/DayReport/series", tag = "daily report",
    params(Strict<SeriesQuery>),
    responses(
        (status = 200, description = "The series (empty points when no day is stored)", body = Series),
        Errors<Reader, Params, Lookup>,
    ))]
#[get("/api/DayReport/series?<query..>")]
pub async fn day_report_series(
    app: &State<App>,
    _caller: Reader,
    query: Strict<SeriesQuery>,
) -> ApiResult<Json<Series>> {
    let query = query.checked()?;
    let unit = unit_code(required(query.unit.as_deref(), "unit")?)?;
    let from = date("from", required(query.from.as_deref(), "from")?)?;
    let to = date("to", required(query.to.as_deref(), "to")?)?;
    let shift = match query.shift.as_deref() {
        None => SeriesShift::Day,
        Some(text) => SeriesShift::parse(text)
            .ok_or_else(|| ApiError::invalid("shift", "must be A, B, C or day"))?,
    };
    let units = app.units.clone();
    let series = app
        .db
        .run(move |conn| {
            let unit = units.get(conn, &unit)?;
            check_range(from, to)?;
            Ok(performance::series(conn, &unit, shift, from, to)?)
        })
        .await?;
    Ok(Json(series))
}
