//! The shop-floor routes of issue 13 in-process (`rocket::local::asynchronous::Client`)
//! against PostgreSQL and the real broker: unit targets, the day-report series drawn
//! against them, and the CSV exports. No master token is stored, so nothing is sent
//! to the chain: these routes only read and write local data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chain_sim::SimTopics;
use mes_api::config::{ReplyTrust, Settings};
use mes_api::server;
use mes_api::service::units::{NewUnit, UnitService};
use mes_core::db::{self, decisions, orders, outbox};
use mes_e2e::db::PgSchema;
use mes_e2e::kafka_brokers;
use rocket::http::{ContentType, Header, Method, Status};
use rocket::local::asynchronous::Client;
use serde_json::{Value, json};

struct Server {
    client: Client,
    operator: String,
    viewer: String,
    schema: PgSchema,
}

/// A server on a schema of its own with units PT10 and PT11 (created without hooks:
/// no chain messages), an operator and a viewer.
async fn server() -> Server {
    let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
    let topics = SimTopics::with_suffix(&suffix);
    let schema = PgSchema::create_in(&mes_e2e::database_url());
    let mut settings = Settings {
        database_url: Some(schema.url().to_owned()),
        kafka_brokers: kafka_brokers(),
        database_pool_size: 4,
        reply_trust: ReplyTrust::Unsigned,
        ..Settings::default()
    };
    settings.set_topics(&topics.chain);
    let url = schema.url().to_owned();
    let (operator, viewer) = tokio::task::spawn_blocking(move || {
        let mut conn = db::connect(&url).unwrap();
        for code in ["PT10", "PT11"] {
            UnitService::without_hooks()
                .create(
                    &mut conn,
                    &NewUnit {
                        code: code.to_owned(),
                        name: format!("Press {code}"),
                        status: "RUNNING".to_owned(),
                        process_name: None,
                    },
                )
                .unwrap();
        }
        mes_e2e::db::add_operators(&mut conn).unwrap()
    })
    .await
    .unwrap();
    let prepared = server::prepare(settings).await.unwrap();
    let client = Client::tracked(server::rocket(rocket::Config::figment(), prepared.app))
        .await
        .unwrap();
    Server {
        client,
        operator,
        viewer,
        schema,
    }
}

/// An answer: status, content type, `Content-Disposition`, body text.
struct Answer {
    status: Status,
    content_type: Option<String>,
    disposition: Option<String>,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::String(self.text.clone()))
    }

    fn assert_error(&self, status: Status, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.json()["error"]["code"], code, "{}", self.text);
    }

    /// The CSV body, parsed as RFC 4180: header and rows.
    fn csv(&self) -> (Vec<String>, Vec<Vec<String>>) {
        assert_eq!(self.status, Status::Ok, "{}", self.text);
        assert_eq!(
            self.content_type.as_deref(),
            Some("text/csv; charset=utf-8")
        );
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(self.text.as_bytes());
        let header = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_owned)
            .collect();
        let rows = reader
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        (header, rows)
    }
}

impl Server {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.client.req(method, uri.to_owned());
        if let Some(key) = key {
            request = request.header(Header::new("Authorization", format!("Bearer {key}")));
        }
        if let Some(body) = body {
            request = request.header(ContentType::JSON).body(body.to_string());
        }
        let response = request.dispatch().await;
        let status = response.status();
        let content_type = response.content_type().map(|c| c.to_string());
        let disposition = response
            .headers()
            .get_one("Content-Disposition")
            .map(str::to_owned);
        let text = response.into_string().await.unwrap_or_default();
        Answer {
            status,
            content_type,
            disposition,
            text,
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.call(Method::Get, uri, Some(&self.viewer), None).await
    }

    async fn put_target(&self, unit: &str, body: Value) -> Answer {
        let uri = format!("/api/ProductionUnit/{unit}/target");
        self.call(Method::Put, &uri, Some(&self.operator), Some(body))
            .await
    }

    /// `POST /api/DayReport` with `body`, as the operator.
    async fn post_report(&self, body: Value) -> Answer {
        self.call(
            Method::Post,
            "/api/DayReport",
            Some(&self.operator),
            Some(body),
        )
        .await
    }

    /// Stores a day of `unit` whose whole-day indicators are given.
    async fn day(&self, unit: &str, date: &str, oee: f64) {
        let body = json!({"unit": unit, "date": date, "shifts": {"DAY": {
            "availability": 0.9, "performance": 0.95, "quality": 0.99, "oee": oee}}});
        let answer = self.post_report(body).await;
        assert_eq!(answer.status, Status::Ok, "{}", answer.text);
    }

    async fn stop(self) {
        let _ = self.client.terminate().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_are_checked_stored_and_shown_with_the_unit() {
    let server = server().await;
    let (status, unit) = {
        let a = server.get("/api/ProductionUnit/PT10").await;
        (a.status, a.json())
    };
    assert_eq!(status, Status::Ok);
    assert_eq!(unit["target"], Value::Null, "no target yet");

    for bad in [
        json!({"oee": 1.5}),
        json!({"oee": -0.01}),
        json!({"oee": 0.8, "availability": 1.2}),
        json!({"oee": 0.8, "quality": -1}),
        json!({"availability": 0.9}),
        json!({"oee": 0.8, "other": 1}),
        json!({"oee": "high"}),
        json!([0.8]),
    ] {
        server
            .put_target("PT10", bad.clone())
            .await
            .assert_error(Status::BadRequest, "invalid_body");
    }
    server
        .put_target("NOPE", json!({"oee": 0.8}))
        .await
        .assert_error(Status::NotFound, "not_found");
    let viewer = server
        .call(
            Method::Put,
            "/api/ProductionUnit/PT10/target",
            Some(&server.viewer),
            Some(json!({"oee": 0.8})),
        )
        .await;
    viewer.assert_error(Status::Forbidden, "forbidden");

    let set = server
        .put_target(
            "PT10",
            json!({"oee": 0.85, "quality": 0.99, "performance": null}),
        )
        .await;
    assert_eq!(set.status, Status::Ok, "{}", set.text);
    let expected = json!({"oee": 0.85, "availability": null, "performance": null, "quality": 0.99});
    assert_eq!(set.json()["target"], expected);
    assert_eq!(set.json()["code"], "PT10");
    // Set again: every target replaced, the ones left out cleared.
    let set = server
        .put_target("PT10", json!({"oee": 0.0, "availability": 1}))
        .await;
    assert_eq!(
        set.json()["target"],
        json!({"oee": 0.0, "availability": 1.0, "performance": null, "quality": null})
    );
    let list = server.get("/api/ProductionUnit").await.json();
    let by_code = |code: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|u| u["code"] == code)
            .unwrap()
            .clone()
    };
    assert_eq!(by_code("PT10")["target"]["availability"], json!(1.0));
    assert_eq!(by_code("PT11")["target"], Value::Null);
    // Local data: setting a target enqueued nothing for the chain.
    let outbox = server.get("/api/outbox").await.json();
    assert_eq!(outbox, json!([]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_series_marks_days_under_target_and_sums_up() {
    let server = server().await;
    // 1–7 November at 0.6, 8–14 at 0.8 but the 10th at 0.5; target 0.7.
    for day in 1..=14 {
        let oee = match day {
            1..=7 => 0.6,
            10 => 0.5,
            _ => 0.8,
        };
        server.day("PT10", &format!("2026-11-{day:02}"), oee).await;
    }
    // Shift A of one day only, from its inputs.
    let body = json!({"unit": "PT10", "date": "2026-11-03", "shifts": {"A": {
        "planned_busy_time_s": 28800, "actual_production_time_s": 21600,
        "planned_unit_time_s": 10, "produced_quantity": 1800, "good_quantity": 1710}}});
    let stored = server.post_report(body).await;
    assert_eq!(stored.status, Status::Ok, "{}", stored.text);

    // Without a target: nothing is under it.
    let series = server
        .get("/api/DayReport/series?unit=PT10&from=2026-11-01&to=2026-11-14")
        .await;
    assert_eq!(series.status, Status::Ok, "{}", series.text);
    let series = series.json();
    assert_eq!(series["target"], Value::Null);
    assert_eq!(series["points"].as_array().unwrap().len(), 14);
    assert!(
        series["points"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["under_target"].is_null())
    );
    assert_eq!(series["summary"]["days_under_target_this_month"], 0);

    let set = server.put_target("PT10", json!({"oee": 0.7})).await;
    assert_eq!(set.status, Status::Ok, "{}", set.text);
    let series = server
        .get("/api/DayReport/series?unit=PT10&from=2026-11-01&to=2026-11-14&shift=day")
        .await
        .json();
    assert_eq!(series["unit"], "PT10");
    assert_eq!(series["shift"], "day");
    assert_eq!(series["target"]["oee"], json!(0.7));
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 14);
    assert_eq!(points[0]["date"], "2026-11-01");
    assert_eq!(points[13]["date"], "2026-11-14");
    assert_eq!(points[0]["availability"], json!(0.9));
    assert_eq!(points[0]["performance"], json!(0.95));
    assert_eq!(points[0]["quality"], json!(0.99));
    let under: Vec<&str> = points
        .iter()
        .filter(|p| p["under_target"] == json!(true))
        .map(|p| p["date"].as_str().unwrap())
        .collect();
    assert_eq!(
        under,
        [
            "2026-11-01",
            "2026-11-02",
            "2026-11-03",
            "2026-11-04",
            "2026-11-05",
            "2026-11-06",
            "2026-11-07",
            "2026-11-10"
        ]
    );
    assert_eq!(points[8]["under_target"], json!(false));
    let summary = &series["summary"];
    assert_eq!(summary["last_date"], "2026-11-14");
    assert_eq!(summary["last_oee"], json!(0.8));
    let avg = summary["avg_oee_7d"].as_f64().unwrap();
    assert!((avg - (0.8 * 6.0 + 0.5) / 7.0).abs() < 1e-9, "{avg}");
    assert_eq!(summary["trend"], "up");
    assert_eq!(summary["days_under_target_this_month"], 8);

    // A shorter range: the points are the range's, the summary still as of `to`.
    let series = server
        .get("/api/DayReport/series?unit=PT10&from=2026-11-07&to=2026-11-07")
        .await
        .json();
    assert_eq!(series["points"].as_array().unwrap().len(), 1);
    assert_eq!(series["summary"]["last_date"], "2026-11-07");
    assert_eq!(series["summary"]["days_under_target_this_month"], 7);
    assert_eq!(series["summary"]["trend"], Value::Null, "no week before");

    // Shift A: only the day that has it, computed from its inputs.
    let series = server
        .get("/api/DayReport/series?unit=PT10&from=2026-11-01&to=2026-11-14&shift=A")
        .await
        .json();
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 1, "{series}");
    assert_eq!(points[0]["date"], "2026-11-03");
    assert_eq!(points[0]["availability"], json!(0.75));
    let oee = points[0]["oee"].as_f64().unwrap();
    assert!(
        (oee - 0.75 * (10.0 * 1800.0 / 21600.0) * 0.95).abs() < 1e-9,
        "{oee}"
    );

    // An empty range, another unit: 200 with no points.
    let empty = server
        .get("/api/DayReport/series?unit=PT10&from=2026-10-01&to=2026-10-05")
        .await;
    assert_eq!(empty.status, Status::Ok, "{}", empty.text);
    assert_eq!(empty.json()["points"], json!([]));
    assert_eq!(empty.json()["summary"]["last_oee"], Value::Null);
    let other = server
        .get("/api/DayReport/series?unit=PT11&from=2026-11-01&to=2026-11-14")
        .await
        .json();
    assert_eq!(other["points"], json!([]));

    // Bounds: 366 days counting both ends is the most.
    let year = server
        .get("/api/DayReport/series?unit=PT10&from=2025-11-15&to=2026-11-15")
        .await;
    assert_eq!(year.status, Status::Ok, "{}", year.text);
    assert_eq!(year.json()["points"].as_array().unwrap().len(), 14);
    for (uri, status, code) in [
        (
            "unit=PT10&from=2025-11-14&to=2026-11-15",
            Status::BadRequest,
            "invalid_parameter",
        ),
        (
            "unit=PT10&from=2026-11-15&to=2026-11-14",
            Status::BadRequest,
            "invalid_parameter",
        ),
        (
            "unit=PT10&from=2026-11-31&to=2026-12-01",
            Status::BadRequest,
            "invalid_parameter",
        ),
        (
            "unit=PT10&from=2026-11-01&to=2026-11-14&shift=D",
            Status::BadRequest,
            "invalid_parameter",
        ),
        (
            "unit=P%20T&from=2026-11-01&to=2026-11-14",
            Status::BadRequest,
            "invalid_parameter",
        ),
        (
            "from=2026-11-01&to=2026-11-14",
            Status::BadRequest,
            "missing_parameter",
        ),
        (
            "unit=PT10&to=2026-11-14",
            Status::BadRequest,
            "missing_parameter",
        ),
        (
            "unit=NOPE&from=2026-11-01&to=2026-11-14",
            Status::NotFound,
            "not_found",
        ),
        (
            "unit=NOPE&from=2026-11-15&to=2026-11-14",
            Status::NotFound,
            "not_found",
        ),
    ] {
        server
            .get(&format!("/api/DayReport/series?{uri}"))
            .await
            .assert_error(status, code);
    }
    let anonymous = server
        .call(
            Method::Get,
            "/api/DayReport/series?unit=PT10&from=2026-11-01&to=2026-11-14",
            None,
            None,
        )
        .await;
    anonymous.assert_error(Status::Unauthorized, "unauthenticated");
    server.stop().await;
}

const NASTY: &str = "=HYPERLINK(\"http://x\"), and \"more\"\nnext line";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csv_exports_quote_rfc_4180_and_defuse_formulas() {
    let server = server().await;
    server.day("PT10", "2026-11-01", 0.61).await;
    server.day("PT11", "2026-11-02", 0.72).await;
    let url = server.schema.url().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = db::connect(&url).unwrap();
        let decision = decisions::record(
            &mut conn,
            &decisions::NewDecision {
                kind: "order",
                request_id: "ord-1",
                response: decisions::ACCEPT,
                operator: "+olga",
                correlation_id: Some("@corr"),
            },
        )
        .unwrap();
        orders::create_from_chain(
            &mut conn,
            &orders::NewProductionOrder {
                chain_order_id: "-act-1",
                issuing_agent: "02abc",
                order_type: "Production",
                description: NASTY,
                metadata: r#"{"Part": "A,1", "Size": "5\""}"#,
                chain_timestamp: 1_700_000_000,
                decision_id: Some(decision.id),
                status: orders::STATUS_PLANNED,
            },
        )
        .unwrap();
        outbox::enqueue(
            &mut conn,
            &outbox::NewOutboxRow {
                topic: "BLK_Rec_Crt",
                dedup_key: "=1+1",
                ordering_key: "\tunit:PT10",
                payload: r#"{"note": "a, \"b\"\nc"}"#,
                traceparent: None,
            },
        )
        .unwrap();
    })
    .await
    .unwrap();

    // Decisions.
    let answer = server.get("/api/decisions.csv").await;
    assert_eq!(
        answer.disposition.as_deref(),
        Some("attachment; filename=\"decisions.csv\"")
    );
    let (header, rows) = answer.csv();
    assert_eq!(
        header[..5],
        ["id", "kind", "request_id", "response", "operator"]
    );
    assert_eq!(rows.len(), 1);
    let cell = |name: &str, header: &[String], row: &[String]| {
        row[header.iter().position(|h| h == name).unwrap()].clone()
    };
    assert_eq!(cell("operator", &header, &rows[0]), "'+olga");
    assert_eq!(cell("correlation_id", &header, &rows[0]), "'@corr");
    assert_eq!(cell("response", &header, &rows[0]), "accept");
    let created = cell("created_at", &header, &rows[0]);
    assert!(
        chrono::DateTime::parse_from_rfc3339(&created).is_ok(),
        "{created}"
    );

    // Production orders: the formula, the commas, quotes and newline survive quoting.
    let answer = server.get("/api/production-orders.csv").await;
    assert_eq!(
        answer.disposition.as_deref(),
        Some("attachment; filename=\"production-orders.csv\"")
    );
    assert!(
        answer
            .text
            .contains("\"'=HYPERLINK(\"\"http://x\"\"), and \"\"more\"\"\nnext line\""),
        "{}",
        answer.text
    );
    let (header, rows) = answer.csv();
    assert_eq!(cell("description", &header, &rows[0]), format!("'{NASTY}"));
    assert_eq!(cell("chain_order_id", &header, &rows[0]), "'-act-1");
    let metadata: Value = serde_json::from_str(&cell("metadata", &header, &rows[0])).unwrap();
    assert_eq!(metadata, json!({"Part": "A,1", "Size": "5\""}));
    // Who accepted it and when, from its decision, in the export and in the list.
    assert_eq!(cell("accepted_by", &header, &rows[0]), "'+olga");
    let accepted_at = cell("accepted_at", &header, &rows[0]);
    assert_eq!(accepted_at, created, "accepted when the decision was taken");
    let listed = server.get("/api/production-orders").await.json();
    assert_eq!(listed[0]["accepted_by"], "+olga", "{listed}");
    assert_eq!(listed[0]["accepted_at"], created.as_str(), "{listed}");

    // Outbox.
    let answer = server.get("/api/outbox.csv").await;
    assert_eq!(
        answer.disposition.as_deref(),
        Some("attachment; filename=\"outbox.csv\"")
    );
    let (header, rows) = answer.csv();
    assert_eq!(header[0], "id");
    assert_eq!(rows.len(), 1);
    assert_eq!(cell("dedup_key", &header, &rows[0]), "'=1+1");
    assert_eq!(cell("ordering_key", &header, &rows[0]), "'\tunit:PT10");
    assert_eq!(
        cell("payload", &header, &rows[0]),
        r#"{"note": "a, \"b\"\nc"}"#
    );
    assert_eq!(cell("delivered_at", &header, &rows[0]), "");

    // Day reports: every unit, or one; bounds as for the series.
    let answer = server
        .get("/api/DayReport.csv?from=2026-11-01&to=2026-11-30")
        .await;
    assert_eq!(
        answer.disposition.as_deref(),
        Some("attachment; filename=\"day-reports-2026-11-01-2026-11-30.csv\"")
    );
    let (header, rows) = answer.csv();
    assert_eq!(
        header[..4],
        ["unit", "date", "shift", "planned_busy_time_s"]
    );
    assert!(header.contains(&"oee".to_owned()) && header.contains(&"mttr_s".to_owned()));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][..3], ["PT10", "2026-11-01", "DAY"]);
    assert_eq!(cell("oee", &header, &rows[0]), "0.61");
    assert_eq!(cell("planned_busy_time_s", &header, &rows[0]), "");
    let answer = server
        .get("/api/DayReport.csv?unit=PT11&from=2026-11-01&to=2026-11-30")
        .await;
    assert_eq!(
        answer.disposition.as_deref(),
        Some("attachment; filename=\"day-reports-PT11-2026-11-01-2026-11-30.csv\"")
    );
    let (_, rows) = answer.csv();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], "PT11");
    let (header, rows) = server
        .get("/api/DayReport.csv?from=2026-10-01&to=2026-10-31")
        .await
        .csv();
    assert_eq!(
        (header.len(), rows.len()),
        (18, 0),
        "an empty range: the header only"
    );
    for (uri, status, code) in [
        (
            "unit=NOPE&from=2026-11-01&to=2026-11-30",
            Status::NotFound,
            "not_found",
        ),
        (
            "from=2026-11-30&to=2026-11-01",
            Status::BadRequest,
            "invalid_parameter",
        ),
        (
            "from=2025-01-01&to=2026-11-01",
            Status::BadRequest,
            "invalid_parameter",
        ),
        ("from=2026-11-01", Status::BadRequest, "missing_parameter"),
        (
            "from=yesterday&to=2026-11-01",
            Status::BadRequest,
            "invalid_parameter",
        ),
    ] {
        server
            .get(&format!("/api/DayReport.csv?{uri}"))
            .await
            .assert_error(status, code);
    }
    for uri in [
        "/api/decisions.csv",
        "/api/outbox.csv",
        "/api/production-orders.csv",
        "/api/DayReport.csv?from=2026-11-01&to=2026-11-30",
    ] {
        server
            .call(Method::Get, uri, None, None)
            .await
            .assert_error(Status::Unauthorized, "unauthenticated");
    }
    server.stop().await;
}

/// One shift's inputs, as the console's form sends them.
fn shift_inputs(planned_min: f64, downtime_min: f64, produced: f64, good: f64) -> Value {
    json!({
        "planned_busy_time_s": planned_min * 60.0,
        "actual_production_time_s": (planned_min - downtime_min) * 60.0,
        "planned_unit_time_s": 30.0,
        "produced_quantity": produced,
        "good_quantity": good,
        "failure_count": 1,
        "repair_time_s": 600.0,
    })
}

/// Shifts entered one at a time (as the console's form does) make a day of all of
/// them; once the daily run enqueued the day, it is read-only: a change is a 409 and
/// nothing of it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifts_entered_one_by_one_sum_up_and_a_day_sent_to_the_chain_is_read_only() {
    let server = server().await;
    let date = "2026-10-05";
    for (shift, inputs) in [
        ("A", shift_inputs(480.0, 60.0, 700.0, 690.0)),
        ("B", shift_inputs(480.0, 0.0, 900.0, 880.0)),
    ] {
        let body = json!({"unit": "PT10", "date": date, "shifts": {shift: inputs}});
        let answer = server.post_report(body).await;
        assert_eq!(answer.status, Status::Ok, "{}", answer.text);
    }
    let stored = server
        .get(&format!("/api/DayReport?date={date}&unit=PT10"))
        .await
        .json();
    let day = stored[0]["shifts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["shift"] == "DAY")
        .cloned()
        .unwrap_or_else(|| panic!("no day row: {stored}"));
    assert_eq!(day["inputs"]["planned_busy_time_s"], 960.0 * 60.0, "{day}");
    assert_eq!(day["inputs"]["produced_quantity"], 1600.0, "{day}");
    assert_eq!(day["inputs"]["good_quantity"], 1570.0, "{day}");
    // A = 900/960, P = 30 s × 1600 / 900 min, Q = 1570/1600.
    let oee = day["kpis"]["oee"].as_f64().unwrap();
    let expected = (900.0 / 960.0) * (30.0 * 1600.0 / (900.0 * 60.0)) * (1570.0 / 1600.0);
    assert!((oee - expected).abs() < 1e-9, "{oee} against {expected}");
    assert_eq!(stored[0]["enqueued"], false);

    let run = server
        .call(
            Method::Post,
            &format!("/api/reports/daily/run?date={date}"),
            Some(&server.operator),
            None,
        )
        .await;
    assert_eq!(run.status, Status::Ok, "{}", run.text);
    assert_eq!(run.json()["enqueued"], json!(["PT10"]), "{}", run.text);

    let late = json!({"unit": "PT10", "date": date, "shifts": {"C": shift_inputs(480.0, 0.0, 10.0, 10.0)}});
    let answer = server.post_report(late).await;
    answer.assert_error(Status::Conflict, "conflict");
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("already sent to the chain"),
        "{}",
        answer.text
    );
    let after = server
        .get(&format!("/api/DayReport?date={date}&unit=PT10"))
        .await
        .json();
    assert_eq!(after[0]["enqueued"], true);
    assert_eq!(
        after[0]["shifts"], stored[0]["shifts"],
        "nothing of the refused change is stored"
    );
    server.stop().await;
}

/// A day a feed stored as indicators only (no inputs) keeps its day when one shift is
/// then entered by hand: the shifts cannot be summed, and a part of the day is not the
/// day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shift_entered_by_hand_leaves_a_day_given_as_indicators_alone() {
    let server = server().await;
    let date = "2026-10-06";
    let given = json!({"availability": 0.9, "performance": 0.9, "quality": 0.99, "oee": 0.8});
    let feed = json!({"unit": "PT10", "date": date,
        "shifts": {"A": given, "B": given, "DAY": given}});
    let answer = server.post_report(feed).await;
    assert_eq!(answer.status, Status::Ok, "{}", answer.text);
    let by_hand = json!({"unit": "PT10", "date": date,
        "shifts": {"C": shift_inputs(480.0, 240.0, 300.0, 200.0)}});
    let answer = server.post_report(by_hand).await;
    assert_eq!(answer.status, Status::Ok, "{}", answer.text);
    let stored = answer.json();
    let shift = |name: &str| {
        stored["shifts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["shift"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name}: {stored}"))
    };
    assert_eq!(shift("DAY")["kpis"]["oee"], 0.8, "{stored}");
    assert!(
        shift("C")["kpis"]["oee"].as_f64().unwrap() < 0.5,
        "{stored}"
    );
    server.stop().await;
}
