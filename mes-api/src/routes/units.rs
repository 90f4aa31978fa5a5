//! Production units (the original's API nº 12) and the delivery state of their chain
//! updates. Every change runs the unit hooks in its transaction (the chain hook
//! enqueues the chain messages), then wakes the outbox relay.

use mes_core::db::DbConnection;
use mes_core::db::outbox::{self, OutboxRow};
use rocket::http::Status;
use rocket::serde::json::{self, Json};
use rocket::{State, get, patch, post};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::app::App;
use crate::auth::{Reader, Writer};
use crate::error::{ApiError, ApiResult, Body, ErrorCode, Errors, Lookup, Unique};
use crate::request_id::Trace;
use crate::routes::rfc3339;
use crate::service::performance::{self, Target};
use crate::service::units::{NewUnit, Unit, UnitPatch, UnitService};

/// Where a unit's (or a day report's) chain messages stand, from `chain_outbox`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivery {
    /// `pending` (queued, in flight or waiting to be retried), `delivered` (the chain
    /// answered; "already exists" included), `failed` (the chain refused it for good),
    /// or `none` (nothing was ever enqueued).
    pub state: &'static str,
    /// Why the last attempt failed (for `pending`: the retry's reason; for `failed`:
    /// the chain's error).
    pub error: Option<String>,
    /// Attempts of the newest message.
    pub attempts: i32,
    /// The outbox row of the newest message.
    pub outbox_id: Option<i64>,
    /// When it last changed (RFC 3339, UTC).
    pub updated_at: Option<String>,
}

impl Delivery {
    /// The state shown for `row`, the newest message of a unit (or a report's row).
    pub fn of(row: Option<&OutboxRow>) -> Delivery {
        let Some(row) = row else {
            return Delivery {
                state: "none",
                error: None,
                attempts: 0,
                outbox_id: None,
                updated_at: None,
            };
        };
        let state = match row.status.as_str() {
            outbox::DONE => "delivered",
            outbox::FAILED => "failed",
            _ => "pending",
        };
        Delivery {
            state,
            error: row.last_error.clone(),
            attempts: row.attempts,
            outbox_id: Some(row.id),
            updated_at: Some(rfc3339(row.updated_at)),
        }
    }
}

/// A production unit as the API shows it: the original's `Status` and `ProcessName`,
/// and where its chain updates stand.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnitView {
    /// Database id (the original's `productionunit_id`).
    pub id: i64,
    /// The MES's code, e.g. `PT10`: the chain record id.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Current status.
    #[serde(rename = "Status")]
    pub status: String,
    /// Current process; `null` when none.
    #[serde(rename = "ProcessName")]
    pub process_name: Option<String>,
    /// When the unit was created (RFC 3339, UTC).
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// The delivery of its newest chain message (record, reporter or update).
    pub chain: Delivery,
    /// Its targets (`PUT /api/ProductionUnit/<id>/target`); `null` when none is set.
    pub target: Option<Target>,
}

impl UnitView {
    fn new(unit: Unit, newest: Option<&OutboxRow>, target: Option<Target>) -> UnitView {
        UnitView {
            id: unit.id,
            target,
            chain: Delivery::of(newest),
            code: unit.code,
            name: unit.name,
            status: unit.status,
            process_name: unit.process_name,
            created_at: rfc3339(unit.created_at),
            updated_at: rfc3339(unit.updated_at),
        }
    }

    /// The view of `unit` as stored: its newest chain message and its targets.
    pub(crate) fn load(
        conn: &mut DbConnection,
        units: &UnitService,
        unit: Unit,
    ) -> ApiResult<UnitView> {
        let newest = units.newest_message(conn, &unit.code)?;
        let target = performance::target_of(conn, unit.id).map_err(ApiError::database)?;
        Ok(UnitView::new(unit, newest.as_ref(), target))
    }
}

/// Body of `POST /api/ProductionUnit` (for the OpenAPI document; [`NewUnit`] is what
/// the route reads, with the same keys, and refuses other keys). The patterns say what
/// the service checks: texts without control characters, the required ones not blank.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case, dead_code)]
pub struct NewUnitBody {
    /// 1–64 ASCII letters, digits, `-` or `.`; the chain record id.
    #[schema(pattern = r"^[A-Za-z0-9.-]{1,64}$")]
    code: String,
    /// Display name.
    #[schema(
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$",
        max_length = 200
    )]
    name: String,
    /// Initial status.
    #[schema(
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$",
        max_length = 200
    )]
    Status: String,
    /// Initial process, if any.
    #[schema(pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$", max_length = 200)]
    ProcessName: Option<String>,
}

/// Body of `PATCH /api/ProductionUnit/<id>` (for the OpenAPI document): the
/// original's `{"Status": "...", "ProcessName": "..."}`. A key left out keeps the
/// field as it is; `"ProcessName": null` clears the process. Other keys are refused.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case, dead_code)]
pub struct UnitPatchBody {
    /// New status (not empty); absent: unchanged.
    #[schema(
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$",
        max_length = 200
    )]
    Status: Option<String>,
    /// New process; absent: unchanged; `null`: none.
    #[schema(pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$", max_length = 200)]
    ProcessName: Option<String>,
}

/// 400 `invalid_body` for a body that is not the JSON a route expects.
pub fn body_error(e: &json::Error<'_>, expected: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidBody,
        match e {
            json::Error::Io(_) => "the body could not be read".to_owned(),
            json::Error::Parse(_, e) => format!("expected {expected}: {e}"),
        },
    )
}

/// A JSON body whose top level is an object, read into `T`. Going through a map
/// first refuses arrays, which serde would otherwise take for a struct's fields in
/// order (`["STOPPED"]` as a status).
pub type ObjectBody<'r> = Result<Json<Map<String, Value>>, json::Error<'r>>;

/// `T` from an [`ObjectBody`]; 400 `invalid_body` naming `expected` otherwise.
pub fn object_body<T: DeserializeOwned>(body: ObjectBody<'_>, expected: &str) -> ApiResult<T> {
    let map = body.map_err(|e| body_error(&e, expected))?.into_inner();
    serde_json::from_value(Value::Object(map))
        .map_err(|e| ApiError::new(ErrorCode::InvalidBody, format!("expected {expected}: {e}")))
}

/// `POST /api/ProductionUnit`: creates a unit and enqueues its chain record.
#[utoipa::path(post, path = "/api/ProductionUnit", tag = "production units",
    request_body = NewUnitBody,
    responses(
        (status = 201, description = "Created; its chain record is on its way", body = UnitView),
        Errors<Writer, Body, Unique>,
    ))]
#[post("/api/ProductionUnit", data = "<body>")]
pub async fn unit_create(
    app: &State<App>,
    _caller: Writer,
    trace: Trace,
    body: ObjectBody<'_>,
) -> ApiResult<(Status, Json<UnitView>)> {
    let new: NewUnit = object_body(body, r#"{"code", "name", "Status", "ProcessName"}"#)?;
    let units = app.units.clone();
    let view = trace
        .scope(app.db.run(move |conn| {
            let unit = units.create(conn, &new)?;
            UnitView::load(conn, &units, unit)
        }))
        .await?;
    app.relay.notify();
    Ok((Status::Created, Json(view)))
}

/// `GET /api/ProductionUnit`: every unit, by code, with its delivery state.
#[utoipa::path(get, path = "/api/ProductionUnit", tag = "production units",
    responses(
        (status = 200, description = "Every unit, by code", body = Vec<UnitView>),
        Errors<Reader>,
    ))]
#[get("/api/ProductionUnit")]
pub async fn unit_list(app: &State<App>, _caller: Reader) -> ApiResult<Json<Vec<UnitView>>> {
    let units = app.units.clone();
    let views = app
        .db
        .run(move |conn| {
            let all = units.list(conn)?;
            all.into_iter()
                .map(|unit| UnitView::load(conn, &units, unit))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    Ok(Json(views))
}

/// `GET /api/ProductionUnit/<id>`: one unit, by code or database id.
#[utoipa::path(get, path = "/api/ProductionUnit/{id}", tag = "production units",
    params(("id" = String, Path, description = "The unit's code, or its database id when no unit has that code")),
    responses(
        (status = 200, description = "The unit", body = UnitView),
        Errors<Reader, Lookup>,
    ))]
#[get("/api/ProductionUnit/<id>")]
pub async fn unit_get(app: &State<App>, _caller: Reader, id: &str) -> ApiResult<Json<UnitView>> {
    let id = id.to_owned();
    let units = app.units.clone();
    let view = app
        .db
        .run(move |conn| {
            let unit = units.resolve(conn, &id)?;
            UnitView::load(conn, &units, unit)
        })
        .await?;
    Ok(Json(view))
}

/// `PATCH /api/ProductionUnit/<id>`: changes status and process name and enqueues
/// the chain update in the same transaction; answers the unit as stored.
///
/// The original's body `{"Status": "...", "ProcessName": "..."}`. Unlike the
/// original, either key may be left out (the field stays as it is), and
/// `"ProcessName": null` clears the process. Every PATCH is announced to the chain,
/// even one that changes nothing.
#[utoipa::path(patch, path = "/api/ProductionUnit/{id}", tag = "production units",
    params(("id" = String, Path, description = "The unit's code, or its database id when no unit has that code")),
    request_body = UnitPatchBody,
    responses(
        (status = 200, description = "The unit as stored; its update is on its way to the chain", body = UnitView),
        Errors<Writer, Body, Lookup>,
    ))]
#[patch("/api/ProductionUnit/<id>", data = "<body>")]
pub async fn unit_patch(
    app: &State<App>,
    _caller: Writer,
    trace: Trace,
    id: &str,
    body: ObjectBody<'_>,
) -> ApiResult<Json<UnitView>> {
    let patch: UnitPatch = object_body(body, r#"{"Status": "...", "ProcessName": "..."|null}"#)?;
    let id = id.to_owned();
    let units = app.units.clone();
    let view = trace
        .scope(app.db.run(move |conn| {
            let code = units.resolve(conn, &id)?.code;
            let unit = units.patch(conn, &code, &patch)?;
            UnitView::load(conn, &units, unit)
        }))
        .await?;
    app.relay.notify();
    Ok(Json(view))
}
