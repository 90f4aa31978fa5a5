//! `mes-api` as a process (`mes-api-proc`, the same `main`) against the real broker,
//! PostgreSQL and `chain-sim`: killed with SIGKILL while its relay has rows in flight,
//! restarted, everything reaches the chain exactly once; the restarted server stops
//! cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chain_sim::{Counters, SimConfig, SimHandle, SimTopics, Simulator};
use mes_api::service::reports::{DayReportInput, ShiftInput, ShiftsInput, store_day_report};
use mes_api::service::units::{NewUnit, UnitPatch, UnitService};
use mes_core::db::{self, operators, outbox, tokens};
use mes_core::signing::SigningKey;
use mes_e2e::db::PgSchema;
use mes_e2e::kafka_brokers;
use mes_e2e::server::{ServerProc, http};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_mes-api-proc");

fn depth(url: &str) -> outbox::OutboxDepth {
    let mut conn = db::connect(url).unwrap();
    outbox::depth(&mut conn).unwrap()
}

/// Requests the chain applied, less the list requests: the server's poller lists the
/// chain all the time (to keep its mirror fresh), and a list changes nothing.
fn record_applications(counters: &Counters) -> u64 {
    let lists: u64 = counters
        .by_topic
        .iter()
        .filter(|(topic, _)| topic.ends_with("_Lst"))
        .map(|(_, n)| n)
        .sum();
    counters.applied - lists
}

fn history(sim: &SimHandle, id: &str) -> Vec<Value> {
    sim.with_ledger(|l| {
        l.record(id)
            .and_then(|r| r.properties.get("status"))
            .map(|e| e.iter().map(|e| e.value.clone()).collect())
            .unwrap_or_default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_delivery_and_restarted_delivers_everything_exactly_once() {
    const UNITS: usize = 8;
    const UPDATES: usize = 4;
    let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
    let token = format!("process-test-token{suffix}");
    let topics = SimTopics::with_suffix(&suffix);
    let mut config = SimConfig::new(kafka_brokers());
    config.topics = topics.clone();
    config.group_id = format!("chain-sim{suffix}");
    config.tokens = vec![token.clone()];
    config.demo = 0;
    // Replies come 300 ms after the chain applied a request: a server killed right
    // after the chain applied something dies before it could mark that row done.
    config.delay = Duration::from_millis(300);
    let sim = Simulator::start(config).await.unwrap();
    let schema = PgSchema::create_in(&mes_e2e::database_url());
    let url = schema.url().to_owned();

    // Units changed before the server starts: their rows wait in the outbox.
    let (key, codes) = {
        let url = url.clone();
        let token = token.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db::connect(&url).unwrap();
            let reporter = SigningKey::generate().agent_key().to_string();
            tokens::put(
                &mut conn,
                &tokens::NewKafkaToken {
                    instance_type: tokens::MASTER,
                    token: &token,
                    public_key: Some(&reporter),
                    ..Default::default()
                },
            )
            .unwrap();
            let key = operators::new_key();
            operators::create(
                &mut conn,
                &operators::NewOperator {
                    name: "olga",
                    role: operators::ROLE_OPERATOR,
                    key_hash: &operators::hash_key(&key),
                },
            )
            .unwrap();
            let units = UnitService::default();
            let mut codes = Vec::new();
            for i in 0..UNITS {
                let code = format!("PK{i:02}");
                units
                    .create(
                        &mut conn,
                        &NewUnit {
                            code: code.clone(),
                            name: format!("Press {code}"),
                            status: "RUNNING".into(),
                            process_name: None,
                        },
                    )
                    .unwrap();
                for u in 0..UPDATES {
                    let patch = UnitPatch {
                        status: Some(format!("S{u}")),
                        process_name: None,
                    };
                    units.patch(&mut conn, &code, &patch).unwrap();
                }
                store_day_report(
                    &mut conn,
                    &DayReportInput {
                        unit: code.clone(),
                        date: "2021-01-11".into(),
                        shifts: ShiftsInput {
                            day: Some(ShiftInput {
                                oee: Some(0.5),
                                ..ShiftInput::default()
                            }),
                            ..ShiftsInput::default()
                        },
                    },
                )
                .unwrap();
                codes.push(code);
            }
            (key, codes)
        })
        .await
        .unwrap()
    };
    let mut env: Vec<(String, String)> = vec![
        ("MES_DATABASE_URL".into(), url.clone()),
        ("MES_KAFKA_BROKERS".into(), kafka_brokers()),
        // Sends time out after 2 s, so leases end after 12 s: the rows the killed
        // server had in flight come back soon.
        ("MES_REQUEST_TIMEOUT_MS".into(), "2000".into()),
        ("MES_DATABASE_POOL_SIZE".into(), "4".into()),
    ];
    env.extend(mes_e2e::server::topic_env(&topics.chain));
    let before = record_applications(&sim.counters());

    let mut first = ServerProc::spawn(BIN, &env);
    first.wait_ready().await;
    // Through HTTP: one more change and the day's reports.
    let (status, body) = http(
        first.port,
        "PATCH",
        "/api/ProductionUnit/PK00",
        Some(&key),
        Some(r#"{"Status": "HTTP"}"#),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(
        first.port,
        "POST",
        "/api/reports/daily/run?date=2021-01-11",
        Some(&key),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let run: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(run["enqueued"].as_array().unwrap().len(), UNITS, "{body}");

    // Kill it once the chain applied a few rounds, while more are in flight.
    let start = tokio::time::Instant::now();
    while sim.counters().changes < before + (2 * UNITS) as u64 {
        first.assert_running();
        assert!(
            start.elapsed() < mes_e2e::server::DEADLINE,
            "the first server delivered nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    let at_kill = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || depth(&url))
            .await
            .unwrap()
    };
    assert!(
        at_kill.pending + at_kill.in_flight > 0,
        "the first server finished before it was killed: {at_kill:?}"
    );

    let mut second = ServerProc::spawn(BIN, &env);
    second.wait_ready().await;
    let start = tokio::time::Instant::now();
    let settled = loop {
        second.assert_running();
        let url = url.clone();
        let d = tokio::task::spawn_blocking(move || depth(&url))
            .await
            .unwrap();
        if d.pending == 0 && d.in_flight == 0 {
            break d;
        }
        assert!(
            start.elapsed() < mes_e2e::server::DEADLINE,
            "not delivered after the restart: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Per unit: record type, record, reporter, the updates, the day report's type and
    // the report; plus the update sent through HTTP.
    let rows = (UNITS * (3 + UPDATES + 2) + 1) as u64;
    assert_eq!(settled.failed, 0, "{settled:?}");
    assert_eq!(settled.done as u64, rows, "{settled:?}");
    let counters = sim.counters();
    assert_eq!(
        record_applications(&counters) - before,
        rows,
        "every row applied once by the chain (resends answered from its idempotency store): {counters:?}"
    );
    for (i, code) in codes.iter().enumerate() {
        let mut expected: Vec<Value> = std::iter::once(json!("RUNNING"))
            .chain((0..UPDATES).map(|u| json!(format!("S{u}"))))
            .collect();
        if i == 0 {
            expected.push(json!("HTTP"));
        }
        assert_eq!(
            history(&sim, code),
            expected,
            "{code}: each update once, in order"
        );
        let flow = format!("001_21_01_02_{code}");
        assert!(
            sim.with_ledger(|l| l.state().day_reports.contains_key(&flow)),
            "{flow}"
        );
    }
    // The restarted server's run (and its start-up catch-up) adds nothing.
    let (status, body) = http(
        second.port,
        "POST",
        "/api/reports/daily/run?date=2021-01-11",
        Some(&key),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let run: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(run["enqueued"], json!([]), "{body}");
    assert_eq!(run["already_enqueued"].as_array().unwrap().len(), UNITS);

    let status = second.terminate().await;
    assert!(status.success(), "a clean stop on SIGTERM: {status}");
    assert_eq!(record_applications(&sim.counters()) - before, rows);
    sim.shutdown().await.unwrap();
}
