//! Service-layer tests: each is written once and runs on PostgreSQL and on SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use chrono::{Days, NaiveDate, TimeZone, Utc};
use mes_api::service::reports::{
    self, DayReportInput, ReportError, ShiftInput, ShiftsInput, catch_up, daily_run,
    store_day_report,
};
use mes_api::service::schedule::{ReportSchedule, ScheduleError};
use mes_api::service::units::{
    ChainHook, HookError, NewUnit, ProductionUnitHook, Reporter, UnitChange, UnitError, UnitPatch,
    UnitService,
};
use mes_core::db::{DbConnection, outbox, tokens};
use serde_json::{Value, json};

use common::backend_tests;

/// A valid agent key (docs/protocol.md's example `receiving_agent`).
const AGENT: &str = "032f3f2b5424d6d3058a69972e6986aaff57a57ba79d43700bd4fa5763c5774ee4";

fn new_unit(code: &str) -> NewUnit {
    NewUnit {
        code: code.into(),
        name: "Press 10".into(),
        status: "RUNNING".into(),
        process_name: Some("Stamping".into()),
    }
}

fn patch(status: &str, process: Option<&str>) -> UnitPatch {
    UnitPatch {
        status: Some(status.into()),
        process_name: Some(process.map(str::to_owned)),
    }
}

/// Every outbox row, oldest first, as (topic, dedup key, ordering key, body).
fn rows(conn: &mut DbConnection) -> Vec<(String, String, String, Value)> {
    let mut all = outbox::list(conn, None, 10_000, 0).unwrap();
    all.sort_by_key(|r| r.id);
    all.into_iter()
        .map(|r| {
            let body = serde_json::from_str(&r.payload).unwrap();
            (r.topic, r.dedup_key, r.ordering_key, body)
        })
        .collect()
}

fn actions(conn: &mut DbConnection) -> Vec<String> {
    rows(conn)
        .into_iter()
        .map(|(_, _, _, body)| body["action"].as_str().unwrap().to_owned())
        .collect()
}

fn put_master(conn: &mut DbConnection, public_key: Option<&str>) {
    tokens::put(
        conn,
        &tokens::NewKafkaToken {
            instance_type: tokens::MASTER,
            token: "T",
            public_key,
            ..Default::default()
        },
    )
    .unwrap();
}

struct Refuse;

impl ProductionUnitHook for Refuse {
    fn name(&self) -> &str {
        "refuse"
    }

    fn on_change(&self, _: &mut DbConnection, change: UnitChange<'_>) -> Result<(), HookError> {
        if change.old.is_some() {
            Err(HookError::new("refuse", "no changes today"))
        } else {
            Ok(())
        }
    }
}

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// A realistic shift: 8 h planned, 7 h run, 30 s per item, 720 made, 700 good,
/// 2 failures, 10 min repairing.
fn shift() -> ShiftInput {
    ShiftInput {
        planned_busy_time_s: Some(28_800.0),
        actual_production_time_s: Some(25_200.0),
        planned_unit_time_s: Some(30.0),
        produced_quantity: Some(720.0),
        good_quantity: Some(700.0),
        failure_count: Some(2),
        repair_time_s: Some(600.0),
        ..ShiftInput::default()
    }
}

fn report(unit: &str, date: NaiveDate) -> DayReportInput {
    DayReportInput {
        unit: unit.into(),
        date: date.format("%Y-%m-%d").to_string(),
        shifts: ShiftsInput {
            a: Some(shift()),
            b: Some(ShiftInput {
                availability: Some(0.5),
                ..ShiftInput::default()
            }),
            ..ShiftsInput::default()
        },
    }
}

backend_tests! {
    fn create_enqueues_record_type_record_and_reporter_in_order(conn: &mut DbConnection) {
        put_master(conn, Some(AGENT));
        let unit = UnitService::default().create(conn, &new_unit("PT10")).unwrap();
        assert_eq!(unit.code, "PT10");
        assert_eq!(unit.process_name.as_deref(), Some("Stamping"));

        let rows = rows(conn);
        let keys: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|(t, d, o, _)| (t.as_str(), d.as_str(), o.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("BLK_Rty", "unit:PT10:record-type", "unit:PT10"),
                ("BLK_Rec", "unit:PT10:record", "unit:PT10"),
                ("BLK_Rec", &*format!("unit:PT10:reporter:{AGENT}"), "unit:PT10"),
            ]
        );
        assert_eq!(
            rows[0].3,
            json!({"action": "create_record_type", "name": "ProductionUnit", "properties": [
                {"name": "name", "data_type": "STRING", "required": true},
                {"name": "status", "data_type": "STRING", "required": true},
                {"name": "process_name", "data_type": "STRING", "required": false}]})
        );
        assert_eq!(
            rows[1].3,
            json!({"action": "create_record", "record_id": "PT10", "record_type": "ProductionUnit",
                   "properties": [{"name": "name", "value": "Press 10"},
                                  {"name": "status", "value": "RUNNING"},
                                  {"name": "process_name", "value": "Stamping"}]})
        );
        assert_eq!(
            rows[2].3,
            json!({"action": "add_reporter", "record_id": "PT10", "reporter": AGENT,
                   "properties": ["status", "process_name"]})
        );
    }

    fn patch_updates_the_unit_and_enqueues_its_update_after_the_record(conn: &mut DbConnection) {
        put_master(conn, Some(AGENT));
        let service = UnitService::default();
        service.create(conn, &new_unit("PT10")).unwrap();
        let first = service.patch(conn, "PT10", &patch("STOPPED", Some("Maintenance"))).unwrap();
        assert_eq!(first.status, "STOPPED");
        assert_eq!(first.process_name.as_deref(), Some("Maintenance"));
        assert_eq!(service.get(conn, "PT10").unwrap(), first, "what PATCH returns is stored");
        let second = service.patch(conn, "PT10", &patch("RUNNING", None)).unwrap();
        assert_eq!(second.process_name, None, "ProcessName null clears the process");

        assert_eq!(
            actions(conn),
            ["create_record_type", "create_record", "add_reporter", "update_properties", "update_properties"],
            "record type, record and reporter once per unit, then one update per PATCH"
        );
        let rows = rows(conn);
        assert!(rows.iter().all(|r| r.2 == "unit:PT10"), "one ordering key per unit");
        assert_eq!(
            rows[3].3,
            json!({"action": "update_properties", "record_id": "PT10", "properties": [
                {"name": "status", "value": "STOPPED"}, {"name": "process_name", "value": "Maintenance"}]})
        );
        assert_eq!(
            rows[4].3["properties"],
            json!([{"name": "status", "value": "RUNNING"}, {"name": "process_name", "value": null}])
        );
        assert_ne!(rows[3].1, rows[4].1, "each update has its own dedup key");
    }

    fn absent_patch_fields_stay_as_they_are(conn: &mut DbConnection) {
        let service = UnitService::new(ChainHook::new(Reporter::None));
        service.create(conn, &new_unit("PT10")).unwrap();
        let body: UnitPatch = serde_json::from_str(r#"{"Status": "IDLE"}"#).unwrap();
        let unit = service.patch(conn, "PT10", &body).unwrap();
        assert_eq!(unit.status, "IDLE");
        assert_eq!(unit.process_name.as_deref(), Some("Stamping"));
        let original: UnitPatch =
            serde_json::from_str(r#"{"Status": "RUN", "ProcessName": "Cut"}"#).unwrap();
        assert_eq!(original, patch("RUN", Some("Cut")), "the original's body");
        assert!(serde_json::from_str::<UnitPatch>(r#"{"status": "RUN"}"#).is_err());
        assert_eq!(
            actions(conn),
            ["create_record_type", "create_record", "update_properties"],
            "no add_reporter without a reporter"
        );
    }

    fn without_a_master_public_key_no_reporter_is_added(conn: &mut DbConnection) {
        put_master(conn, None);
        let service = UnitService::default();
        service.create(conn, &new_unit("PT10")).unwrap();
        service.patch(conn, "PT10", &patch("STOPPED", None)).unwrap();
        assert_eq!(actions(conn), ["create_record_type", "create_record", "update_properties"]);
        // Once the key is known, the next change adds the reporter before its update.
        put_master(conn, Some(AGENT));
        service.patch(conn, "PT10", &patch("RUNNING", None)).unwrap();
        assert_eq!(
            actions(conn)[3..],
            ["add_reporter", "update_properties"]
        );
    }

    fn a_failing_hook_rolls_back_the_unit_and_its_outbox_rows(conn: &mut DbConnection) {
        let service = UnitService::new(ChainHook::new(Reporter::Agent(AGENT.parse().unwrap())))
            .with_hook(Refuse);
        assert_eq!(service.hook_names(), ["chain", "refuse"]);
        service.create(conn, &new_unit("PT10")).unwrap();
        let before = rows(conn);
        let err = service.patch(conn, "PT10", &patch("STOPPED", None)).unwrap_err();
        assert!(matches!(&err, UnitError::Hook(h) if h.hook == "refuse"), "{err:?}");
        let unit = service.get(conn, "PT10").unwrap();
        assert_eq!(unit.status, "RUNNING", "the change was rolled back");
        assert_eq!(unit.process_name.as_deref(), Some("Stamping"));
        assert_eq!(rows(conn), before, "the chain hook's update was rolled back with it");
    }

    fn unit_errors_are_typed(conn: &mut DbConnection) {
        let service = UnitService::default();
        service.create(conn, &new_unit("PT10")).unwrap();
        assert!(matches!(
            service.create(conn, &new_unit("PT10")),
            Err(UnitError::AlreadyExists(code)) if code == "PT10"
        ));
        assert!(matches!(
            service.patch(conn, "PT99", &patch("X", None)),
            Err(UnitError::NotFound(code)) if code == "PT99"
        ));
        for code in ["", "PT_10", "PT 10", &"x".repeat(65)] {
            assert!(
                matches!(service.create(conn, &new_unit(code)), Err(UnitError::Invalid { field: "code", .. })),
                "{code:?}"
            );
        }
        assert!(matches!(
            service.patch(conn, "PT10", &patch(" ", None)),
            Err(UnitError::Invalid { field: "Status", .. })
        ));
        assert!(matches!(
            service.get_by_id(conn, 4242),
            Err(UnitError::NotFound(_))
        ));
        assert_eq!(service.list(conn).unwrap().len(), 1);
        assert_eq!(actions(conn).len(), 2, "refused calls enqueue nothing");
    }

    fn every_unit_has_its_own_sequence(conn: &mut DbConnection) {
        let service = UnitService::new(ChainHook::new(Reporter::None));
        service.create(conn, &new_unit("A1")).unwrap();
        service.create(conn, &new_unit("B2")).unwrap();
        service.patch(conn, "B2", &patch("STOPPED", None)).unwrap();
        let b: Vec<String> = rows(conn)
            .into_iter()
            .filter(|r| r.2 == "unit:B2")
            .map(|r| r.3["action"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            b,
            ["create_record_type", "create_record", "update_properties"],
            "B2 does not depend on A1's rows being delivered first"
        );
    }

    fn store_day_report_computes_the_indicators_and_the_day(conn: &mut DbConnection) {
        UnitService::without_hooks().create(conn, &new_unit("PT10")).unwrap();
        let stored = store_day_report(conn, &report("PT10", day(2021, 1, 11))).unwrap();
        assert_eq!(stored.report_id, "001_21_01_02_PT10");
        assert!(!stored.enqueued);
        let shifts: Vec<&str> = stored.shifts.iter().map(|s| s.shift.label()).collect();
        assert_eq!(shifts, ["A", "B", "DAY"], "the day is computed when not given");
        let a = stored.shifts[0].kpis;
        assert_eq!(a.availability, Some(0.875));
        assert_eq!(a.performance, Some(30.0 * 720.0 / 25_200.0));
        assert_eq!(a.mttr_s, Some(300.0));
        assert_eq!(a.mtbf_s, Some(25_200.0 / 3.0));
        let b = stored.shifts[1].kpis;
        assert_eq!(b.availability, Some(0.5), "given indicators are kept");
        assert_eq!(b.oee, None);
        // B gave no inputs, so the day's totals are A's.
        assert_eq!(stored.shifts[2].kpis, a);

        // Storing again replaces the shifts given, and the day given now wins.
        let mut again = report("PT10", day(2021, 1, 11));
        again.shifts.b = None;
        again.shifts.day = Some(ShiftInput { oee: Some(0.5), ..ShiftInput::default() });
        let stored = store_day_report(conn, &again).unwrap();
        assert_eq!(stored.shifts.len(), 3);
        assert_eq!(stored.shifts[2].kpis.oee, Some(0.5));
        assert_eq!(stored.shifts[2].kpis.availability, None);
    }

    fn store_day_report_refuses_bad_input(conn: &mut DbConnection) {
        UnitService::without_hooks().create(conn, &new_unit("PT10")).unwrap();
        let ok = report("PT10", day(2021, 1, 11));
        let err = store_day_report(conn, &report("PT99", day(2021, 1, 11))).unwrap_err();
        assert!(matches!(&err, ReportError::UnknownUnit(u) if u == "PT99"), "{err:?}");
        for date in ["2021-13-01", "11/01/2021", "", "2021-02-30", "1999-12-31"] {
            let err = store_day_report(conn, &DayReportInput { date: date.into(), ..ok.clone() })
                .unwrap_err();
            assert!(matches!(err, ReportError::BadDate { .. }), "{date:?}: {err:?}");
        }
        let future = Utc::now().date_naive() + Days::new(2);
        assert!(matches!(
            store_day_report(conn, &report("PT10", future)),
            Err(ReportError::BadDate { .. })
        ));
        let bad = [
            ShiftInput { availability: Some(1.5), ..ShiftInput::default() },
            ShiftInput { quality: Some(-0.1), ..ShiftInput::default() },
            ShiftInput { oee: Some(f64::NAN), ..ShiftInput::default() },
            ShiftInput { planned_busy_time_s: Some(90_000.0), ..ShiftInput::default() },
            ShiftInput { failure_count: Some(-1), ..ShiftInput::default() },
            ShiftInput { good_quantity: Some(800.0), ..shift() },
            ShiftInput { actual_production_time_s: Some(30_000.0), ..shift() },
        ];
        for values in bad {
            let mut input = ok.clone();
            input.shifts.c = Some(values);
            let err = store_day_report(conn, &input).unwrap_err();
            assert!(
                matches!(err, ReportError::OutOfRange { shift: mes_core::report::Shift::C, .. }),
                "{values:?}: {err:?}"
            );
        }
        let none = DayReportInput { shifts: ShiftsInput::default(), ..ok.clone() };
        assert!(matches!(store_day_report(conn, &none), Err(ReportError::Invalid(_))));
        assert!(
            reports::get_day_report(conn, "PT10", day(2021, 1, 11)).unwrap().is_none(),
            "nothing refused was stored"
        );
        let typo = r#"{"unit": "PT10", "date": "2021-01-11", "shifts": {"A": {"availabilty": 1}}}"#;
        assert!(serde_json::from_str::<DayReportInput>(typo).is_err(), "unknown fields are refused");
    }

    fn daily_run_enqueues_each_report_once_with_its_ids(conn: &mut DbConnection) {
        let units = UnitService::without_hooks();
        units.create(conn, &new_unit("PT10")).unwrap();
        units.create(conn, &new_unit("PT11")).unwrap();
        units.create(conn, &new_unit("PT12")).unwrap();
        let date = day(2021, 1, 11);
        store_day_report(conn, &report("PT10", date)).unwrap();
        store_day_report(conn, &report("PT12", date)).unwrap();

        let run = daily_run(conn, date).unwrap();
        assert_eq!(run.enqueued, ["PT10", "PT12"]);
        assert_eq!(run.no_report, ["PT11"], "a unit without a report is skipped");
        assert!(run.already_enqueued.is_empty());
        let first = rows(conn);
        let keys: Vec<(&str, &str, &str)> = first
            .iter()
            .map(|(t, d, o, _)| (t.as_str(), d.as_str(), o.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("BLK_Rty", "day-report:PT10:record-type", "day-report:PT10"),
                ("BLK_Rec", "day-report:PT10:2021-01-11", "day-report:PT10"),
                ("BLK_Rty", "day-report:PT12:record-type", "day-report:PT12"),
                ("BLK_Rec", "day-report:PT12:2021-01-11", "day-report:PT12"),
            ]
        );
        assert_eq!(first[0].3["name"], "DayReport");
        let body = &first[1].3;
        assert_eq!(body["action"], "create_day_report");
        assert_eq!(body["report_id"], "001_21_01_02_PT10");
        assert_eq!(body["unit"], "PT10");
        assert_eq!(body["date"], "2021-01-11");
        let records = body["records"].as_array().unwrap();
        assert_eq!(records.len(), 21, "A, B and the day, seven indicators each");
        assert_eq!(
            records[0],
            json!({"record_id": "001_21_01_02_PT10_101", "shift": "A", "indicator": "availability", "value": 0.875})
        );
        let ids: Vec<&str> = records.iter().map(|r| r["record_id"].as_str().unwrap()).collect();
        assert_eq!(ids[7], "001_21_01_02_PT10_201");
        assert_eq!(ids[17], "001_21_01_02_PT10_404", "the day's OEE");
        assert_eq!(records[17]["shift"], "DAY");
        assert_eq!(records[17]["indicator"], "oee");
        assert_eq!(records[8]["value"], Value::Null, "B's performance was not given");

        // A second run, as another server or after a restart, adds nothing.
        let again = daily_run(conn, date).unwrap();
        assert!(again.enqueued.is_empty());
        assert_eq!(again.already_enqueued, ["PT10", "PT12"]);
        assert_eq!(rows(conn), first);
        assert!(reports::get_day_report(conn, "PT10", date).unwrap().unwrap().enqueued);

        // PT11's report arrives late: the next run for that date publishes it.
        store_day_report(conn, &report("PT11", date)).unwrap();
        assert_eq!(daily_run(conn, date).unwrap().enqueued, ["PT11"]);
    }

    fn catch_up_enqueues_only_the_lookback_days(conn: &mut DbConnection) {
        UnitService::without_hooks().create(conn, &new_unit("PT10")).unwrap();
        let today = day(2021, 1, 20);
        for back in 1..=10 {
            store_day_report(conn, &report("PT10", today - Days::new(back))).unwrap();
        }
        store_day_report(conn, &report("PT10", today)).unwrap();
        let runs = catch_up(conn, today, 3).unwrap();
        let dates: Vec<NaiveDate> = runs.iter().map(|r| r.date).collect();
        assert_eq!(dates, [day(2021, 1, 17), day(2021, 1, 18), day(2021, 1, 19)]);
        let reports: Vec<String> = rows(conn)
            .into_iter()
            .filter(|r| r.0 == "BLK_Rec")
            .map(|r| r.1)
            .collect();
        assert_eq!(
            reports,
            ["day-report:PT10:2021-01-17", "day-report:PT10:2021-01-18", "day-report:PT10:2021-01-19"],
            "oldest first, today excluded"
        );
        let runs = catch_up(conn, today, 5).unwrap();
        let newly: Vec<usize> = runs.iter().map(|r| r.enqueued.len()).collect();
        assert_eq!(newly, [1, 1, 0, 0, 0], "days already enqueued are not enqueued again");
        assert!(catch_up(conn, today, 0).unwrap().is_empty());
        assert!(matches!(
            catch_up(conn, today, reports::MAX_LOOKBACK_DAYS + 1),
            Err(ReportError::LookbackTooLong { .. })
        ));
    }
}

/// Concurrent patches of one unit: the chain's last value is the database's.
fn concurrent_patches_end_with_the_stored_value(url: &str) {
    let mut setup = mes_core::db::connect(url).unwrap();
    let service = UnitService::new(ChainHook::new(Reporter::None));
    service.create(&mut setup, &new_unit("PT10")).unwrap();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let url = url.to_owned();
            let service = service.clone();
            std::thread::spawn(move || {
                let mut conn = mes_core::db::establish(&url).unwrap();
                for i in 0..15 {
                    service
                        .patch(&mut conn, "PT10", &patch(&format!("S{t}-{i}"), None))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let updates: Vec<Value> = rows(&mut setup)
        .into_iter()
        .filter(|r| r.3["action"] == "update_properties")
        .map(|r| r.3["properties"][0]["value"].clone())
        .collect();
    assert_eq!(updates.len(), 30);
    let stored = service.get(&mut setup, "PT10").unwrap();
    assert_eq!(updates.last().unwrap(), &json!(stored.status));
}

#[test]
fn postgres_concurrent_patches_end_with_the_stored_value() {
    let schema = common::PgSchema::create();
    concurrent_patches_end_with_the_stored_value(schema.url());
}

#[test]
fn sqlite_concurrent_patches_end_with_the_stored_value() {
    let file = common::SqliteFile::create();
    concurrent_patches_end_with_the_stored_value(&file.url());
}

#[test]
fn schedule_settings_are_validated() {
    let ok = ReportSchedule::default_schedule().unwrap();
    assert_eq!(ok.cron_expr(), "0 30 9 * * *");
    assert_eq!(ok.time_zone(), chrono_tz::UTC);
    assert_eq!(ok.lookback_days(), 7);
    for expr in [
        "",
        "30 9 * * *",
        "0 61 9 * * *",
        "every day",
        "0 30 9 * * * * *",
    ] {
        assert!(
            matches!(
                ReportSchedule::new(expr, chrono_tz::UTC, 7),
                Err(ScheduleError::InvalidCron { .. })
            ),
            "{expr:?}"
        );
    }
    assert!(matches!(
        ReportSchedule::new("0 0 0 30 2 *", chrono_tz::UTC, 7),
        Err(ScheduleError::NeverRuns(_) | ScheduleError::InvalidCron { .. })
    ));
    // Unknown time zones are refused when the settings are read (`MES_REPORT_TZ` is a
    // `chrono_tz::Tz`): config::tests::bad_report_settings_name_their_environment_variable.
    assert!(matches!(
        ReportSchedule::new("0 30 9 * * *", chrono_tz::UTC, 367),
        Err(ScheduleError::LookbackTooLong {
            days: 367,
            max: 366
        })
    ));
    assert!(ReportSchedule::new("0 30 9 * * *", chrono_tz::Europe::Lisbon, 0).is_ok());
}

#[test]
fn runs_follow_the_time_zone_across_daylight_saving() {
    let s = ReportSchedule::new("0 30 9 * * *", chrono_tz::Europe::Lisbon, 7).unwrap();
    // Lisbon moves from UTC+0 to UTC+1 on Sunday 2026-03-29.
    let saturday = Utc.with_ymd_and_hms(2026, 3, 28, 10, 0, 0).unwrap();
    let next = s.next_run_after(saturday).unwrap();
    assert_eq!(
        next.with_timezone(&Utc),
        Utc.with_ymd_and_hms(2026, 3, 29, 8, 30, 0).unwrap()
    );
    assert_eq!(ReportSchedule::report_date(&next), day(2026, 3, 28));
    let before = s
        .next_run_after(Utc.with_ymd_and_hms(2026, 3, 27, 10, 0, 0).unwrap())
        .unwrap();
    assert_eq!(
        before.with_timezone(&Utc),
        Utc.with_ymd_and_hms(2026, 3, 28, 9, 30, 0).unwrap()
    );

    // Before today's run is due, the catch-up's today is yesterday.
    let utc = ReportSchedule::default_schedule().unwrap();
    let early = Utc.with_ymd_and_hms(2021, 1, 12, 9, 29, 59).unwrap();
    assert_eq!(utc.catch_up_today(early), Some(day(2021, 1, 11)));
    let on_time = Utc.with_ymd_and_hms(2021, 1, 12, 9, 30, 0).unwrap();
    assert_eq!(utc.catch_up_today(on_time), Some(day(2021, 1, 12)));
}

/// The job catches up at start and then runs on schedule (every second here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_catches_up_at_start_and_runs_on_schedule() {
    use mes_api::service::schedule::DailyReportJob;

    let file = common::SqliteFile::create();
    let pool = mes_core::db::pool(&file.url(), 2).unwrap();
    let today = Utc::now().date_naive();
    let yesterday = today - Days::new(1);
    let two_days_ago = today - Days::new(2);
    {
        let mut conn = pool.get().unwrap();
        UnitService::without_hooks()
            .create(&mut conn, &new_unit("PT10"))
            .unwrap();
        store_day_report(&mut conn, &report("PT10", two_days_ago)).unwrap();
    }
    // Catch-up looks back 1 day before the last due run (one second ago at most),
    // i.e. yesterday: nothing stored for it yet.
    let schedule = ReportSchedule::new("* * * * * *", chrono_tz::UTC, 1).unwrap();
    let job = DailyReportJob::start(schedule, pool.clone()).await.unwrap();
    let caught_up = job.caught_up().unwrap();
    assert_eq!(caught_up.len(), 1);
    assert_eq!(caught_up[0].date, yesterday);
    assert_eq!(caught_up[0].no_report, ["PT10"]);

    // Stored now, yesterday's report goes out with the next run.
    {
        let mut conn = pool.get().unwrap();
        store_day_report(&mut conn, &report("PT10", yesterday)).unwrap();
    }
    let key = mes_api::service::chain::day_report_dedup_key("PT10", yesterday);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let found = {
            let mut conn = pool.get().unwrap();
            outbox::get_by_dedup_key(&mut conn, &key).unwrap()
        };
        if found.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled run within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    job.shutdown().await.unwrap();
    let mut conn = pool.get().unwrap();
    let old = mes_api::service::chain::day_report_dedup_key("PT10", two_days_ago);
    assert!(
        outbox::get_by_dedup_key(&mut conn, &old).unwrap().is_none(),
        "days before the look-back are left alone"
    );
}
