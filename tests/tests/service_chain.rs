//! The service layer's outbox rows delivered to `chain-sim` on the real broker, from a
//! real PostgreSQL database: the simulator accepts every body, in order (record type,
//! record, reporter, property update; day-report type and day report), and the chain
//! ends up with what the MES stored.
//!
//! The relay is a small loop here (claim → request with the row's dedup key as `idem`
//! → mark done); kafka-bridge's outbox relay does the same in production.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chain_sim::{DEFAULT_TOKEN, SimConfig, SimHandle, SimTopics, Simulator};
use chrono::{Duration, NaiveDate};
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use kafka_bridge::bridge::{Bridge, BridgeConfig, CallOptions, Created};
use kafka_bridge::kafka::KafkaConfig;
use mes_api::service::reports::{
    DayReportInput, ShiftInput, ShiftsInput, daily_run, store_day_report,
};
use mes_api::service::units::{NewUnit, UnitPatch, UnitService};
use mes_core::codec::{RecordAction, RecordTypeAction, Topic};
use mes_core::db::{self, DbConnection, outbox, tokens};
use mes_core::signing::SigningKey;
use mes_e2e::{database_url, kafka_brokers};
use serde_json::Value;

/// A schema of its own on the test server, dropped on drop.
struct Schema {
    admin: PgConnection,
    name: String,
    url: String,
}

impl Schema {
    fn create() -> Schema {
        let base = database_url();
        let mut admin = PgConnection::establish(&base).unwrap();
        let name = format!("e2e_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .unwrap();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{name}");
        Schema { admin, name, url }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = self
            .admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}

async fn simulator() -> SimHandle {
    let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
    let mut config = SimConfig::new(kafka_brokers());
    config.topics = SimTopics::with_suffix(&suffix);
    config.group_id = format!("chain-sim{suffix}");
    Simulator::start(config).await.unwrap()
}

/// What the chain answered to one delivered row.
#[derive(Debug)]
struct Delivered {
    ordering_key: String,
    action: String,
    created: Created,
}

/// Delivers every due row until none is left, oldest first, the way the relay does.
async fn deliver_all(conn: &mut DbConnection, bridge: &Bridge) -> Vec<Delivered> {
    let mut delivered = Vec::new();
    loop {
        let rows = outbox::claim_due(conn, db::now(), 100, Duration::seconds(60)).unwrap();
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let options = CallOptions {
                idem: Some(row.dedup_key.clone()),
                ..CallOptions::default()
            };
            let body: Value = serde_json::from_str(&row.payload).unwrap();
            let action = body["action"].as_str().unwrap().to_owned();
            let result = match Topic::from_name(&row.topic) {
                Some(Topic::RecordType) => {
                    let body: RecordTypeAction = serde_json::from_value(body).unwrap();
                    bridge
                        .create_record_type(DEFAULT_TOKEN, body, options)
                        .await
                }
                Some(Topic::Record) => {
                    let body: RecordAction = serde_json::from_value(body).unwrap();
                    bridge.record(DEFAULT_TOKEN, body, options).await
                }
                other => panic!("unexpected topic {other:?} in row {}", row.id),
            };
            let created = result.unwrap_or_else(|e| {
                panic!("the chain refused row {} ({action}): {e}", row.dedup_key)
            });
            outbox::mark_done(conn, row.id, Some(&format!("{created:?}"))).unwrap();
            delivered.push(Delivered {
                ordering_key: row.ordering_key,
                action,
                created,
            });
        }
    }
    delivered
}

fn actions_of<'a>(delivered: &'a [Delivered], key: &str) -> Vec<(&'a str, bool)> {
    delivered
        .iter()
        .filter(|d| d.ordering_key == key)
        .map(|d| (d.action.as_str(), matches!(d.created, Created::Created(_))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_changes_and_day_reports_reach_the_chain_in_order() {
    let schema = Schema::create();
    let mut conn = db::connect(&schema.url).unwrap();
    let sim = simulator().await;
    let mut config = BridgeConfig::new(KafkaConfig::new(kafka_brokers()));
    config.topics = sim.topics().chain.clone();
    let bridge = Bridge::connect(config).await.unwrap();

    // The MES's identity: the master token the simulator knows, and a public key that
    // becomes each unit record's reporter.
    let reporter = SigningKey::generate().agent_key();
    let reporter_text = reporter.to_string();
    tokens::put(
        &mut conn,
        &tokens::NewKafkaToken {
            instance_type: tokens::MASTER,
            token: DEFAULT_TOKEN,
            public_key: Some(&reporter_text),
            ..Default::default()
        },
    )
    .unwrap();

    let units = UnitService::default();
    let new_unit = |code: &str| NewUnit {
        code: code.into(),
        name: format!("Press {code}"),
        status: "RUNNING".into(),
        process_name: Some("Stamping".into()),
    };
    units.create(&mut conn, &new_unit("PT10")).unwrap();
    let patch: UnitPatch =
        serde_json::from_str(r#"{"Status": "STOPPED", "ProcessName": "Maintenance"}"#).unwrap();
    units.patch(&mut conn, "PT10", &patch).unwrap();
    units.create(&mut conn, &new_unit("PT11")).unwrap();

    let date = NaiveDate::from_ymd_opt(2021, 1, 11).unwrap();
    let shift = ShiftInput {
        planned_busy_time_s: Some(28_800.0),
        actual_production_time_s: Some(25_200.0),
        planned_unit_time_s: Some(30.0),
        produced_quantity: Some(720.0),
        good_quantity: Some(700.0),
        failure_count: Some(0),
        repair_time_s: Some(0.0),
        ..ShiftInput::default()
    };
    store_day_report(
        &mut conn,
        &DayReportInput {
            unit: "PT10".into(),
            date: "2021-01-11".into(),
            shifts: ShiftsInput {
                a: Some(shift),
                b: Some(shift),
                c: Some(shift),
                day: None,
            },
        },
    )
    .unwrap();
    assert_eq!(daily_run(&mut conn, date).unwrap().enqueued, ["PT10"]);

    let delivered = deliver_all(&mut conn, &bridge).await;
    assert_eq!(
        actions_of(&delivered, "unit:PT10"),
        [
            ("create_record_type", true),
            ("create_record", true),
            ("add_reporter", true),
            ("update_properties", true),
        ],
        "{delivered:#?}"
    );
    assert_eq!(
        actions_of(&delivered, "unit:PT11"),
        [
            ("create_record_type", false),
            ("create_record", true),
            ("add_reporter", true),
        ],
        "the second unit's record type already exists: success"
    );
    assert_eq!(
        actions_of(&delivered, "day-report:PT10"),
        [("create_record_type", true), ("create_day_report", true)]
    );
    let depth = outbox::depth(&mut conn).unwrap();
    assert_eq!((depth.pending, depth.in_flight, depth.failed), (0, 0, 0));

    // What the chain holds is what the MES stored.
    let (status, process, reporters, day_records, oee) = sim.with_ledger(|ledger| {
        let record = ledger.record("PT10").expect("the unit's record");
        let values = |name: &str| -> Vec<Value> {
            record.properties[name]
                .iter()
                .map(|e| e.value.clone())
                .collect()
        };
        let oee = ledger
            .record("001_21_01_02_PT10_404")
            .map(|r| r.properties["value"][0].value.clone());
        (
            values("status"),
            values("process_name"),
            record.reporters["status"].clone(),
            ledger.state().day_reports.get("001_21_01_02_PT10").cloned(),
            oee,
        )
    });
    assert_eq!(status, ["RUNNING", "STOPPED"]);
    assert_eq!(process, ["Stamping", "Maintenance"]);
    assert!(reporters.contains(&reporter), "{reporters:?}");
    let day_records = day_records.expect("the day report");
    assert_eq!(
        day_records.len(),
        28,
        "A, B, C and the day, seven indicators each"
    );
    assert!(day_records.contains(&"001_21_01_02_PT10_101".to_owned()));
    let expected_oee = 0.875 * (30.0 * 720.0 / 25_200.0) * (700.0 / 720.0);
    let oee = oee.expect("the day's OEE record").as_f64().unwrap();
    assert!(
        (oee - expected_oee).abs() < 1e-12,
        "{oee} vs {expected_oee}"
    );

    // Running the day again (another server, a restart) sends nothing more.
    assert!(daily_run(&mut conn, date).unwrap().enqueued.is_empty());
    assert!(deliver_all(&mut conn, &bridge).await.is_empty());

    bridge.shutdown().await;
    sim.shutdown().await.unwrap();
}
