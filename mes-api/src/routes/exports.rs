//! CSV exports of what the MES keeps (issue 13): day reports, decisions, production
//! orders, the outbox. RFC 4180 (the `csv` crate), UTF-8, a header row, timestamps in
//! RFC 3339 (ISO 8601, UTC), as a download (`Content-Disposition: attachment`).
//!
//! A cell that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`,
//! a tab or a carriage return) is written with a `'` before it (OWASP, "CSV
//! injection"): chain text (descriptions, errors) and names come from outside.

use std::borrow::Cow;
use std::io::Cursor;

use mes_codec::report::Shift;
use mes_core::db::day_reports;
use mes_core::db::{decisions, outbox};
use rocket::http::{ContentType, Status};
use rocket::response::{self, Responder};
use rocket::{FromForm, Request, Response, State, get};
use utoipa::IntoParams;

use crate::app::App;
use crate::auth::Reader;
use crate::error::{ApiError, ApiResult, Errors, Lookup, Params};
use crate::routes::paging::Strict;
use crate::routes::performance::{check_range, date, required, unit_code};
use crate::routes::records::{self, DecisionView};
use crate::routes::rfc3339;

/// Most rows one export holds: the newest for the lists, the first by unit, date and
/// shift for day reports.
pub const MAX_EXPORT_ROWS: i64 = 10_000;

/// A CSV download: `text/csv; charset=utf-8` with `Content-Disposition: attachment`.
#[derive(Debug)]
pub struct CsvFile {
    filename: String,
    body: Vec<u8>,
}

impl<'r> Responder<'r, 'static> for CsvFile {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        Response::build()
            .status(Status::Ok)
            .header(ContentType::CSV)
            .raw_header(
                "Content-Disposition",
                format!("attachment; filename=\"{}\"", self.filename),
            )
            .sized_body(self.body.len(), Cursor::new(self.body))
            .ok()
    }
}

/// `cell` as written: with a `'` before it when a spreadsheet would take it for a
/// formula.
pub fn guard(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// The CSV text of `header` and `rows` (each cell [`guard`]ed, quoted as RFC 4180
/// requires, lines ending in CRLF).
pub fn write_csv(
    header: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> ApiResult<Vec<u8>> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    writer.write_record(header).map_err(ApiError::internal)?;
    for row in rows {
        writer
            .write_record(row.iter().map(|cell| guard(cell).into_owned()))
            .map_err(ApiError::internal)?;
    }
    writer.into_inner().map_err(ApiError::internal)
}

fn text<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// Query of `GET /api/DayReport.csv`; read as text so that each problem is this API's
/// 400 naming the parameter.
#[derive(Debug, FromForm, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DayReportCsvQuery {
    /// Only this unit's days (default: every unit)
    #[param(value_type = Option<String>, pattern = "^[0-9A-Za-z.-]{1,64}$")]
    unit: Option<String>,
    /// First day, YYYY-MM-DD
    #[param(value_type = String, required = true, format = Date)]
    from: Option<String>,
    /// Last day, YYYY-MM-DD: not before `from`, at most 366 days after it counting both
    #[param(value_type = String, required = true, format = Date)]
    to: Option<String>,
}

/// Header of the day-report export: one row per unit, day and shift.
pub const DAY_REPORT_COLUMNS: [&str; 18] = [
    "unit",
    "date",
    "shift",
    "planned_busy_time_s",
    "actual_production_time_s",
    "planned_unit_time_s",
    "produced_quantity",
    "good_quantity",
    "failure_count",
    "repair_time_s",
    "availability",
    "performance",
    "quality",
    "oee",
    "mtbf_s",
    "mttr_s",
    "production_time_s",
    "updated_at",
];

/// `GET /api/DayReport.csv?unit=&from=&to=`: the stored day reports from `from` to
/// `to` (of one unit, or of every unit), one row per unit, day and shift (`A`, `B`,
/// `C`, `DAY`), inputs and indicators as stored; at most 10 000 rows.
#[utoipa::path(get, path = "/api/DayReport.csv", tag = "exports",
    params(Strict<DayReportCsvQuery>),
    responses(
        (status = 200, description = "The day reports as CSV (a header row only when none is stored)", content_type = "text/csv", body = String),
        Errors<Reader, Params, Lookup>,
    ))]
#[get("/api/DayReport.csv?<query..>")]
pub async fn day_report_csv(
    app: &State<App>,
    _caller: Reader,
    query: Strict<DayReportCsvQuery>,
) -> ApiResult<CsvFile> {
    let query = query.checked()?;
    let unit = query.unit.as_deref().map(unit_code).transpose()?;
    let from = date("from", required(query.from.as_deref(), "from")?)?;
    let to = date("to", required(query.to.as_deref(), "to")?)?;
    let units = app.units.clone();
    let filename = match &unit {
        Some(code) => format!("day-reports-{code}-{from}-{to}.csv"),
        None => format!("day-reports-{from}-{to}.csv"),
    };
    let rows = app
        .db
        .run(move |conn| {
            if let Some(code) = &unit {
                units.get(conn, code)?;
            }
            check_range(from, to)?;
            day_reports::between(conn, unit.as_deref(), None, (from, to), MAX_EXPORT_ROWS)
                .map_err(ApiError::database)
        })
        .await?;
    let rows = rows.into_iter().map(|r| {
        let (i, k) = (r.inputs, r.kpis);
        vec![
            r.unit_code,
            r.report_date.to_string(),
            Shift::from_code(i64::from(r.shift))
                .map(|s| s.label().to_owned())
                .unwrap_or_else(|_| r.shift.to_string()),
            text(i.planned_busy_time_s),
            text(i.actual_production_time_s),
            text(i.planned_unit_time_s),
            text(i.produced_quantity),
            text(i.good_quantity),
            text(i.failure_count),
            text(i.repair_time_s),
            text(k.availability),
            text(k.performance),
            text(k.quality),
            text(k.oee),
            text(k.mtbf_s),
            text(k.mttr_s),
            text(k.production_time_s),
            rfc3339(r.updated_at),
        ]
    });
    Ok(CsvFile {
        filename,
        body: write_csv(&DAY_REPORT_COLUMNS, rows)?,
    })
}

/// `GET /api/decisions.csv`: every accept/reject, newest first, as
/// `GET /api/decisions` shows them; at most 10 000 rows.
#[utoipa::path(get, path = "/api/decisions.csv", tag = "exports",
    responses(
        (status = 200, description = "Decisions as CSV, newest first", content_type = "text/csv", body = String),
        Errors<Reader>,
    ))]
#[get("/api/decisions.csv")]
pub async fn decision_csv(app: &State<App>, _caller: Reader) -> ApiResult<CsvFile> {
    let rows = app
        .db
        .run(|conn| decisions::list(conn, MAX_EXPORT_ROWS, 0).map_err(ApiError::database))
        .await?;
    let rows = rows.into_iter().map(DecisionView::from).map(|d| {
        vec![
            d.id.to_string(),
            d.kind,
            d.request_id,
            d.response,
            d.operator,
            text(d.correlation_id),
            d.outcome,
            text(d.chain_message),
            text(d.chain_error),
            d.created_at,
            d.updated_at,
        ]
    });
    let header = [
        "id",
        "kind",
        "request_id",
        "response",
        "operator",
        "correlation_id",
        "outcome",
        "chain_message",
        "chain_error",
        "created_at",
        "updated_at",
    ];
    Ok(CsvFile {
        filename: "decisions.csv".to_owned(),
        body: write_csv(&header, rows)?,
    })
}

/// `GET /api/production-orders.csv`: the orders taken over from the chain, newest
/// first, as `GET /api/production-orders` shows them (`metadata` as JSON text,
/// `chain_timestamp` as the chain wrote it); at most 10 000 rows.
#[utoipa::path(get, path = "/api/production-orders.csv", tag = "exports",
    responses(
        (status = 200, description = "Production orders as CSV, newest first", content_type = "text/csv", body = String),
        Errors<Reader>,
    ))]
#[get("/api/production-orders.csv")]
pub async fn production_order_csv(app: &State<App>, _caller: Reader) -> ApiResult<CsvFile> {
    let rows = app
        .db
        .run(|conn| records::production_orders(conn, MAX_EXPORT_ROWS, 0))
        .await?;
    let rows = rows.into_iter().map(|o| {
        vec![
            o.id.to_string(),
            o.chain_order_id,
            o.issuing_agent,
            o.order_type,
            o.description,
            o.metadata.to_string(),
            o.chain_timestamp.to_string(),
            text(o.decision_id),
            text(o.accepted_by),
            text(o.accepted_at),
            o.status,
            o.created_at,
            o.updated_at,
        ]
    });
    let header = [
        "id",
        "chain_order_id",
        "issuing_agent",
        "order_type",
        "description",
        "metadata",
        "chain_timestamp",
        "decision_id",
        "accepted_by",
        "accepted_at",
        "status",
        "created_at",
        "updated_at",
    ];
    Ok(CsvFile {
        filename: "production-orders.csv".to_owned(),
        body: write_csv(&header, rows)?,
    })
}

/// `GET /api/outbox.csv`: the chain messages (waiting, in flight, delivered, failed),
/// newest first, as `GET /api/outbox` shows them (`payload` as JSON text, without the
/// token); at most 10 000 rows.
#[utoipa::path(get, path = "/api/outbox.csv", tag = "exports",
    responses(
        (status = 200, description = "Outbox rows as CSV, newest first", content_type = "text/csv", body = String),
        Errors<Reader>,
    ))]
#[get("/api/outbox.csv")]
pub async fn outbox_csv(app: &State<App>, _caller: Reader) -> ApiResult<CsvFile> {
    let rows = app
        .db
        .run(|conn| outbox::list(conn, None, MAX_EXPORT_ROWS, 0).map_err(ApiError::database))
        .await?;
    let rows = rows.into_iter().map(|r| {
        vec![
            r.id.to_string(),
            r.topic,
            r.dedup_key,
            r.ordering_key,
            r.status,
            r.attempts.to_string(),
            r.payload,
            text(r.last_error),
            text(r.chain_message),
            rfc3339(r.next_attempt_at),
            rfc3339(r.created_at),
            rfc3339(r.updated_at),
            text(r.delivered_at.map(rfc3339)),
        ]
    });
    let header = [
        "id",
        "topic",
        "dedup_key",
        "ordering_key",
        "status",
        "attempts",
        "payload",
        "last_error",
        "chain_message",
        "next_attempt_at",
        "created_at",
        "updated_at",
        "delivered_at",
    ];
    Ok(CsvFile {
        filename: "outbox.csv".to_owned(),
        body: write_csv(&header, rows)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_document_declares_the_exports_as_text_csv_and_the_target_bounds() {
        use utoipa::OpenApi as _;
        let doc = serde_json::to_value(crate::routes::ApiDoc::openapi()).unwrap();
        for path in [
            "/api/DayReport.csv",
            "/api/decisions.csv",
            "/api/production-orders.csv",
            "/api/outbox.csv",
        ] {
            let ok = &doc["paths"][path]["get"]["responses"]["200"]["content"];
            assert!(ok["text/csv"].is_object(), "{path}: {ok}");
        }
        let target = &doc["components"]["schemas"]["Target"];
        assert_eq!(target["additionalProperties"], serde_json::json!(false));
        assert_eq!(target["required"], serde_json::json!(["oee"]));
        assert_eq!(target["properties"]["oee"]["maximum"], serde_json::json!(1));
        let series = &doc["paths"]["/api/DayReport/series"]["get"];
        assert!(series["responses"]["404"].is_object());
    }

    #[test]
    fn formula_cells_get_a_quote_and_rfc_4180_quoting_holds() {
        for risky in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(guard(risky), format!("'{risky}"));
        }
        assert_eq!(guard("a=1"), "a=1");
        let out = write_csv(
            &["a", "b"],
            [vec![
                "=cmd|' /C calc'!A0".to_owned(),
                "x, \"y\"\nz".to_owned(),
            ]],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a,b\r\n'=cmd|' /C calc'!A0,\"x, \"\"y\"\"\nz\"\r\n"
        );
    }
}
