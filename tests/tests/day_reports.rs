//! A day report stored while the daily run enqueues the same day, on PostgreSQL: the
//! two meet on the unit's row lock, so the chain gets what the MES stores. The worst
//! timing is forced: the daily run starts while a store holds the lock and has written
//! its change but not committed it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use diesel::Connection;
use mes_api::service::chain::day_report_dedup_key;
use mes_api::service::reports::{
    DayReportInput, ReportError, ShiftInput, ShiftsInput, daily_run, get_day_report,
    store_day_report,
};
use mes_api::service::units::{NewUnit, UnitService};
use mes_core::db::{self, DbConnection, outbox};
use mes_e2e::db::PgSchema;

const DATE: &str = "2026-10-05";

/// Shift A of the day with `produced` parts (all good but ten).
fn report(produced: f64) -> DayReportInput {
    DayReportInput {
        unit: "PT10".into(),
        date: DATE.into(),
        shifts: ShiftsInput {
            a: Some(ShiftInput {
                planned_busy_time_s: Some(28_800.0),
                actual_production_time_s: Some(25_200.0),
                planned_unit_time_s: Some(30.0),
                produced_quantity: Some(produced),
                good_quantity: Some(produced - 10.0),
                failure_count: Some(1),
                repair_time_s: Some(600.0),
                ..ShiftInput::default()
            }),
            ..ShiftsInput::default()
        },
    }
}

/// The day's OEE as stored, as JSON text (as the outbox payload writes numbers).
fn stored_oee(conn: &mut DbConnection) -> String {
    let date = NaiveDate::parse_from_str(DATE, "%Y-%m-%d").unwrap();
    let day = get_day_report(conn, "PT10", date).unwrap().unwrap();
    let oee = day
        .shifts
        .iter()
        .find(|s| s.shift == mes_core::report::Shift::Day)
        .and_then(|s| s.kpis.oee)
        .unwrap();
    serde_json::to_string(&oee).unwrap()
}

/// The backend pid of `conn`'s session.
fn backend_pid(conn: &mut DbConnection) -> i32 {
    use diesel::RunQueryDsl;
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
        "pg_backend_pid()",
    ))
    .get_result(conn)
    .unwrap()
}

/// Whether session `pid` waits for a lock.
fn waits_for_a_lock(conn: &mut DbConnection, pid: i32) -> bool {
    use diesel::RunQueryDsl;
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
        "EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = {pid} AND wait_event_type = 'Lock')"
    )))
    .get_result(conn)
    .unwrap()
}

#[test]
fn a_daily_run_waits_for_a_store_of_the_same_unit_and_enqueues_its_change() {
    let schema = PgSchema::create_in(&mes_e2e::database_url());
    let mut conn = db::connect(schema.url()).unwrap();
    UnitService::without_hooks()
        .create(
            &mut conn,
            &NewUnit {
                code: "PT10".into(),
                name: "Press PT10".into(),
                status: "RUNNING".into(),
                process_name: None,
            },
        )
        .unwrap();
    store_day_report(&mut conn, &report(700.0)).unwrap();
    let before = stored_oee(&mut conn);

    // A store in progress: the change written, the transaction open.
    let mut storing = db::connect(schema.url()).unwrap();
    let mut observer = db::connect(schema.url()).unwrap();
    let mut running = db::connect(schema.url()).unwrap();
    let pid = backend_pid(&mut running);
    let run = storing
        .transaction::<_, ReportError, _>(|storing| {
            store_day_report(storing, &report(400.0))?;
            // The daily run of the same day starts now, on another connection.
            let run = std::thread::spawn(move || {
                let date = NaiveDate::parse_from_str(DATE, "%Y-%m-%d").unwrap();
                daily_run(&mut running, date).unwrap()
            });
            // It must wait for the store rather than read the day as it was.
            let until = Instant::now() + Duration::from_secs(30);
            while !waits_for_a_lock(&mut observer, pid) {
                assert!(
                    !run.is_finished(),
                    "the daily run did not wait for the store: it read the day as it was"
                );
                assert!(
                    Instant::now() < until,
                    "the daily run neither waited nor ended"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(run)
        })
        .unwrap();
    // The store commits; the run goes on and reads the day with the change.
    let outcome = run.join().unwrap();
    assert_eq!(outcome.enqueued, ["PT10"], "{outcome:?}");
    let after = stored_oee(&mut conn);
    assert_ne!(before, after, "the change was stored");
    let date = NaiveDate::parse_from_str(DATE, "%Y-%m-%d").unwrap();
    let row = outbox::get_by_dedup_key(&mut conn, &day_report_dedup_key("PT10", date))
        .unwrap()
        .expect("the day was enqueued");
    assert!(
        row.payload.contains(&after) && !row.payload.contains(&before),
        "the chain gets the OEE stored ({after}), not the one before ({before}): {}",
        row.payload
    );

    // After the run, the day is read-only.
    let refused = store_day_report(&mut conn, &report(500.0)).unwrap_err();
    assert!(
        matches!(refused, ReportError::AlreadySent { .. }),
        "{refused}"
    );
    assert_eq!(
        stored_oee(&mut conn),
        after,
        "nothing of the refused change"
    );
}
