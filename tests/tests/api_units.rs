//! Production units, day reports and the outbox over HTTP, in-process
//! (`rocket::local::asynchronous::Client`), against the real broker, PostgreSQL and
//! `chain-sim`. Each server runs its own outbox relay and daily-report job, as
//! `mes-api` does; the simulator's ledger is the witness of what reached the chain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chain_sim::{Counters, LedgerState, SimConfig, SimHandle, SimTopics, Simulator};
use mes_api::app::App;
use mes_api::config::{ReplyTrust, Settings};
use mes_api::server;
use mes_core::db::{self, outbox, tokens};
use mes_core::domain::AgentKey;
use mes_core::signing::SigningKey;
use mes_e2e::db::PgSchema;
use mes_e2e::{PrivateBroker, kafka_brokers};
use rocket::http::{ContentType, Header, Method, Status};
use rocket::local::asynchronous::{Client, LocalResponse};
use serde_json::{Value, json};

/// Generous: the relay polls every second and the test machine is shared.
const DEADLINE: Duration = Duration::from_secs(90);

/// Longer still for a delivery after a broker restart: the relay's backoff has grown
/// while the broker was down, and the clients must reconnect first.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(120);

/// What the servers of one test share: a database, a broker, a chain, keys.
struct World {
    schema: PgSchema,
    brokers: String,
    /// The chain; `None` only between [`World::stop_sim`] and [`World::start_sim`].
    sim: Option<SimHandle>,
    /// How `sim` was started (its key included), to start it again.
    sim_config: SimConfig,
    topics: SimTopics,
    reporter: AgentKey,
    operator: String,
    viewer: String,
}

impl World {
    async fn create() -> World {
        World::create_on(kafka_brokers()).await
    }

    async fn create_on(brokers: String) -> World {
        let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
        let token = format!("units-test-token{suffix}");
        let topics = SimTopics::with_suffix(&suffix);
        let mut config = SimConfig::new(&brokers);
        config.topics = topics.clone();
        config.group_id = format!("chain-sim{suffix}");
        config.tokens = vec![token.clone()];
        config.demo = 0;
        config.key = Some(SigningKey::generate());
        let sim = Simulator::start(config.clone()).await.unwrap();
        let schema = PgSchema::create_in(&mes_e2e::database_url());
        let reporter = SigningKey::generate().agent_key();
        let url = schema.url().to_owned();
        let reporter_text = reporter.to_string();
        let (operator, viewer) = tokio::task::spawn_blocking(move || {
            let mut conn = db::connect(&url).unwrap();
            tokens::put(
                &mut conn,
                &tokens::NewKafkaToken {
                    instance_type: tokens::MASTER,
                    token: &token,
                    public_key: Some(&reporter_text),
                    ..Default::default()
                },
            )
            .unwrap();
            mes_e2e::db::add_operators(&mut conn).unwrap()
        })
        .await
        .unwrap();
        World {
            schema,
            brokers,
            sim: Some(sim),
            sim_config: config,
            topics,
            reporter,
            operator,
            viewer,
        }
    }

    fn sim(&self) -> &SimHandle {
        self.sim.as_ref().expect("the simulator is running")
    }

    /// Stops the simulator; returns its chain's final state.
    async fn stop_sim(&mut self) -> LedgerState {
        let sim = self.sim.take().expect("the simulator is running");
        let state = sim.ledger_snapshot();
        sim.shutdown().await.unwrap();
        state
    }

    /// Starts the simulator again, on the same topics and key, resuming the chain
    /// from `state`.
    async fn start_sim(&mut self, state: LedgerState) {
        assert!(self.sim.is_none(), "one simulator at a time");
        let mut config = self.sim_config.clone();
        config.ledger = Some(state);
        self.sim = Some(Simulator::start(config).await.unwrap());
    }

    /// A server on this world's database and chain; its relay and daily job start
    /// with it (liftoff).
    async fn server(&self) -> Server {
        let mut settings = Settings {
            database_url: Some(self.schema.url().to_owned()),
            kafka_brokers: self.brokers.clone(),
            database_pool_size: 4,
            // The simulator does not sign its replies.
            reply_trust: ReplyTrust::Unsigned,
            ..Settings::default()
        };
        settings.set_topics(&self.topics.chain);
        let prepared = server::prepare(settings).await.unwrap();
        let client = Client::tracked(server::rocket(rocket::Config::figment(), prepared.app))
            .await
            .unwrap();
        Server { client }
    }

    fn depth(&self) -> outbox::OutboxDepth {
        let mut conn = db::connect(self.schema.url()).unwrap();
        outbox::depth(&mut conn).unwrap()
    }

    /// Waits until every outbox row is settled; returns the depth.
    async fn settled(&self) -> outbox::OutboxDepth {
        let start = tokio::time::Instant::now();
        loop {
            let url = self.schema.url().to_owned();
            let depth = tokio::task::spawn_blocking(move || {
                let mut conn = db::connect(&url).unwrap();
                outbox::depth(&mut conn).unwrap()
            })
            .await
            .unwrap();
            if depth.pending == 0 && depth.in_flight == 0 {
                return depth;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the outbox was not delivered: {depth:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The values of `property` of record `id` on the chain, oldest first.
    fn history(&self, id: &str, property: &str) -> Vec<Value> {
        self.sim().with_ledger(|ledger| {
            ledger
                .record(id)
                .map(|r| {
                    r.properties
                        .get(property)
                        .map(|entries| entries.iter().map(|e| e.value.clone()).collect())
                        .unwrap_or_default()
                })
                .unwrap_or_default()
        })
    }
}

struct Server {
    client: Client,
}

impl Server {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> (Status, Value) {
        let mut request = self.client.req(method, uri.to_owned());
        if let Some(key) = key {
            request = request.header(Header::new("Authorization", format!("Bearer {key}")));
        }
        if let Some(body) = body {
            request = request.header(ContentType::JSON).body(body);
        }
        read(request.dispatch().await).await
    }

    fn app(&self) -> &App {
        self.client.rocket().state::<App>().unwrap()
    }

    async fn stop(self) {
        // Through Rocket's shutdown, as a stopped server does: the relay and the
        // daily job stop, then the bridge.
        let _ = self.client.terminate().await;
    }
}

async fn read(response: LocalResponse<'_>) -> (Status, Value) {
    let status = response.status();
    let text = response.into_string().await.unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

fn short(value: &Value) -> String {
    value.to_string().chars().take(400).collect()
}

fn assert_error(got: &(Status, Value), status: Status, code: &str) {
    assert_eq!(got.0, status, "{}", short(&got.1));
    assert_eq!(got.1["error"]["code"], code, "{}", short(&got.1));
}

/// Polls `GET uri` until `done` holds for its answer.
async fn eventually(
    server: &Server,
    uri: &str,
    key: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = tokio::time::Instant::now();
    loop {
        let (status, body) = server.call(Method::Get, uri, Some(key), None).await;
        assert_eq!(status, Status::Ok, "{}", short(&body));
        if done(&body) {
            return body;
        }
        assert!(start.elapsed() < DEADLINE, "{what}: {}", short(&body));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn new_unit(code: &str) -> String {
    json!({"code": code, "name": format!("Press {code}"), "Status": "RUNNING", "ProcessName": "Stamping"})
        .to_string()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_updates_the_unit_and_reaches_the_chain_once() {
    let mut world = World::create().await;
    let s = world.server().await;
    let key = world.operator.as_str();

    let (status, created) = s
        .call(
            Method::Post,
            "/api/ProductionUnit",
            Some(key),
            Some(&new_unit("PT10")),
        )
        .await;
    assert_eq!(status, Status::Created, "{}", short(&created));
    assert_eq!(created["Status"], "RUNNING");
    let id = created["id"].as_i64().unwrap();

    let (status, patched) = s
        .call(
            Method::Patch,
            "/api/ProductionUnit/PT10",
            Some(key),
            Some(r#"{"Status": "STOPPED", "ProcessName": "Maintenance"}"#),
        )
        .await;
    assert_eq!(status, Status::Ok, "{}", short(&patched));
    assert_eq!(patched["code"], "PT10");
    assert_eq!(patched["Status"], "STOPPED");
    assert_eq!(patched["ProcessName"], "Maintenance");
    assert_eq!(
        patched["chain"]["state"],
        "pending",
        "answered before the relay could deliver it: {}",
        short(&patched)
    );

    let unit = eventually(
        &s,
        "/api/ProductionUnit/PT10",
        key,
        "the update was not delivered",
        |u| u["chain"]["state"] == "delivered",
    )
    .await;
    assert_eq!(unit["chain"]["error"], Value::Null);
    // On the chain: the record type, the record with its first values, the MES as
    // reporter, then the update, each once.
    world.sim().with_ledger(|ledger| {
        assert!(ledger.state().record_types.contains_key("ProductionUnit"));
        let record = ledger.record("PT10").expect("the unit's record");
        assert_eq!(record.record_type, "ProductionUnit");
        assert!(
            record.reporters["status"].contains(&world.reporter),
            "{:?}",
            record.reporters
        );
    });
    assert_eq!(world.history("PT10", "status"), ["RUNNING", "STOPPED"]);
    assert_eq!(
        world.history("PT10", "process_name"),
        ["Stamping", "Maintenance"]
    );

    // By database id; absent key unchanged, null clears the process.
    let (status, patched) = s
        .call(
            Method::Patch,
            &format!("/api/ProductionUnit/{id}"),
            Some(key),
            Some(r#"{"ProcessName": null}"#),
        )
        .await;
    assert_eq!(status, Status::Ok, "{}", short(&patched));
    assert_eq!(patched["Status"], "STOPPED");
    assert_eq!(patched["ProcessName"], Value::Null);
    world.settled().await;
    assert_eq!(
        world.history("PT10", "process_name"),
        [json!("Stamping"), json!("Maintenance"), Value::Null]
    );
    assert_eq!(
        world.history("PT10", "status"),
        ["RUNNING", "STOPPED", "STOPPED"]
    );

    let (status, list) = s
        .call(
            Method::Get,
            "/api/ProductionUnit",
            Some(&world.viewer),
            None,
        )
        .await;
    assert_eq!(status, Status::Ok);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["chain"]["state"], "delivered");

    // The console's view of the outbox: four unit rows, all delivered.
    let (status, rows) = s
        .call(
            Method::Get,
            "/api/outbox?status=done",
            Some(&world.viewer),
            None,
        )
        .await;
    assert_eq!(status, Status::Ok, "{}", short(&rows));
    let actions: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|r| r["payload"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "create_record_type",
            "create_record",
            "add_reporter",
            "update_properties",
            "update_properties"
        ]
    );
    // The relay counts a row after committing it: poll.
    let start = tokio::time::Instant::now();
    loop {
        let (_, metrics) = s.call(Method::Get, "/metrics", None, None).await;
        let metrics = metrics.as_str().unwrap().to_owned();
        if metrics.contains("mes_outbox_relay_done_total 5\n") {
            assert!(metrics.contains("mes_outbox_rows{status=\"done\"} 5\n"));
            assert!(metrics.contains("mes_outbox_relay_waiting_for_token 0\n"));
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{}",
            metrics
                .lines()
                .filter(|l| l.contains("outbox"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
    world.stop_sim().await;
}

/// The outbox decouples a PATCH from the broker: with the broker down the PATCH
/// answers at once and its update waits; once the broker is back the relay delivers
/// it, and the chain (which outlived the broker) applies it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_with_the_broker_down_reaches_the_chain_once_when_it_is_back() {
    let mut broker = PrivateBroker::start().unwrap();
    let mut world = World::create_on(broker.brokers()).await;
    let s = world.server().await;
    let key = world.operator.clone();
    let key = key.as_str();

    let (status, created) = s
        .call(
            Method::Post,
            "/api/ProductionUnit",
            Some(key),
            Some(&new_unit("PT10")),
        )
        .await;
    assert_eq!(status, Status::Created, "{}", short(&created));
    // Record type, record and reporter on the chain before the broker goes.
    eventually(
        &s,
        "/api/ProductionUnit/PT10",
        key,
        "the unit's record was not delivered",
        |u| u["chain"]["state"] == "delivered",
    )
    .await;
    assert_eq!(world.history("PT10", "status"), ["RUNNING"]);

    // The chain outlives the broker: its gateway stops (cleanly, while it still can)
    // and resumes later from the chain's state.
    let chain = world.stop_sim().await;
    broker.stop();
    let (status, patched) = s
        .call(
            Method::Patch,
            "/api/ProductionUnit/PT10",
            Some(key),
            Some(r#"{"Status": "STOPPED", "ProcessName": "Maintenance"}"#),
        )
        .await;
    assert_eq!(status, Status::Ok, "no 503: {}", short(&patched));
    assert_eq!(patched["Status"], "STOPPED");
    assert_eq!(patched["ProcessName"], "Maintenance");
    assert_eq!(patched["chain"]["state"], "pending", "{}", short(&patched));

    // The relay tries, fails for want of a broker, and keeps the row for later.
    let rows = eventually(
        &s,
        "/api/outbox?limit=1",
        key,
        "the relay did not try the update and put it back",
        |rows| {
            let row = &rows[0];
            row["payload"]["action"] == "update_properties"
                && row["status"] == "pending"
                && row["attempts"].as_i64() >= Some(1)
                && row["last_error"].is_string()
        },
    )
    .await;
    let failed = &rows[0];
    let (_, unit) = s
        .call(Method::Get, "/api/ProductionUnit/PT10", Some(key), None)
        .await;
    assert_eq!(unit["chain"]["state"], "pending", "{}", short(&unit));
    assert!(unit["chain"]["error"].is_string(), "{}", short(&unit));

    // The broker comes back with its topics and logs, then the chain's gateway.
    broker.restart().unwrap();
    world.start_sim(chain).await;

    let start = tokio::time::Instant::now();
    let unit = loop {
        let (status, unit) = s
            .call(Method::Get, "/api/ProductionUnit/PT10", Some(key), None)
            .await;
        assert_eq!(status, Status::Ok, "{}", short(&unit));
        if unit["chain"]["state"] == "delivered" {
            break unit;
        }
        assert!(
            start.elapsed() < RECOVERY_DEADLINE,
            "the update was not delivered after the broker came back: {}",
            short(&unit)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(unit["Status"], "STOPPED");
    assert_eq!(unit["ProcessName"], "Maintenance");
    assert!(unit["chain"]["attempts"].as_i64() > failed["attempts"].as_i64());
    // The update on the chain once, after the values it had before the broker went.
    assert_eq!(world.history("PT10", "status"), ["RUNNING", "STOPPED"]);
    assert_eq!(
        world.history("PT10", "process_name"),
        ["Stamping", "Maintenance"]
    );
    let depth = world.settled().await;
    assert_eq!((depth.failed, depth.done), (0, 4), "{depth:?}");
    s.stop().await;
    world.stop_sim().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_400_unknown_units_404_and_viewers_may_only_read() {
    let mut world = World::create().await;
    let s = world.server().await;
    let op = Some(world.operator.as_str());
    let viewer = Some(world.viewer.as_str());
    let created = s
        .call(
            Method::Post,
            "/api/ProductionUnit",
            op,
            Some(&new_unit("PT10")),
        )
        .await;
    assert_eq!(created.0, Status::Created, "{}", short(&created.1));

    for body in [
        "{not json",
        r#"{"Status": 5}"#,
        r#"{"Colour": "red"}"#,
        r#"["STOPPED"]"#,
        r#"{"Status": ""}"#,
        r#"{"Status": "a\u0007b"}"#,
    ] {
        let got = s
            .call(Method::Patch, "/api/ProductionUnit/PT10", op, Some(body))
            .await;
        assert_error(&got, Status::BadRequest, "invalid_body");
    }
    let long = json!({"ProcessName": "x".repeat(201)}).to_string();
    let got = s
        .call(Method::Patch, "/api/ProductionUnit/PT10", op, Some(&long))
        .await;
    assert_error(&got, Status::BadRequest, "invalid_body");
    assert_error(
        &s.call(Method::Patch, "/api/ProductionUnit/NOPE", op, Some("{}"))
            .await,
        Status::NotFound,
        "not_found",
    );
    assert_error(
        &s.call(Method::Get, "/api/ProductionUnit/NOPE", viewer, None)
            .await,
        Status::NotFound,
        "not_found",
    );
    assert_error(
        &s.call(
            Method::Post,
            "/api/ProductionUnit",
            op,
            Some(&new_unit("PT10")),
        )
        .await,
        Status::Conflict,
        "conflict",
    );
    assert_error(
        &s.call(
            Method::Post,
            "/api/ProductionUnit",
            op,
            Some(&new_unit("PT 10/x")),
        )
        .await,
        Status::BadRequest,
        "invalid_body",
    );

    // Viewers read, operators write; no key is 401.
    let patch = Some(r#"{"Status": "STOPPED"}"#);
    assert_error(
        &s.call(Method::Patch, "/api/ProductionUnit/PT10", viewer, patch)
            .await,
        Status::Forbidden,
        "forbidden",
    );
    assert_error(
        &s.call(
            Method::Post,
            "/api/ProductionUnit",
            viewer,
            Some(&new_unit("PT11")),
        )
        .await,
        Status::Forbidden,
        "forbidden",
    );
    assert_error(
        &s.call(Method::Patch, "/api/ProductionUnit/PT10", None, patch)
            .await,
        Status::Unauthorized,
        "unauthenticated",
    );
    assert_error(
        &s.call(
            Method::Post,
            "/api/reports/daily/run?date=2021-01-11",
            viewer,
            None,
        )
        .await,
        Status::Forbidden,
        "forbidden",
    );
    let report = r#"{"unit": "PT10", "date": "2021-01-11", "shifts": {"A": {"oee": 0.5}}}"#;
    assert_error(
        &s.call(Method::Post, "/api/DayReport", viewer, Some(report))
            .await,
        Status::Forbidden,
        "forbidden",
    );
    let (status, unit) = s
        .call(Method::Get, "/api/ProductionUnit/PT10", viewer, None)
        .await;
    assert_eq!(status, Status::Ok);
    assert_eq!(unit["Status"], "RUNNING", "nothing was changed");

    // Day reports and runs.
    for (body, status, code) in [
        (
            r#"{"unit": "PT10", "date": "11/01/2021", "shifts": {"A": {"oee": 0.5}}}"#,
            Status::BadRequest,
            "invalid_body",
        ),
        (
            r#"{"unit": "PT10", "date": "2999-01-01", "shifts": {"A": {"oee": 0.5}}}"#,
            Status::BadRequest,
            "invalid_body",
        ),
        (
            r#"{"unit": "PT10", "date": "2021-01-11", "shifts": {}}"#,
            Status::BadRequest,
            "invalid_body",
        ),
        (
            r#"{"unit": "PT10", "date": "2021-01-11", "shifts": {"A": {"quality": 1.5}}}"#,
            Status::BadRequest,
            "invalid_body",
        ),
        (
            r#"{"unit": "PT10", "date": "2021-01-11", "shifts": {"E": {}}}"#,
            Status::BadRequest,
            "invalid_body",
        ),
        (
            r#"{"unit": "NOPE", "date": "2021-01-11", "shifts": {"A": {"oee": 0.5}}}"#,
            Status::NotFound,
            "not_found",
        ),
    ] {
        let got = s.call(Method::Post, "/api/DayReport", op, Some(body)).await;
        assert_error(&got, status, code);
    }
    for (uri, status, code) in [
        (
            "/api/reports/daily/run?date=2021-13-01",
            Status::BadRequest,
            "invalid_parameter",
        ),
        (
            "/api/reports/daily/run?date=2999-01-01",
            Status::Conflict,
            "conflict",
        ),
    ] {
        assert_error(&s.call(Method::Post, uri, op, None).await, status, code);
    }
    for (uri, status, code) in [
        ("/api/DayReport", Status::BadRequest, "missing_parameter"),
        (
            "/api/DayReport?date=yesterday",
            Status::BadRequest,
            "invalid_parameter",
        ),
        (
            "/api/DayReport?date=2021-01-11&unit=NOPE",
            Status::NotFound,
            "not_found",
        ),
        (
            "/api/outbox?status=lost",
            Status::BadRequest,
            "invalid_parameter",
        ),
        (
            "/api/outbox?limit=0",
            Status::BadRequest,
            "invalid_parameter",
        ),
    ] {
        assert_error(&s.call(Method::Get, uri, viewer, None).await, status, code);
    }
    s.stop().await;
    world.stop_sim().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_day_report_is_published_once_by_the_daily_run() {
    let mut world = World::create().await;
    let s = world.server().await;
    let op = Some(world.operator.as_str());
    let created = s
        .call(
            Method::Post,
            "/api/ProductionUnit",
            op,
            Some(&new_unit("PT10")),
        )
        .await;
    assert_eq!(created.0, Status::Created);
    let report = json!({"unit": "PT10", "date": "2021-01-11", "shifts": {
        "A": {"planned_busy_time_s": 28800, "actual_production_time_s": 25200,
              "planned_unit_time_s": 30, "produced_quantity": 720, "good_quantity": 700,
              "failure_count": 0, "repair_time_s": 0}}})
    .to_string();
    let (status, stored) = s
        .call(Method::Post, "/api/DayReport", op, Some(&report))
        .await;
    assert_eq!(status, Status::Ok, "{}", short(&stored));
    assert_eq!(stored["report_id"], "001_21_01_02_PT10");
    assert_eq!(stored["enqueued"], false);
    assert_eq!(stored["chain"]["state"], "none");

    let (status, run) = s
        .call(
            Method::Post,
            "/api/reports/daily/run?date=2021-01-11",
            op,
            None,
        )
        .await;
    assert_eq!(status, Status::Ok, "{}", short(&run));
    assert_eq!(run["enqueued"], json!(["PT10"]));
    let (status, again) = s
        .call(
            Method::Post,
            "/api/reports/daily/run?date=2021-01-11",
            op,
            None,
        )
        .await;
    assert_eq!(status, Status::Ok);
    assert_eq!(again["enqueued"], json!([]), "{}", short(&again));
    assert_eq!(again["already_enqueued"], json!(["PT10"]));

    let reports = eventually(
        &s,
        "/api/DayReport?date=2021-01-11",
        &world.viewer,
        "the day report was not delivered",
        |r| r[0]["chain"]["state"] == "delivered",
    )
    .await;
    assert_eq!(reports.as_array().unwrap().len(), 1);
    assert_eq!(reports[0]["enqueued"], true);
    let records = world
        .sim()
        .with_ledger(|l| l.state().day_reports.get("001_21_01_02_PT10").cloned())
        .expect("the day report on the chain");
    assert_eq!(
        records.len(),
        14,
        "shift A and the day, seven indicators each"
    );
    // A third run, after delivery: nothing new reaches the chain.
    world.settled().await;
    let applied = record_applications(&world.sim().counters());
    let (_, third) = s
        .call(
            Method::Post,
            "/api/reports/daily/run?date=2021-01-11",
            op,
            None,
        )
        .await;
    assert_eq!(third["enqueued"], json!([]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(record_applications(&world.sim().counters()), applied);
    let depth = world.depth();
    assert_eq!((depth.failed, depth.pending), (0, 0), "{depth:?}");
    s.stop().await;
    world.stop_sim().await;
}

/// Two servers on one database and one chain, both running relays and daily jobs:
/// every outbox row reaches the chain exactly once, in each unit's order, and each
/// unit's day report once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_deliver_every_row_once_and_each_day_report_once() {
    const UNITS: usize = 6;
    const PATCHES: usize = 3;
    let mut world = World::create().await;
    let a = world.server().await;
    let b = world.server().await;
    let servers = [&a, &b];
    let op = Some(world.operator.as_str());
    let before = record_applications(&world.sim().counters());

    let codes: Vec<String> = (0..UNITS).map(|i| format!("PU{i:02}")).collect();
    for (i, code) in codes.iter().enumerate() {
        let got = servers[i % 2]
            .call(
                Method::Post,
                "/api/ProductionUnit",
                op,
                Some(&new_unit(code)),
            )
            .await;
        assert_eq!(got.0, Status::Created, "{}", short(&got.1));
    }
    // Both servers patch every unit, in turn, while both relays deliver.
    for round in 0..PATCHES {
        for (i, code) in codes.iter().enumerate() {
            let body = json!({"Status": format!("S{round}")}).to_string();
            let got = servers[(i + round) % 2]
                .call(
                    Method::Patch,
                    &format!("/api/ProductionUnit/{code}"),
                    op,
                    Some(&body),
                )
                .await;
            assert_eq!(got.0, Status::Ok, "{}", short(&got.1));
        }
    }
    for code in &codes {
        let report = json!({"unit": code, "date": "2021-01-11",
            "shifts": {"DAY": {"oee": 0.5, "availability": 0.9}}})
        .to_string();
        let got = a
            .call(Method::Post, "/api/DayReport", op, Some(&report))
            .await;
        assert_eq!(got.0, Status::Ok, "{}", short(&got.1));
    }
    // Both run the day at once (two schedulers firing together).
    let uri = "/api/reports/daily/run?date=2021-01-11";
    let (ra, rb) = tokio::join!(
        a.call(Method::Post, uri, op, None),
        b.call(Method::Post, uri, op, None)
    );
    assert_eq!((ra.0, rb.0), (Status::Ok, Status::Ok));
    let mut enqueued: Vec<String> = [&ra.1, &rb.1]
        .iter()
        .flat_map(|r| r["enqueued"].as_array().unwrap().clone())
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    enqueued.sort();
    assert_eq!(
        enqueued, codes,
        "each unit's day enqueued by exactly one server"
    );

    let depth = world.settled().await;
    assert_eq!(depth.failed, 0, "{depth:?}");
    // Per unit: record type, record, reporter, the updates; per unit, the day
    // report's type and the report.
    let rows = (UNITS * (3 + PATCHES) + UNITS * 2) as u64;
    assert_eq!(depth.done as u64, rows);
    assert_eq!(
        record_applications(&world.sim().counters()) - before,
        rows,
        "the chain applied each row once: {:?}",
        world.sim().counters()
    );
    // Each relay counts a row after committing it: wait for the counts to reach the
    // rows, then check that they stay there.
    let done = || a.app().relay.status().done + b.app().relay.status().done;
    let start = tokio::time::Instant::now();
    while done() < rows {
        assert!(start.elapsed() < DEADLINE, "{} of {rows} counted", done());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(done(), rows, "no row was settled twice");
    let expected: Vec<String> = std::iter::once("RUNNING".to_owned())
        .chain((0..PATCHES).map(|r| format!("S{r}")))
        .collect();
    for code in &codes {
        assert_eq!(world.history(code, "status"), expected, "{code}");
        let flow = format!("001_21_01_02_{code}");
        let records = world
            .sim()
            .with_ledger(|l| l.state().day_reports.get(&flow).cloned());
        assert_eq!(records.map(|r| r.len()), Some(7), "{code}");
    }
    a.stop().await;
    b.stop().await;
    world.stop_sim().await;
}

/// Enqueues, as the server does, an update of record `code`'s status to `status`;
/// returns the row's id.
async fn enqueue_update(world: &World, code: &str, status: &str) -> i64 {
    use mes_core::codec::{PropertyValue, RecordAction, Request};
    let request = Request::Record(RecordAction::UpdateProperties {
        record_id: code.to_owned(),
        properties: vec![PropertyValue {
            name: "status".to_owned(),
            value: json!(status),
        }],
    });
    let message = mes_api::service::chain::ChainMessage {
        topic: request.topic(),
        dedup_key: format!("unit:{code}:status:{status}"),
        ordering_key: format!("unit:{code}"),
        payload: request.body().to_string(),
    };
    let url = world.schema.url().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = db::connect(&url).unwrap();
        assert!(message.enqueue(&mut conn).unwrap());
        outbox::get_by_dedup_key(&mut conn, &message.dedup_key)
            .unwrap()
            .unwrap()
            .id
    })
    .await
    .unwrap()
}

/// Creates record `code` on the chain directly, as another MES would have.
fn create_on_chain(world: &World, code: &str) {
    use mes_core::codec::{Head, PropertyValue, RecordAction, Request, Topic, record_types};
    let head = Head {
        auth: world.sim_config.tokens[0].clone(),
        ..Head::default()
    };
    world.sim().with_ledger(|ledger| {
        // Defined already if a unit was created; either answer will do.
        ledger.apply(
            Topic::RecordType,
            &head,
            &Request::RecordType(record_types::production_unit()),
        );
        let created = ledger.apply(
            Topic::Record,
            &head,
            &Request::Record(RecordAction::CreateRecord {
                record_id: code.to_owned(),
                record_type: record_types::PRODUCTION_UNIT.to_owned(),
                properties: vec![
                    PropertyValue {
                        name: "name".to_owned(),
                        value: json!(code),
                    },
                    PropertyValue {
                        name: "status".to_owned(),
                        value: json!("NEW"),
                    },
                ],
            }),
        );
        assert!(
            matches!(created, mes_core::codec::ReplyBody::Message(_)),
            "{created:?}"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retries_a_failed_row_once_fixed_and_discards_another_with_a_reason() {
    let world = World::create().await;
    let server = world.server().await;
    let (op, viewer) = (world.operator.as_str(), world.viewer.as_str());
    // Updates of records the chain does not have: it refuses them.
    let fixable = enqueue_update(&world, "GHOST1", "RUNNING").await;
    let hopeless = enqueue_update(&world, "GHOST2", "RUNNING").await;
    server.app().relay.notify();
    let failed = eventually(
        &server,
        "/api/outbox?status=failed",
        op,
        "both rows fail",
        |rows| rows.as_array().is_some_and(|rows| rows.len() == 2),
    )
    .await;
    let row = |id: i64| {
        failed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(row(fixable)["attempts"], 1);
    let refusal = row(fixable)["last_error"].as_str().unwrap().to_owned();
    assert!(refusal.contains("GHOST1"), "{refusal}");

    let retry = |id: i64| format!("/api/outbox/{id}/retry");
    let discard = |id: i64| format!("/api/outbox/{id}/discard");

    // Who may, and what is refused.
    assert_error(
        &server.call(Method::Post, &retry(fixable), None, None).await,
        Status::Unauthorized,
        "unauthenticated",
    );
    assert_error(
        &server
            .call(Method::Post, &retry(fixable), Some(viewer), None)
            .await,
        Status::Forbidden,
        "forbidden",
    );
    let reason = Some(r#"{"reason": "unit scrapped"}"#);
    assert_error(
        &server
            .call(Method::Post, &discard(fixable), Some(viewer), reason)
            .await,
        Status::Forbidden,
        "forbidden",
    );
    assert_error(
        &server
            .call(Method::Post, &retry(fixable + 1000), Some(op), None)
            .await,
        Status::NotFound,
        "not_found",
    );
    assert_error(
        &server
            .call(Method::Post, &discard(fixable + 1000), Some(op), reason)
            .await,
        Status::NotFound,
        "not_found",
    );
    assert_error(
        &server
            .call(Method::Post, "/api/outbox/x/retry", Some(op), None)
            .await,
        Status::BadRequest,
        "invalid_parameter",
    );
    for body in [
        None,
        Some("{}"),
        Some(r#"{"reason": "  "}"#),
        Some(r#"{"reason": 7}"#),
        Some(r#"{"reason": "scrapped", "by": "someone else"}"#),
        Some(r#"["scrapped"]"#),
    ] {
        let answer = server
            .call(Method::Post, &discard(hopeless), Some(op), body)
            .await;
        assert_error(&answer, Status::BadRequest, "invalid_body");
    }

    // Fixed on the chain, retried: pending at once with its attempts, then delivered.
    create_on_chain(&world, "GHOST1");
    let (status, retried) = server
        .call(Method::Post, &retry(fixable), Some(op), None)
        .await;
    assert_eq!(status, Status::Ok, "{}", short(&retried));
    assert_eq!(retried["id"], fixable);
    assert_eq!(retried["attempts"], 1);
    assert!(retried["retried_at"].is_string(), "{}", short(&retried));
    assert!(
        matches!(
            retried["status"].as_str(),
            Some("pending" | "in_flight" | "done")
        ),
        "{}",
        short(&retried)
    );
    let done = eventually(
        &server,
        "/api/outbox?status=done",
        op,
        "the retried row is delivered",
        |rows| {
            rows.as_array()
                .is_some_and(|rows| rows.iter().any(|r| r["id"] == fixable))
        },
    )
    .await;
    let delivered = done
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == fixable)
        .unwrap();
    assert_eq!(delivered["attempts"], 2);
    assert_eq!(
        world.history("GHOST1", "status"),
        [json!("NEW"), json!("RUNNING")]
    );
    // Done is not failed: no second retry, no discard.
    assert_error(
        &server
            .call(Method::Post, &retry(fixable), Some(op), None)
            .await,
        Status::Conflict,
        "conflict",
    );
    assert_error(
        &server
            .call(Method::Post, &discard(fixable), Some(op), reason)
            .await,
        Status::Conflict,
        "conflict",
    );

    // The other is given up on, with who and why; it is never sent again.
    let (status, discarded) = server
        .call(Method::Post, &discard(hopeless), Some(op), reason)
        .await;
    assert_eq!(status, Status::Ok, "{}", short(&discarded));
    assert_eq!(discarded["status"], "discarded");
    assert_eq!(discarded["discarded_by"], "olga");
    assert_eq!(discarded["discard_reason"], "unit scrapped");
    assert!(discarded["discarded_at"].is_string());
    assert_error(
        &server
            .call(Method::Post, &retry(hopeless), Some(op), None)
            .await,
        Status::Conflict,
        "conflict",
    );
    let (status, listed) = server
        .call(
            Method::Get,
            "/api/outbox?status=discarded",
            Some(viewer),
            None,
        )
        .await;
    assert_eq!(status, Status::Ok);
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "{}",
        short(&listed)
    );
    assert_eq!(world.depth().discarded, 1);
    assert!(world.history("GHOST2", "status").is_empty());
    server.stop().await;
}
