//! Outbox operations on a real PostgreSQL database and broker: the `mes-api outbox`
//! commands run as an administrator runs them (the `mes-api` binary, its settings from
//! the environment), and the caps (`MES_OUTBOX_MAX_ATTEMPTS`, `MES_OUTBOX_MAX_AGE`) of a
//! server whose chain never answers, with the `outbox_failed` webhook they raise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

use chrono::Duration;
use kafka_bridge::bridge::CorrelationMode;
use kafka_bridge::kafka::TopicNames;
use mes_api::app::App;
use mes_api::config::{ReplyTrust, Settings};
use mes_api::server;
use mes_core::codec::{PropertyValue, RecordAction, Request};
use mes_core::db::{self, DbConnection, outbox};
use mes_e2e::db::PgSchema;
use mes_e2e::{database_url, kafka_brokers};
use rocket::local::asynchronous::Client;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_mes-api-proc");

/// `mes-api-proc ARGS` on the database at `url`, with no other `MES_*` setting.
fn cli(url: &str, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("MES_") || name.starts_with("ROCKET_") {
            command.env_remove(name);
        }
    }
    command
        .env("MES_DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .env("USER", "ops")
        .args(args)
        .output()
        .unwrap()
}

/// Its standard output, asserting it succeeded.
fn cli_ok(url: &str, args: &[&str]) -> String {
    let out = cli(url, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Its standard error, asserting it failed.
fn cli_err(url: &str, args: &[&str]) -> String {
    let out = cli(url, args);
    assert!(
        !out.status.success(),
        "{args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn enqueue(conn: &mut DbConnection, key: &str) -> i64 {
    let row = outbox::NewOutboxRow {
        topic: "BLK_Rec",
        dedup_key: key,
        ordering_key: key,
        payload: r#"{"action": "update_properties", "id": "PT10"}"#,
        traceparent: None,
    };
    assert!(outbox::enqueue(conn, &row).unwrap());
    outbox::get_by_dedup_key(conn, key).unwrap().unwrap().id
}

/// Claims row `id` alone (its key is its own).
fn claim(conn: &mut DbConnection, key: &str) -> i64 {
    outbox::claim_next_of_key(conn, db::now(), key, Duration::seconds(30), &[])
        .unwrap()
        .unwrap()
        .id
}

#[test]
fn the_outbox_commands_list_retry_discard_and_purge() {
    let schema = PgSchema::create_in(&database_url());
    let url = schema.url();
    let mut conn = db::connect(url).unwrap();
    let refused = enqueue(&mut conn, "unit-PT10-status-1");
    claim(&mut conn, "unit-PT10-status-1");
    outbox::mark_failed(&mut conn, refused, "record PT10 does not exist").unwrap();
    let scrapped = enqueue(&mut conn, "unit-PT11-status-1");
    claim(&mut conn, "unit-PT11-status-1");
    outbox::mark_failed(&mut conn, scrapped, "record PT11 does not exist").unwrap();
    let delivered = enqueue(&mut conn, "day-PT10-2026-11-01");
    claim(&mut conn, "day-PT10-2026-11-01");
    outbox::mark_done(&mut conn, delivered, Some("Day report created")).unwrap();
    let waiting = enqueue(&mut conn, "unit-PT12-create");

    // list, all and by status.
    let all = cli_ok(url, &["outbox", "list"]);
    let lines: Vec<&str> = all.lines().collect();
    assert!(lines[0].starts_with("id\tstatus\tattempts"), "{all}");
    assert_eq!(lines.len(), 5, "{all}");
    assert!(
        lines[1].starts_with(&format!("{waiting}\tpending\t0\tBLK_Rec")),
        "{all}"
    );
    let failed = cli_ok(url, &["outbox", "list", "--status", "failed"]);
    let ids: Vec<&str> = failed
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(ids, [scrapped.to_string(), refused.to_string()], "{failed}");
    assert!(failed.contains("record PT10 does not exist"), "{failed}");
    let bad = cli_err(url, &["outbox", "list", "--status", "lost"]);
    assert!(bad.contains("lost"), "{bad}");

    // retry: the failed row is pending again; a row that is not failed is refused.
    let out = cli(
        url,
        &[
            "outbox",
            "retry",
            &refused.to_string(),
            &delivered.to_string(),
        ],
    );
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(&format!("retried {refused} (pending)")),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("outbox row {delivered} is done")),
        "{stderr}"
    );
    let row = outbox::get(&mut conn, refused).unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.attempts), (outbox::PENDING, 1));
    let missing = cli_err(url, &["outbox", "retry", "999999"]);
    assert!(missing.contains("no outbox row 999999"), "{missing}");

    // discard: with who and why; a blank reason is refused.
    let blank = cli_err(
        url,
        &["outbox", "discard", &scrapped.to_string(), "--reason", " "],
    );
    assert!(blank.contains("--reason"), "{blank}");
    let no_reason = cli_err(url, &["outbox", "discard", &scrapped.to_string()]);
    assert!(no_reason.contains("--reason"), "{no_reason}");
    let out = cli_ok(
        url,
        &[
            "outbox",
            "discard",
            &scrapped.to_string(),
            "--reason",
            "PT11 was scrapped",
        ],
    );
    assert!(
        out.contains(&format!("discarded {scrapped} (discarded)")),
        "{out}"
    );
    let row = outbox::get(&mut conn, scrapped).unwrap().unwrap();
    assert_eq!(row.status, outbox::DISCARDED);
    assert_eq!(row.discarded_by.as_deref(), Some("cli:ops"));
    assert_eq!(row.discard_reason.as_deref(), Some("PT11 was scrapped"));

    // purge: nothing is 30 days old; everything delivered is older than no time at all.
    let out = cli_ok(url, &["outbox", "purge", "--older-than", "30d"]);
    assert!(
        out.starts_with("purged 0 delivered rows older than 30days"),
        "{out}"
    );
    let bad = cli_err(url, &["outbox", "purge", "--older-than", "a while"]);
    assert!(bad.contains("not a duration"), "{bad}");
    let out = cli_ok(url, &["outbox", "purge", "--older-than", "0s"]);
    assert!(out.starts_with("purged 1 delivered rows"), "{out}");
    let tombstone = outbox::get(&mut conn, delivered).unwrap().unwrap();
    assert_eq!(tombstone.payload, "");
    assert!(tombstone.purged_at.is_some());
    // The tombstone keeps its key: the same day's report is not enqueued again.
    let again = outbox::NewOutboxRow {
        topic: "BLK_Rec",
        dedup_key: "day-PT10-2026-11-01",
        ordering_key: "day-PT10-2026-11-01",
        payload: "{}",
        traceparent: None,
    };
    assert!(!outbox::enqueue(&mut conn, &again).unwrap());
    // Only delivered rows are purged.
    for id in [refused, scrapped, waiting] {
        let row = outbox::get(&mut conn, id).unwrap().unwrap();
        assert!(
            row.purged_at.is_none() && !row.payload.is_empty(),
            "{row:?}"
        );
    }
}

/// Generous: the machine is shared.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(90);

/// A server on `schema` whose chain never answers (topics of its own that nobody
/// reads), chain calls timing out after 500 ms, its webhooks going to `hook`, with
/// `configure`'s caps.
async fn silent_server(
    schema: &PgSchema,
    hook: &str,
    configure: impl FnOnce(&mut Settings),
) -> Client {
    let topics = TopicNames::with_suffix(&format!("-{}", uuid::Uuid::new_v4().simple()));
    let url = schema.url().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = db::connect(&url).unwrap();
        mes_e2e::db::put_master(&mut conn, "silent-token").unwrap();
    })
    .await
    .unwrap();
    let mut settings = Settings {
        database_url: Some(schema.url().to_owned()),
        kafka_brokers: kafka_brokers(),
        database_pool_size: 4,
        reply_trust: ReplyTrust::Unsigned,
        // Replies matched by id: no fence holds a second attempt back.
        correlation: CorrelationMode::Id,
        request_timeout_ms: 500,
        poll_interval_secs: 1,
        webhooks: hook.to_owned(),
        webhook_allow_http: true,
        ..Settings::default()
    };
    settings.set_topics(&topics);
    configure(&mut settings);
    let prepared = server::prepare(settings).await.unwrap();
    Client::tracked(server::rocket(rocket::Config::figment(), prepared.app))
        .await
        .unwrap()
}

/// Enqueues an update of unit PT10's status, as the server does; its id.
async fn enqueue_update(schema: &PgSchema) -> i64 {
    let request = Request::Record(RecordAction::UpdateProperties {
        record_id: "PT10".to_owned(),
        properties: vec![PropertyValue {
            name: "status".to_owned(),
            value: json!("RUNNING"),
        }],
    });
    let message = mes_api::service::chain::ChainMessage {
        topic: request.topic(),
        dedup_key: "unit:PT10:status:1".to_owned(),
        ordering_key: "unit:PT10".to_owned(),
        payload: request.body().to_string(),
    };
    let url = schema.url().to_owned();
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

/// Waits for row `id` to be failed; the row.
async fn failed(schema: &PgSchema, id: i64) -> outbox::OutboxRow {
    let start = tokio::time::Instant::now();
    loop {
        let url = schema.url().to_owned();
        let row = tokio::task::spawn_blocking(move || {
            outbox::get(&mut db::connect(&url).unwrap(), id)
                .unwrap()
                .unwrap()
        })
        .await
        .unwrap();
        if row.status == outbox::FAILED {
            return row;
        }
        assert!(start.elapsed() < DEADLINE, "row {id} did not fail: {row:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits for the `outbox_failed` webhook of row `id`; its body.
async fn notified(hooks: &mut tokio::sync::mpsc::UnboundedReceiver<Value>, id: i64) -> Value {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let body = hooks.recv().await.expect("the receiver runs");
            if body["event"] == "outbox_failed" && body["data"]["id"] == id {
                return body;
            }
        }
    })
    .await
    .expect("an outbox_failed webhook for the capped row")
}

/// The value of the sample `series` (name and labels, as written) in `/metrics`.
async fn sample(client: &Client, series: &str) -> Option<f64> {
    let text = client
        .get("/metrics")
        .dispatch()
        .await
        .into_string()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_past_max_attempts_fails_with_the_reason_and_raises_the_webhook() {
    let schema = PgSchema::create_in(&database_url());
    let (hook, mut hooks) = mes_e2e::live::receiver().await;
    let client = silent_server(&schema, &hook, |s| s.outbox_max_attempts = Some(2)).await;
    let id = enqueue_update(&schema).await;
    client.rocket().state::<App>().unwrap().relay.notify();

    let row = failed(&schema, id).await;
    assert_eq!(row.attempts, 2);
    let reason = row.last_error.as_deref().unwrap();
    assert!(
        reason.starts_with(
            "given up: not delivered after 2 attempts (MES_OUTBOX_MAX_ATTEMPTS); last error: "
        ),
        "{reason}"
    );
    assert!(!row.refused, "never answered: a retry keeps its key");
    let body = notified(&mut hooks, id).await;
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("MES_OUTBOX_MAX_ATTEMPTS"),
        "{body}"
    );
    assert_eq!(body["data"]["last_error"], reason);
    // /metrics: an attempt retried, the last capped; nothing left unsettled.
    let topic = &row.topic;
    let deliveries = |outcome: &str| {
        format!("mes_outbox_deliveries_total{{topic=\"{topic}\",outcome=\"{outcome}\"}}")
    };
    let retried = sample(&client, &deliveries("retried")).await.unwrap_or(0.0);
    assert!(retried >= 1.0, "{retried}");
    assert_eq!(sample(&client, &deliveries("capped")).await, Some(1.0));
    assert_eq!(sample(&client, &deliveries("delivered")).await, None);
    assert_eq!(
        sample(&client, "mes_outbox_oldest_pending_seconds").await,
        Some(0.0)
    );
    client.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_unsettled_row_s_age_is_a_metric() {
    let schema = PgSchema::create_in(&database_url());
    let (hook, _hooks) = mes_e2e::live::receiver().await;
    let client = silent_server(&schema, &hook, |_| {}).await;
    assert_eq!(
        sample(&client, "mes_outbox_oldest_pending_seconds").await,
        Some(0.0)
    );
    let id = enqueue_update(&schema).await;
    let url = schema.url().to_owned();
    tokio::task::spawn_blocking(move || {
        use diesel::RunQueryDsl as _;
        let mut conn = db::connect(&url).unwrap();
        let db::DbConnection::Pg(pg) = &mut conn else {
            panic!("PostgreSQL")
        };
        diesel::sql_query(format!(
            "UPDATE chain_outbox SET created_at = created_at - interval '1 hour' WHERE id = {id}"
        ))
        .execute(pg)
        .unwrap();
    })
    .await
    .unwrap();
    let age = sample(&client, "mes_outbox_oldest_pending_seconds")
        .await
        .unwrap();
    assert!((3600.0..7200.0).contains(&age), "{age}");
    client.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_past_max_age_fails_with_the_reason_and_raises_the_webhook() {
    let schema = PgSchema::create_in(&database_url());
    let (hook, mut hooks) = mes_e2e::live::receiver().await;
    let client = silent_server(&schema, &hook, |s| {
        s.outbox_max_age = std::time::Duration::from_secs(2);
    })
    .await;
    let id = enqueue_update(&schema).await;
    client.rocket().state::<App>().unwrap().relay.notify();

    let row = failed(&schema, id).await;
    let reason = row.last_error.as_deref().unwrap();
    assert!(
        reason.starts_with("given up: not delivered within 2s (MES_OUTBOX_MAX_AGE)"),
        "{reason}"
    );
    assert!(
        row.updated_at - row.created_at >= Duration::seconds(2),
        "{row:?}"
    );
    let body = notified(&mut hooks, id).await;
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("MES_OUTBOX_MAX_AGE"),
        "{body}"
    );
    client.terminate().await;
}
