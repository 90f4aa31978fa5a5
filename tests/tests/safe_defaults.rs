//! Safe by default, against real processes (`mes-api-proc`, the `mes-api` binary),
//! the real broker, PostgreSQL and `chain-sim`:
//! - a PostgreSQL URL without `MES_KAFKA_BROKERS` stops the start with exit 2 and
//!   one line, and the database is left as it was (no migration, no demo data);
//! - the demo, even asked for by name, never seeds a database that holds an
//!   operator it did not make;
//! - SIGTERM with 16 calls in flight against a chain that answers in 1 s: all 16
//!   are answered 200 and the process exits 0;
//! - a webhook receiver that answers 307 to another (internal) address gets one POST,
//!   and the other address none.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use chain_sim::{ErpPartner, ErpRequest, SimConfig, SimHandle, SimTopics, Simulator, send_erp};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use kafka_bridge::kafka::KafkaConfig;
use mes_core::codec::ReplyBody;
use mes_core::db::{self, operators, outbox, tokens};
use mes_core::signing::SigningKey;
use mes_e2e::db::{PgSchema, TempDir};
use mes_e2e::server::{DEADLINE, ServerProc, http};
use mes_e2e::{database_url, kafka_brokers};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mes-api-proc");

/// Runs the binary with `env` (and no other `MES_*`/`ROCKET_*` variable) until it
/// exits; its status and standard error. A process still running after a minute
/// (it started serving) is killed and fails the test.
async fn run_to_exit(env: &[(&str, String)]) -> (ExitStatus, String) {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("MES_") || name.starts_with("ROCKET_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    let free = mes_e2e::free_port().unwrap();
    command
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("ROCKET_ADDRESS", "127.0.0.1")
        .env("ROCKET_PORT", free.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let start = tokio::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mes-api did not stop: it started serving");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Tables in the PostgreSQL schema `name`, read without running migrations.
fn tables_in(name: &str) -> i64 {
    let mut conn = PgConnection::establish(&database_url()).unwrap();
    diesel::sql_query("SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = $1")
        .bind::<Text, _>(name)
        .get_result::<Count>(&mut conn)
        .unwrap()
        .n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_url_without_brokers_exits_2_with_one_line_and_writes_nothing() {
    let schema = PgSchema::create_in(&database_url());
    let dir = TempDir::create().unwrap();
    assert_eq!(tables_in(schema.name()), 0, "a new schema is empty");
    let (status, stderr) = run_to_exit(&[
        ("MES_DATABASE_URL", schema.url().to_owned()),
        ("MES_DATA_DIR", dir.path().display().to_string()),
    ])
    .await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].starts_with("mes-api: error: MES_KAFKA_BROKERS: "),
        "{stderr}"
    );
    assert!(
        !stderr.contains(schema.url()),
        "no URL in the error: {stderr}"
    );
    assert_eq!(
        tables_in(schema.name()),
        0,
        "not even a migration ran in the database"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no demo database either"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_never_seeds_a_database_that_holds_a_real_operator() {
    let dir = TempDir::create().unwrap();
    let path = dir.path().join("plant.db").display().to_string();
    let url = path.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = db::connect(&url).unwrap();
        mes_e2e::db::add_operators(&mut conn).unwrap();
    })
    .await
    .unwrap();
    let (status, stderr) = run_to_exit(&[
        ("MES_DATABASE_URL", path.clone()),
        ("MES_KAFKA_BROKERS", "embedded".to_owned()),
    ])
    .await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains("operator(s) the demo did not make"),
        "{stderr}"
    );
    let (names, token_count, depth) = tokio::task::spawn_blocking(move || {
        let mut conn = db::connect(&path).unwrap();
        let names: Vec<String> = operators::list(&mut conn)
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        let token_count = tokens::list(&mut conn).unwrap().len();
        (names, token_count, outbox::depth(&mut conn).unwrap())
    })
    .await
    .unwrap();
    assert_eq!(names, ["olga", "victor"], "no demo operator");
    assert_eq!(token_count, 0, "no demo token");
    assert_eq!(
        depth.pending + depth.in_flight + depth.done + depth.failed,
        0,
        "no demo units (their chain rows would be in the outbox): {depth:?}"
    );
}

/// A chain (`chain-sim` in-process) with a token of its own, and a PostgreSQL schema
/// holding that token as master and two operators.
struct Stack {
    sim: SimHandle,
    topics: SimTopics,
    token: String,
    viewer: String,
    schema: PgSchema,
}

impl Stack {
    async fn start(delay: Duration) -> Stack {
        let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
        let token = format!("safe-defaults{suffix}");
        let topics = SimTopics::with_suffix(&suffix);
        let mut config = SimConfig::new(kafka_brokers());
        config.topics = topics.clone();
        config.group_id = format!("chain-sim{suffix}");
        config.tokens = vec![token.clone()];
        config.demo = 0;
        config.delay = delay;
        let sim = Simulator::start(config).await.unwrap();
        let schema = PgSchema::create_in(&database_url());
        let (url, master) = (schema.url().to_owned(), token.clone());
        let (_operator, viewer) = tokio::task::spawn_blocking(move || {
            let mut conn = db::connect(&url).unwrap();
            mes_e2e::db::put_master(&mut conn, &master).unwrap();
            mes_e2e::db::add_operators(&mut conn).unwrap()
        })
        .await
        .unwrap();
        Stack {
            sim,
            topics,
            token,
            viewer,
            schema,
        }
    }

    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("MES_DATABASE_URL".into(), self.schema.url().to_owned()),
            ("MES_KAFKA_BROKERS".into(), kafka_brokers()),
            ("MES_DATABASE_POOL_SIZE".into(), "4".into()),
            // The simulator echoes `corr`: calls run side by side.
            ("MES_CORRELATION".into(), "id".into()),
        ];
        env.extend(mes_e2e::server::topic_env(&self.topics.chain));
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        env
    }
}

/// The value of the sample `name` (with its labels, as written) in `/metrics`.
async fn metric(port: u16, name: &str) -> f64 {
    let (status, text) = http(port, "GET", "/metrics", None, None).await.unwrap();
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `check` holds of the sample `name`, failing after [`DEADLINE`].
async fn wait_metric(server: &mut ServerProc, name: &str, check: impl Fn(f64) -> bool) -> f64 {
    let start = tokio::time::Instant::now();
    loop {
        server.assert_running();
        let value = metric(server.port, name).await;
        if check(value) {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "{name} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_16_calls_in_flight_answers_all_16_and_exits_0() {
    const CALLS: usize = 16;
    let stack = Stack::start(Duration::from_secs(1)).await;
    // One scan at start-up, then none for an hour: the only chain requests in flight
    // are the test's.
    let env = stack.env(&[("MES_POLL_INTERVAL_SECS", "3600")]);
    let mut server = ServerProc::spawn(BIN, &env);
    server.wait_ready().await;
    wait_metric(&mut server, "mes_chain_polls_total{outcome=\"ok\"}", |n| {
        n >= 1.0
    })
    .await;
    wait_metric(&mut server, "mes_chain_pending", |n| n == 0.0).await;

    let port = server.port;
    // Pages of their own: the bridge shares one request among identical lists.
    let calls: Vec<_> = (0..CALLS)
        .map(|n| {
            let key = stack.viewer.clone();
            let path = format!("/api/KafkaPartner/LIST?start={n}&limit=10");
            tokio::spawn(async move { http(port, "GET", &path, Some(&key), None).await })
        })
        .collect();
    // All 16 are waiting for the chain's reply (1 s away) when SIGTERM comes.
    wait_metric(&mut server, "mes_chain_pending", |n| n >= CALLS as f64).await;
    let status = server.terminate().await;

    for call in calls {
        let (code, body) = call
            .await
            .unwrap()
            .expect("an answer, not a reset connection");
        assert_eq!(code, 200, "{body}");
        let items: Value = serde_json::from_str(&body).unwrap();
        assert!(items.is_array(), "{body}");
    }
    assert_eq!(status.code(), Some(0), "a clean stop: {status}");
    stack.sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_redirects_gets_one_post_and_the_redirect_target_none() {
    let (internal, internal_posts) = mes_e2e::live::answering_receiver("200 OK").await;
    let (hook, hook_posts) = mes_e2e::live::answering_receiver(&format!(
        "307 Temporary Redirect\r\nLocation: {internal}"
    ))
    .await;
    let stack = Stack::start(Duration::ZERO).await;
    let env = stack.env(&[
        ("MES_POLL_INTERVAL_SECS", "1"),
        ("MES_WEBHOOKS", &hook),
        ("MES_WEBHOOK_ALLOW_HTTP", "true"),
    ]);
    let mut server = ServerProc::spawn(BIN, &env);
    server.wait_ready().await;
    // New requests are announced once both lists have a complete scan (the baseline).
    let start = tokio::time::Instant::now();
    loop {
        let (status, body) = http(
            server.port,
            "GET",
            "/api/requests/counts",
            Some(&stack.viewer),
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let counts: Value = serde_json::from_str(&body).unwrap();
        if counts["partner"]["as_of"].is_string() && counts["order"]["as_of"].is_string() {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "no complete scan: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let request = ErpRequest::Partner(ErpPartner {
        issuing_agent: SigningKey::generate().agent_key(),
    });
    let reply = send_erp(
        &KafkaConfig::new(kafka_brokers()),
        &stack.topics,
        &stack.token,
        &request,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(
        !matches!(reply.body, ReplyBody::Error { .. }),
        "{:?}",
        reply.body
    );

    // The notification is settled (delivered, or refused and not retried).
    let settled = |server: &mut ServerProc| {
        let port = server.port;
        async move {
            metric(
                port,
                "mes_webhook_notifications_total{outcome=\"delivered\"}",
            )
            .await
                + metric(port, "mes_webhook_notifications_total{outcome=\"failed\"}").await
        }
    };
    let start = tokio::time::Instant::now();
    while settled(&mut server).await < 1.0 {
        server.assert_running();
        assert!(start.elapsed() < DEADLINE, "the webhook was not settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        hook_posts.load(Ordering::SeqCst),
        1,
        "one POST, not retried"
    );
    assert_eq!(
        internal_posts.load(Ordering::SeqCst),
        0,
        "the redirect was not followed"
    );
    assert_eq!(
        metric(
            server.port,
            "mes_webhook_notifications_total{outcome=\"failed\"}"
        )
        .await,
        1.0
    );
    let status = server.terminate().await;
    assert!(status.success(), "{status}");
    stack.sim.shutdown().await.unwrap();
}
