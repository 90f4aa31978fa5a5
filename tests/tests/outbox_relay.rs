//! The outbox relay against `chain-sim` on the real broker and a real database: rows of
//! many ordering keys delivered in order, chain errors and "already exists", a relay
//! process killed mid-batch and restarted, two relays on one database, a silent chain, a
//! broker that goes away, no token, wake-up and shutdown.
//!
//! The simulator's ledger is the witness of what reached the chain: a property's history
//! holds every update the chain applied, in the order applied, and the request counters
//! say how often each topic was sent to and how many requests were answered from the
//! idempotency store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::process::ExitStatusExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chain_sim::{DEFAULT_TOKEN, LedgerState, SimConfig, SimHandle, SimTopics, Simulator};
use kafka_bridge::bridge::{Bridge, BridgeConfig};
use kafka_bridge::kafka::{KafkaConfig, TopicNames};
use kafka_bridge::relay::{self, Relay, RelayConfig, TokenSource};
use mes_api::db::Db;
use mes_api::service::chain::ChainMessage;
use mes_api::service::tokens::TokenProvider;
use mes_core::codec::{Head, PropertyValue, RecordAction, Request, Topic, record_types};
use mes_core::db::testing::{PgSchema, SqliteFile};
use mes_core::db::{self, DbConnection, Pool, outbox, tokens};
use mes_e2e::{PrivateBroker, database_url, kafka_brokers};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A database of the test's own.
enum TestDb {
    Postgres(PgSchema),
    Sqlite(SqliteFile),
}

impl TestDb {
    fn postgres() -> TestDb {
        TestDb::Postgres(PgSchema::create_in(&database_url()))
    }

    fn sqlite() -> TestDb {
        TestDb::Sqlite(SqliteFile::create())
    }

    fn url(&self) -> String {
        match self {
            TestDb::Postgres(schema) => schema.url().to_owned(),
            TestDb::Sqlite(file) => file.url(),
        }
    }

    fn pool(&self) -> Pool {
        db::pool(&self.url(), 4).unwrap()
    }
}

/// Enqueues `request` the way the server does: as a [`ChainMessage`], written by
/// [`ChainMessage::enqueue`] (in the caller's transaction, if any).
fn enqueue(
    conn: &mut DbConnection,
    request: &Request,
    dedup_key: &str,
    ordering_key: &str,
) -> diesel::QueryResult<bool> {
    ChainMessage {
        topic: request.topic(),
        dedup_key: dedup_key.to_owned(),
        ordering_key: ordering_key.to_owned(),
        payload: request.body().to_string(),
    }
    .enqueue(conn)
}

/// Runs a blocking database call off the runtime's threads.
async fn with_db<T: Send + 'static>(
    pool: &Pool,
    f: impl FnOnce(&mut DbConnection) -> T + Send + 'static,
) -> T {
    let pool = pool.clone();
    tokio::task::spawn_blocking(move || f(&mut pool.get().unwrap()))
        .await
        .unwrap()
}

/// A simulated chain with topics of its own (`suffix`), and the `ProductionUnit`
/// record type already defined.
async fn chain(delay: Duration) -> (SimHandle, String) {
    let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
    let sim = chain_on(&suffix, delay).await;
    (sim, suffix)
}

/// A simulated chain on the topics of `suffix`, with `ProductionUnit` defined.
async fn chain_on(suffix: &str, delay: Duration) -> SimHandle {
    let suffix = suffix.to_owned();
    let mut config = SimConfig::new(kafka_brokers());
    config.topics = SimTopics::with_suffix(&suffix);
    config.group_id = format!("chain-sim{suffix}");
    config.delay = delay;
    let sim = Simulator::start(config).await.unwrap();
    let head = Head {
        auth: DEFAULT_TOKEN.to_owned(),
        ..Head::default()
    };
    let created = sim.with_ledger(|ledger| {
        ledger.apply(
            Topic::RecordType,
            &head,
            &Request::RecordType(record_types::production_unit()),
        )
    });
    assert!(matches!(created, mes_core::codec::ReplyBody::Message(_)));
    sim
}

async fn bridge(
    brokers: &str,
    topics: &TopicNames,
    configure: impl FnOnce(&mut BridgeConfig),
) -> Bridge {
    let mut config = BridgeConfig::new(KafkaConfig::new(brokers));
    config.topics = topics.clone();
    configure(&mut config);
    Bridge::connect(config).await.unwrap()
}

fn quick(name: &str) -> RelayConfig {
    RelayConfig {
        name: name.to_owned(),
        poll_interval: Duration::from_millis(20),
        send_timeout: Duration::from_secs(5),
        lease: Duration::from_secs(30),
        ..RelayConfig::default()
    }
}

/// A relay started with [`Relay::run`] on a task, and the means to stop it.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

fn start(relay: &Relay) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let relay = relay.clone();
    let task = tokio::spawn(async move {
        relay
            .run(async {
                let _ = stopped.await;
            })
            .await;
    });
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the relay did not stop within 20 s of its shutdown")
            .unwrap();
    }
}

/// Waits until `done` holds, at most `limit`; fails the test with `what` otherwise.
async fn eventually(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Unit `code`: its `create_record`, then `updates` status changes `S1`, `S2`, … as
/// (request, dedup key); every row of a unit has the ordering key `unit:{code}`.
fn unit_rows(code: &str, updates: usize) -> Vec<(Request, String)> {
    let value = |name: &str, value: &str| PropertyValue {
        name: name.to_owned(),
        value: json!(value),
    };
    let mut rows = vec![(
        Request::Record(RecordAction::CreateRecord {
            record_id: code.to_owned(),
            record_type: record_types::PRODUCTION_UNIT.to_owned(),
            properties: vec![value("name", code), value("status", "NEW")],
        }),
        format!("unit:{code}:create"),
    )];
    rows.extend((1..=updates).map(|i| {
        (
            Request::Record(RecordAction::UpdateProperties {
                record_id: code.to_owned(),
                properties: vec![value("status", &format!("S{i}"))],
            }),
            format!("unit:{code}:status:{i}"),
        )
    }));
    rows
}

/// Enqueues `units` units of `updates` updates each, interleaved across units as a
/// busy plant would; returns the unit codes.
async fn enqueue_units(pool: &Pool, units: usize, updates: usize) -> Vec<String> {
    let codes: Vec<String> = (0..units).map(|i| format!("PT{i}")).collect();
    let per_unit: Vec<Vec<(Request, String)>> =
        codes.iter().map(|c| unit_rows(c, updates)).collect();
    let codes_for_db = codes.clone();
    with_db(pool, move |conn| {
        for step in 0..=updates {
            for (code, rows) in codes_for_db.iter().zip(&per_unit) {
                let (request, dedup) = &rows[step];
                assert!(enqueue(conn, request, dedup, &format!("unit:{code}")).unwrap());
            }
        }
    })
    .await;
    codes
}

/// The values of a record's `status` history, oldest first.
fn status_history(state: &LedgerState, code: &str) -> Vec<String> {
    let Some(record) = state.records.get(code) else {
        return Vec::new();
    };
    record
        .properties
        .get("status")
        .into_iter()
        .flatten()
        .map(|entry| entry.value.as_str().unwrap_or("<not text>").to_owned())
        .collect()
}

fn expected_history(updates: usize) -> Vec<String> {
    std::iter::once("NEW".to_owned())
        .chain((1..=updates).map(|i| format!("S{i}")))
        .collect()
}

/// Every unit's history is its updates, each once, in enqueue order.
fn assert_each_update_applied_once_in_order(state: &LedgerState, codes: &[String], updates: usize) {
    let expected = expected_history(updates);
    for code in codes {
        let history = status_history(state, code);
        assert_eq!(history, expected, "status history of {code}");
    }
}

async fn depth(pool: &Pool) -> outbox::OutboxDepth {
    with_db(pool, |conn| outbox::depth(conn).unwrap()).await
}

async fn row(pool: &Pool, dedup_key: &str) -> outbox::OutboxRow {
    let key = dedup_key.to_owned();
    with_db(pool, move |conn| {
        outbox::get_by_dedup_key(conn, &key).unwrap()
    })
    .await
    .unwrap_or_else(|| panic!("no outbox row {dedup_key}"))
}

fn sent_to(sim: &SimHandle, topic: Topic) -> u64 {
    sim.counters()
        .by_topic
        .get(topic.name())
        .copied()
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------

async fn several_ordering_keys_are_all_delivered_in_order(db: TestDb) {
    const UNITS: usize = 6;
    const UPDATES: usize = 4;
    let (sim, _) = chain(Duration::ZERO).await;
    let pool = db.pool();
    let codes = enqueue_units(&pool, UNITS, UPDATES).await;
    let rows = UNITS * (UPDATES + 1);
    let bridge = bridge(&kafka_brokers(), &sim.topics().chain, |_| {}).await;
    let relay = Relay::new(
        pool.clone(),
        bridge.clone(),
        TokenSource::fixed(DEFAULT_TOKEN),
        quick("r"),
    )
    .unwrap();
    let running = start(&relay);
    eventually("every row is done", Duration::from_secs(60), async || {
        depth(&pool).await.done == rows as i64
    })
    .await;
    running.stop().await;

    let d = depth(&pool).await;
    assert_eq!((d.pending, d.in_flight, d.failed), (0, 0, 0));
    let state = sim.ledger_snapshot();
    assert_each_update_applied_once_in_order(&state, &codes, UPDATES);
    assert_eq!(state.counters.replays, 0);
    assert_eq!(
        sent_to(&sim, Topic::Record),
        rows as u64,
        "each row was sent once"
    );
    let done = row(&pool, "unit:PT0:status:2").await;
    assert_eq!(
        done.chain_message.as_deref(),
        Some("Record PT0 updated: status")
    );
    assert!(done.delivered_at.is_some());
    let status = relay.status();
    assert_eq!(
        (status.sent, status.done, status.failed, status.retried),
        (rows as u64, rows as u64, 0, 0)
    );
    bridge.shutdown().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_of_several_ordering_keys_are_all_delivered_in_order() {
    several_ordering_keys_are_all_delivered_in_order(TestDb::postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rows_of_several_ordering_keys_are_all_delivered_in_order() {
    several_ordering_keys_are_all_delivered_in_order(TestDb::sqlite()).await;
}

/// A backlog on `units` ordering keys, `rows_per_unit` rows each, with a poll interval
/// of an hour: every pass after the first must follow the one before at once, or the
/// backlog would take an hour a row. It drains in a handful of passes, each key in
/// order, every row once.
async fn a_backlog_on_few_keys_drains_in_few_passes(db: TestDb, units: usize) {
    const ROWS_PER_UNIT: usize = 100;
    let (sim, _) = chain(Duration::ZERO).await;
    let pool = db.pool();
    let codes = enqueue_units(&pool, units, ROWS_PER_UNIT - 1).await;
    let rows = units * ROWS_PER_UNIT;
    let bridge = bridge(&kafka_brokers(), &sim.topics().chain, |_| {}).await;
    let config = RelayConfig {
        poll_interval: Duration::from_secs(3600),
        ..quick("backlog")
    };
    let batch = config.batch_size as usize;
    let relay = Relay::new(
        pool.clone(),
        bridge.clone(),
        TokenSource::fixed(DEFAULT_TOKEN),
        config,
    )
    .unwrap();
    let running = start(&relay);
    eventually("every row is done", Duration::from_secs(120), async || {
        depth(&pool).await.done == rows as i64
    })
    .await;
    // The pass that finds nothing left has run once the relay sleeps.
    eventually("the relay is idle", Duration::from_secs(60), async || {
        let before = relay.status().passes;
        tokio::time::sleep(Duration::from_millis(200)).await;
        relay.status().passes == before
    })
    .await;
    running.stop().await;

    let status = relay.status();
    // Each pass delivers up to a batch's worth of the backlog (its keys' rows one after
    // the other), then the next pass follows; one more pass finds nothing.
    let most_passes = rows.div_ceil(batch) + 1;
    assert!(
        status.passes <= most_passes as u64,
        "{rows} rows on {units} key(s) took {} passes (at most {most_passes}; one row per key \
         per pass would be {})",
        status.passes,
        ROWS_PER_UNIT
    );
    let state = sim.ledger_snapshot();
    assert_each_update_applied_once_in_order(&state, &codes, ROWS_PER_UNIT - 1);
    assert_eq!(state.counters.replays, 0);
    assert_eq!(
        sent_to(&sim, Topic::Record),
        rows as u64,
        "each row was sent once"
    );
    assert_eq!(
        (status.sent, status.done, status.failed, status.retried),
        (rows as u64, rows as u64, 0, 0)
    );
    bridge.shutdown().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_backlog_on_one_key_drains_in_few_passes() {
    a_backlog_on_few_keys_drains_in_few_passes(TestDb::postgres(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_backlog_on_one_key_drains_in_few_passes() {
    a_backlog_on_few_keys_drains_in_few_passes(TestDb::sqlite(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_backlog_on_two_keys_drains_in_few_passes() {
    a_backlog_on_few_keys_drains_in_few_passes(TestDb::postgres(), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_errors_fail_the_row_with_the_chains_text_and_already_exists_counts_as_done() {
    let (sim, _) = chain(Duration::ZERO).await;
    let db = TestDb::postgres();
    let pool = db.pool();
    let ghost = Request::Record(RecordAction::UpdateProperties {
        record_id: "GHOST".into(),
        properties: vec![PropertyValue {
            name: "status".into(),
            value: json!("RUNNING"),
        }],
    });
    let create = unit_rows("PT1", 0).remove(0).0;
    with_db(&pool, move |conn| {
        enqueue(conn, &ghost, "ghost", "unit:GHOST").unwrap();
        // The type exists already (the simulator defined it).
        enqueue(
            conn,
            &Request::RecordType(record_types::production_unit()),
            "type",
            "types",
        )
        .unwrap();
        // The same record twice, e.g. enqueued by two instances under different keys.
        enqueue(conn, &create, "pt1:a", "unit:PT1").unwrap();
        enqueue(conn, &create, "pt1:b", "unit:PT1").unwrap();
        // Rows that are no request: nothing may be sent for them.
        for (key, topic, payload) in [
            ("not-json", "BLK_Rec", "{\"action\": "),
            ("bad-action", "BLK_Rec", r#"{"action": "drop_table"}"#),
            ("bad-topic", "BLK_Nope", r#"{"action": "create_record"}"#),
            ("a-list", "BLK_Part_Lst", r#"{"start": 0, "limit": 10}"#),
        ] {
            outbox::enqueue(
                conn,
                &outbox::NewOutboxRow {
                    topic,
                    dedup_key: key,
                    ordering_key: key,
                    payload,
                    traceparent: None,
                },
            )
            .unwrap();
        }
    })
    .await;
    let bridge = bridge(&kafka_brokers(), &sim.topics().chain, |_| {}).await;
    let relay = Relay::new(
        pool.clone(),
        bridge.clone(),
        TokenSource::fixed(DEFAULT_TOKEN),
        quick("r"),
    )
    .unwrap();
    for _ in 0..10 {
        if relay.run_once().await.unwrap().claimed == 0 {
            break;
        }
    }

    let ghost = row(&pool, "ghost").await;
    assert_eq!(ghost.status, outbox::FAILED);
    assert_eq!(
        ghost.last_error.as_deref(),
        Some("record GHOST does not exist")
    );
    assert_eq!(ghost.chain_message, None);
    let existing = row(&pool, "type").await;
    assert_eq!(existing.status, outbox::DONE);
    assert_eq!(
        existing.chain_message.as_deref(),
        Some("Record type ProductionUnit already exists")
    );
    assert_eq!(
        row(&pool, "pt1:a").await.chain_message.as_deref(),
        Some("Record PT1 created")
    );
    let again = row(&pool, "pt1:b").await;
    assert_eq!(again.status, outbox::DONE);
    assert_eq!(
        again.chain_message.as_deref(),
        Some("Record PT1 already exists")
    );
    for key in ["not-json", "bad-action", "bad-topic", "a-list"] {
        let bad = row(&pool, key).await;
        assert_eq!(bad.status, outbox::FAILED, "{key}");
        let error = bad.last_error.unwrap_or_default();
        assert!(error.starts_with("not a request: "), "{key}: {error}");
    }
    assert!(
        row(&pool, "bad-action")
            .await
            .last_error
            .unwrap()
            .contains("drop_table")
    );
    assert!(
        row(&pool, "bad-topic")
            .await
            .last_error
            .unwrap()
            .contains("BLK_Nope")
    );

    // The chain saw the four requests and nothing of the rows that are none.
    let counters = sim.counters();
    assert_eq!(sent_to(&sim, Topic::Record), 3, "{counters:?}");
    assert_eq!(
        sent_to(&sim, Topic::RecordType),
        2,
        "the simulator's own and the row"
    );
    assert_eq!(sent_to(&sim, Topic::PartnerList), 0);
    assert!(sim.ledger_snapshot().records.contains_key("PT1"));
    let status = relay.status();
    assert_eq!(
        (status.sent, status.done, status.failed, status.retried),
        (4, 3, 5, 0)
    );
    bridge.shutdown().await;
    sim.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------

/// A `relay-worker` process; killed if the test ends before it is stopped.
struct Worker(Option<Child>);

impl Worker {
    fn spawn(db_url: &str, suffix: &str, name: &str) -> Worker {
        let child = Command::new(env!("CARGO_BIN_EXE_relay-worker"))
            .args(["--database-url", db_url])
            .args(["--brokers", &kafka_brokers()])
            .arg(format!("--topic-suffix={suffix}"))
            .args(["--token", DEFAULT_TOKEN])
            .args(["--name", name])
            .args(["--lease-ms", "4000", "--send-timeout-ms", "1500"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting relay-worker");
        Worker(Some(child))
    }

    /// Fails the test if the worker has exited (e.g. refused its arguments).
    fn assert_running(&mut self) {
        if let Some(child) = self.0.as_mut()
            && let Some(status) = child.try_wait().unwrap()
        {
            panic!("relay-worker exited early: {status}");
        }
    }

    /// SIGKILL: no clean-up, like a crash or a power cut.
    fn kill(&mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap()
    }

    /// Closes its standard input (the clean stop) and waits for it to exit.
    async fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().unwrap();
        drop(child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("relay-worker did not stop within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn killed_mid_batch_and_restarted(db: TestDb) {
    const UNITS: usize = 8;
    const UPDATES: usize = 6;
    // Replies come 300 ms after the chain applied a request: a relay killed right after
    // the chain applied something is sure to die before it could mark that row done.
    let (sim, suffix) = chain(Duration::from_millis(300)).await;
    let pool = db.pool();
    let codes = enqueue_units(&pool, UNITS, UPDATES).await;
    let rows = (UNITS * (UPDATES + 1)) as i64;
    let before = sim.counters().changes;

    let mut first = Worker::spawn(&db.url(), &suffix, "first");
    // Kill it once the chain applied the creates and a round of updates, while more
    // requests are in flight.
    let kill_at = before + (UNITS + UNITS) as u64;
    eventually(
        "the first relay delivered some rows",
        Duration::from_secs(60),
        async || {
            first.assert_running();
            sim.counters().changes >= kill_at
        },
    )
    .await;
    let status = first.kill();
    assert_eq!(
        status.signal(),
        Some(9),
        "the first relay was killed, not stopped: {status}"
    );
    let applied_at_kill = sim.counters().changes - before;
    let d = depth(&pool).await;
    assert!(
        d.done < rows,
        "the first relay finished before it was killed"
    );
    assert!(
        d.in_flight > 0,
        "nothing was in flight when the relay was killed: {d:?}"
    );

    let mut second = Worker::spawn(&db.url(), &suffix, "second");
    eventually(
        "the second relay delivered every row",
        Duration::from_secs(90),
        async || {
            second.assert_running();
            depth(&pool).await.done == rows
        },
    )
    .await;
    assert!(second.stop().await.success());

    let d = depth(&pool).await;
    assert_eq!((d.pending, d.in_flight, d.failed), (0, 0, 0));
    let state = sim.ledger_snapshot();
    assert_each_update_applied_once_in_order(&state, &codes, UPDATES);
    assert_eq!(
        state.counters.changes - before,
        rows as u64,
        "every row changed the chain exactly once"
    );
    // Rows the chain had applied but the dead relay never marked done were sent again
    // and answered from the chain's idempotency store: the case this test is about.
    assert!(
        state.counters.replays >= 1,
        "no row was sent twice: the crash did not hit a row in flight \
         ({applied_at_kill} applied at the kill)"
    );
    let resent = with_db(&pool, |conn| {
        outbox::list(conn, Some(outbox::DONE), 1000, 0)
            .unwrap()
            .into_iter()
            .filter(|row| row.attempts > 1)
            .count()
    })
    .await;
    assert!(resent >= 1);
    eprintln!(
        "{applied_at_kill} rows applied before the kill, {} replays, {resent} rows claimed twice",
        state.counters.replays
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_relay_killed_mid_batch_and_restarted_delivers_every_row_exactly_once() {
    killed_mid_batch_and_restarted(TestDb::postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_relay_killed_mid_batch_and_restarted_delivers_every_row_exactly_once() {
    killed_mid_batch_and_restarted(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_postgres_database_never_send_the_same_row_twice() {
    const UNITS: usize = 30;
    const UPDATES: usize = 2;
    let (sim, _) = chain(Duration::ZERO).await;
    let db = TestDb::postgres();
    let pool = db.pool();
    let codes = enqueue_units(&pool, UNITS, UPDATES).await;
    let rows = UNITS * (UPDATES + 1);
    let mut relays = Vec::new();
    for name in ["a", "b"] {
        // Each its own pool and bridge, as two server instances would have.
        let bridge = bridge(&kafka_brokers(), &sim.topics().chain, |_| {}).await;
        let config = RelayConfig {
            batch_size: 4,
            concurrency: 4,
            ..quick(name)
        };
        let relay = Relay::new(
            db.pool(),
            bridge.clone(),
            TokenSource::fixed(DEFAULT_TOKEN),
            config,
        )
        .unwrap();
        relays.push((relay, bridge));
    }
    let running: Vec<Running> = relays.iter().map(|(relay, _)| start(relay)).collect();
    eventually("every row is done", Duration::from_secs(60), async || {
        depth(&pool).await.done == rows as i64
    })
    .await;
    for r in running {
        r.stop().await;
    }

    let state = sim.ledger_snapshot();
    assert_each_update_applied_once_in_order(&state, &codes, UPDATES);
    assert_eq!(
        sent_to(&sim, Topic::Record),
        rows as u64,
        "a row was sent twice"
    );
    assert_eq!(state.counters.replays, 0);
    let sent: Vec<u64> = relays
        .iter()
        .map(|(relay, _)| relay.status().sent)
        .collect();
    // Every attempt counts as sent; one that ended without reaching the chain (on a
    // loaded machine, a wait for the bridge longer than the send timeout) is retried
    // and counted again. The chain saw each row once (above), so every extra attempt
    // is one retry.
    let retried: u64 = relays.iter().map(|(relay, _)| relay.status().retried).sum();
    assert_eq!(sent.iter().sum::<u64>(), rows as u64 + retried);
    assert!(
        sent.iter().all(|&n| n > 0),
        "one relay did all the work: {sent:?}"
    );
    eprintln!("rows sent by each relay: {sent:?}");
    for (_, bridge) in relays {
        bridge.shutdown().await;
    }
    sim.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------

/// One `update_properties` row, enqueued.
async fn one_row(pool: &Pool) -> &'static str {
    let request = unit_rows("PT9", 1).remove(1).0;
    with_db(pool, move |conn| {
        enqueue(conn, &request, "only", "unit:PT9").unwrap()
    })
    .await;
    "only"
}

fn later_config() -> RelayConfig {
    RelayConfig {
        send_timeout: Duration::from_millis(500),
        lease: Duration::from_secs(5),
        backoff_base: Duration::from_secs(20),
        backoff_max: Duration::from_secs(60),
        ..quick("r")
    }
}

/// The row is pending again after one attempt, not before half the backoff base, with
/// `error` recorded, and a second pass does not touch it.
async fn assert_retried_later(
    relay: &Relay,
    pool: &Pool,
    key: &str,
    started: chrono::NaiveDateTime,
    error: &str,
) {
    let again = row(pool, key).await;
    assert_eq!(again.status, outbox::PENDING);
    assert_eq!(again.attempts, 1);
    assert_eq!(again.locked_until, None);
    let wait = again.next_attempt_at - started;
    assert!(
        wait >= chrono::Duration::seconds(10) && wait <= chrono::Duration::seconds(30),
        "next attempt {wait} after the start, expected 10..=20 s (+ the attempt)"
    );
    assert!(
        again
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with(error)),
        "{:?}",
        again.last_error
    );
    let status = relay.status();
    assert_eq!(
        (status.sent, status.retried, status.done, status.failed),
        (1, 1, 0, 0)
    );
    assert!(status.last_error.is_some_and(|e| e.starts_with(error)));
    assert_eq!(
        relay.run_once().await.unwrap().claimed,
        0,
        "claimed before its next attempt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_chain_puts_the_row_back_for_a_later_attempt() {
    // Topics exist (the bridge creates them) but no chain reads them.
    let topics = TopicNames::with_suffix(&format!("-{}", uuid::Uuid::new_v4().simple()));
    let db = TestDb::postgres();
    let pool = db.pool();
    let key = one_row(&pool).await;
    let bridge = bridge(&kafka_brokers(), &topics, |_| {}).await;
    let relay = Relay::new(
        pool.clone(),
        bridge.clone(),
        TokenSource::fixed("silent-token"),
        later_config(),
    )
    .unwrap();
    let started = db::now();
    let batch = relay.run_once().await.unwrap();
    assert_eq!((batch.claimed, batch.retried), (1, 1));
    // (The bridge names its configured request timeout here, not the call's 500 ms.)
    assert_retried_later(
        &relay,
        &pool,
        key,
        started,
        "the chain did not answer within",
    )
    .await;
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_went_away_puts_the_row_back_for_a_later_attempt() {
    let mut broker = PrivateBroker::start().unwrap();
    let topics = TopicNames::with_suffix("-down");
    let db = TestDb::postgres();
    let pool = db.pool();
    let key = one_row(&pool).await;
    let bridge = bridge(&broker.brokers(), &topics, |config| {
        config.message_timeout = Duration::from_millis(300);
    })
    .await;
    let config = RelayConfig {
        send_timeout: Duration::from_secs(3),
        ..later_config()
    };
    let relay = Relay::new(
        pool.clone(),
        bridge.clone(),
        TokenSource::fixed("down-token"),
        config,
    )
    .unwrap();
    broker.stop();
    let started = db::now();
    let batch = relay.run_once().await.unwrap();
    assert_eq!((batch.claimed, batch.retried), (1, 1));
    assert_retried_later(&relay, &pool, key, started, "Kafka broker unavailable").await;
    let error = row(&pool, key).await.last_error.unwrap();
    assert!(!error.contains("down-token"));
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_master_token_the_relay_waits_and_spends_no_attempt() {
    let (sim, _) = chain(Duration::ZERO).await;
    let db = TestDb::postgres();
    let pool = db.pool();
    let codes = enqueue_units(&pool, 1, 1).await;
    let bridge = bridge(&kafka_brokers(), &sim.topics().chain, |_| {}).await;
    let relay = Relay::new(
        pool.clone(),
        bridge.clone(),
        TokenProvider::default().relay_source(&Db::new(pool.clone())),
        quick("r"),
    )
    .unwrap();
    for _ in 0..3 {
        let batch = relay.run_once().await.unwrap();
        assert!(batch.waiting_for_token);
        assert_eq!(batch.claimed, 0);
    }
    assert!(relay.status().waiting_for_token);
    let waiting = row(&pool, "unit:PT0:create").await;
    assert_eq!(
        (waiting.status.as_str(), waiting.attempts),
        (outbox::PENDING, 0)
    );
    assert_eq!(sent_to(&sim, Topic::Record), 0);

    // An operator sets the token: the next batch uses it, no restart needed.
    with_db(&pool, |conn| {
        tokens::put(
            conn,
            &tokens::NewKafkaToken {
                instance_type: tokens::MASTER,
                token: DEFAULT_TOKEN,
                ..Default::default()
            },
        )
        .unwrap()
    })
    .await;
    let running = start(&relay);
    eventually("both rows are done", Duration::from_secs(30), async || {
        depth(&pool).await.done == 2
    })
    .await;
    running.stop().await;
    assert!(!relay.status().waiting_for_token);
    assert_each_update_applied_once_in_order(&sim.ledger_snapshot(), &codes, 1);
    bridge.shutdown().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_a_sleeping_relay_and_shutdown_stops_it() {
    let (sim, _) = chain(Duration::ZERO).await;
    let db = TestDb::postgres();
    let pool = db.pool();
    let bridge = bridge(&kafka_brokers(), &sim.topics().chain, |_| {}).await;
    let config = RelayConfig {
        poll_interval: Duration::from_secs(3600),
        ..quick("sleepy")
    };
    let relay = Relay::new(
        pool.clone(),
        bridge.clone(),
        TokenSource::fixed(DEFAULT_TOKEN),
        config,
    )
    .unwrap();
    let running = start(&relay);
    // Let it find nothing and go to sleep for an hour.
    eventually(
        "the relay looked once",
        Duration::from_secs(10),
        async || relay.status().passes == 1,
    )
    .await;
    let codes = enqueue_units(&pool, 1, 0).await;
    relay.notify();
    eventually(
        "the woken relay delivered the row",
        Duration::from_secs(30),
        async || depth(&pool).await.done == 1,
    )
    .await;
    // Woken once, by the notification; the row it settled makes it look again at once
    // (its key may have a next row), and that pass finds nothing.
    eventually(
        "the woken pass and the one after it",
        Duration::from_secs(30),
        async || relay.status().passes >= 3,
    )
    .await;
    assert_eq!(relay.status().passes, 3);
    running.stop().await;
    let state = sim.ledger_snapshot();
    assert_eq!(status_history(&state, &codes[0]), vec!["NEW".to_owned()]);
    bridge.shutdown().await;
    sim.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------
// A gateway that never answers BLK_Rec (docs/operations.md, "A record topic on hold").

/// One `create_record` row for each of `units` units (one ordering key each, so all
/// are due at once); returns their dedup keys.
async fn record_rows(pool: &Pool, units: usize) -> Vec<String> {
    let rows: Vec<(Request, String, String)> = (0..units)
        .map(|i| {
            let code = format!("PT{i}");
            let (request, dedup) = unit_rows(&code, 0).remove(0);
            (request, dedup, format!("unit:{code}"))
        })
        .collect();
    let keys = rows.iter().map(|(_, dedup, _)| dedup.clone()).collect();
    with_db(pool, move |conn| {
        for (request, dedup, ordering) in &rows {
            assert!(enqueue(conn, request, dedup, ordering).unwrap());
        }
    })
    .await;
    keys
}

fn record_topic(relay: &Relay) -> relay::RecordTopicStatus {
    relay
        .status()
        .topics
        .into_iter()
        .find(|t| t.topic == Topic::Record)
        .unwrap()
}

fn bridge_sent_to(bridge: &Bridge, topic: Topic) -> u64 {
    bridge.metrics().requests(topic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_topic_the_chain_never_answers_is_put_on_hold_probed_and_resumed() {
    use kafka_bridge::relay::breaker::BreakerState;

    // Nobody reads these topics yet: the chain is silent.
    let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
    let topics = TopicNames::with_suffix(&suffix);
    let db = TestDb::postgres();
    let pool = db.pool();
    const ROWS: usize = 6;
    let keys = record_rows(&pool, ROWS).await;
    let bridge = bridge(&kafka_brokers(), &topics, |config| {
        // One request at a time, as behind the original gateway; a fence that lifts at
        // once (this test is about the breaker: every row must reach the silent chain).
        config.correlation = kafka_bridge::bridge::CorrelationMode::Legacy;
        config.legacy_fence_max = Duration::from_millis(1);
    })
    .await;
    let config = RelayConfig {
        send_timeout: Duration::from_millis(300),
        lease: Duration::from_secs(5),
        backoff_base: Duration::from_millis(500),
        backoff_max: Duration::from_millis(500),
        breaker_threshold: 3,
        breaker_backoff: Duration::from_secs(1),
        breaker_backoff_max: Duration::from_secs(4),
        ..quick("breaker")
    };
    let relay = Relay::new(
        pool.clone(),
        bridge.clone(),
        TokenSource::fixed(DEFAULT_TOKEN),
        config,
    )
    .unwrap();
    let running = start(&relay);

    eventually(
        "the topic is on hold after three timeouts",
        Duration::from_secs(30),
        async || record_topic(&relay).state != BreakerState::Closed,
    )
    .await;
    eventually(
        "the batch is settled: three rows retried, three held back unsent",
        Duration::from_secs(10),
        async || depth(&pool).await.in_flight == 0 && relay.status().held == 3,
    )
    .await;
    let on_hold = record_topic(&relay);
    assert_eq!(on_hold.consecutive_timeouts, 3);
    assert!(on_hold.since().is_some() && on_hold.next_try().is_some());
    assert_eq!(on_hold.name, format!("BLK_Rec{suffix}"));
    // Exactly three rows were sent; the others were not even charged an attempt.
    assert_eq!(relay.status().sent, 3);
    assert_eq!(bridge_sent_to(&bridge, Topic::Record), 3);
    let mut attempts = Vec::new();
    for key in &keys {
        let row = row(&pool, key).await;
        assert_eq!(row.status, outbox::PENDING, "{key}");
        attempts.push(row.attempts);
    }
    attempts.sort_unstable();
    assert_eq!(attempts, [0, 0, 0, 1, 1, 1]);

    // One probe goes once the backoff is over; unanswered, it doubles the backoff.
    eventually(
        "a probe was sent and timed out",
        Duration::from_secs(30),
        async || record_topic(&relay).consecutive_timeouts >= 4,
    )
    .await;
    eventually(
        "the topic is on hold again, with a longer backoff",
        Duration::from_secs(10),
        async || {
            matches!(record_topic(&relay).state, BreakerState::Open { backoff, .. } if backoff == Duration::from_secs(2))
        },
    )
    .await;
    assert_eq!(
        bridge_sent_to(&bridge, Topic::Record),
        4,
        "one probe, not one send per row"
    );

    // The chain starts answering: the next probe closes the breaker, every row goes.
    let sim = chain_on(&suffix, Duration::ZERO).await;
    eventually(
        "every row is delivered once the chain answers",
        Duration::from_secs(60),
        async || depth(&pool).await.done == ROWS as i64,
    )
    .await;
    assert_eq!(record_topic(&relay).state, BreakerState::Closed);
    assert_eq!(record_topic(&relay).consecutive_timeouts, 0);
    running.stop().await;
    let state = sim.ledger_snapshot();
    for i in 0..ROWS {
        assert!(state.records.contains_key(&format!("PT{i}")), "PT{i}");
    }
    assert!(relay.status().held > 0, "rows of the batch were held back");
    bridge.shutdown().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_record_replies_none_rows_are_done_when_the_broker_has_them() {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};

    // Nobody reads these topics: no reply will ever come.
    let topics = TopicNames::with_suffix(&format!("-{}", uuid::Uuid::new_v4().simple()));
    let db = TestDb::postgres();
    let pool = db.pool();
    const ROWS: usize = 3;
    let keys = record_rows(&pool, ROWS).await;
    let bridge = bridge(&kafka_brokers(), &topics, |config| {
        config.correlation = kafka_bridge::bridge::CorrelationMode::Legacy;
    })
    .await;
    let config = RelayConfig {
        record_replies: relay::RecordReplies::None,
        ..quick("none")
    };
    let relay = Relay::new(
        pool.clone(),
        bridge.clone(),
        TokenSource::fixed(DEFAULT_TOKEN),
        config,
    )
    .unwrap();
    let batch = relay.run_once().await.unwrap();
    assert_eq!((batch.claimed, batch.done), (ROWS, ROWS));
    assert_eq!(bridge.pending(), 0, "no reply is awaited");
    assert_eq!(bridge_sent_to(&bridge, Topic::Record), ROWS as u64);
    for key in &keys {
        let row = row(&pool, key).await;
        assert_eq!(row.status, outbox::DONE);
        assert_eq!(row.attempts, 1);
        assert!(
            row.chain_message
                .as_deref()
                .is_some_and(|m| m.starts_with(relay::PUBLISHED_TEXT)),
            "{:?}",
            row.chain_message
        );
    }
    let status = relay.status();
    assert_eq!((status.sent, status.done, status.retried), (3, 3, 0));

    // What the broker holds: each row once, with its idempotency key and a
    // correlation id in both the head and the header.
    let consumer: StreamConsumer = mes_e2e::client_config(&kafka_brokers())
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset(&topics.record, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut seen = Vec::new();
    while seen.len() < ROWS {
        let message = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .expect("the published rows are on the topic")
            .unwrap();
        let envelope: serde_json::Value =
            serde_json::from_slice(message.payload().unwrap()).unwrap();
        let head = &envelope[0];
        let header = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "correlation_id"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        assert_eq!(head["auth"], DEFAULT_TOKEN);
        assert_eq!(head["corr"].as_str(), header.as_deref());
        seen.push(head["idem"].as_str().unwrap().to_owned());
    }
    seen.sort();
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(seen, expected);
    bridge.shutdown().await;
}
