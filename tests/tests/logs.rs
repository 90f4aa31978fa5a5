//! What `mes-api` (`mes-api-proc`, the same `main`) writes and answers for the people
//! who run it, against the real broker and PostgreSQL:
//! - `MES_LOG_FORMAT=json`: every line it writes, from start to SIGTERM, is a JSON
//!   object with a timestamp, a level and a message, and a request's line carries the
//!   id its answer's `X-Request-Id` holds;
//! - `X-Request-Id` on every answer (errors too): a new UUID v4 without one, a sane
//!   incoming id echoed, an insane one replaced;
//! - a quiet start: before it is ready the server writes a few lines, first the URL,
//!   the mode, the database without its password, the brokers and the reply trust;
//!   the password never appears.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chain_sim::SimTopics;
use mes_e2e::db::PgSchema;
use mes_e2e::kafka_brokers;
use mes_e2e::server::{ServerProc, Stream, topic_env};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mes-api-proc");

/// The password the quiet-start test puts in the database URL (the test server trusts
/// local connections, so it is never checked): it must never be written.
const PASSWORD: &str = "secret";

/// A server's settings against the real broker (topics of its own) and a PostgreSQL
/// schema of its own, `password` in the database URL if given, plus `extra`.
fn cluster(
    schema: &PgSchema,
    password: Option<&str>,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut url = reqwest::Url::parse(schema.url()).unwrap();
    if let Some(password) = password {
        url.set_password(Some(password)).unwrap();
    }
    let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
    let mut env = vec![
        ("MES_DATABASE_URL".to_owned(), url.to_string()),
        ("MES_KAFKA_BROKERS".to_owned(), kafka_brokers()),
    ];
    env.extend(topic_env(&SimTopics::with_suffix(&suffix).chain));
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

/// GET `path` with `X-Request-Id: id` if given; the status and the answer's
/// `X-Request-Id`.
async fn get(port: u16, path: &str, id: Option<&str>) -> (u16, Option<String>) {
    let mut request = reqwest::Client::new().get(format!("http://127.0.0.1:{port}{path}"));
    if let Some(id) = id {
        request = request.header("X-Request-Id", id);
    }
    let response = request.send().await.unwrap();
    let answered = response
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), answered)
}

fn is_uuid_v4(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 4)
        && id.len() == 36
        && id.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_and_a_request_s_line_carries_its_id() {
    let schema = PgSchema::create_in(&mes_e2e::database_url());
    let env = cluster(&schema, None, &[("MES_LOG_FORMAT", "json")]);
    let (mut server, output) = ServerProc::spawn_with_output(BIN, &env);
    server.wait_ready().await;

    // An error answer (no key): its id is a new one, and the log names it.
    let (status, id) = get(server.port, "/api/me", None).await;
    assert_eq!(status, 401);
    let id = id.expect("an X-Request-Id on a 401");
    let line = output
        .wait_for(|line| line.contains(&format!("\"request_id\":\"{id}\"")))
        .await;
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["request_id"], id.as_str(), "{event}");
    assert_eq!(event["status"], 401, "{event}");
    assert_eq!(event["method"], "GET", "{event}");
    assert_eq!(event["route"], "/api/me", "{event}");
    assert_eq!(event["error"], "unauthenticated", "{event}");
    assert!(event["duration_ms"].as_f64().is_some(), "{event}");

    // Stopped, so that every line it ever writes is in, shutdown's too.
    let status = server.terminate().await;
    assert!(status.success(), "{status}");
    output.wait_closed();
    let lines = output.lines();
    assert!(lines.len() >= 3, "{lines:#?}");
    for (stream, line) in &lines {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}) on {stream:?}: {line}"));
        assert!(
            event["timestamp"]
                .as_str()
                .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
            "{line}"
        );
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .contains(&event["level"].as_str().unwrap_or_default()),
            "{line}"
        );
        assert!(
            event["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{line}"
        );
    }
    // The banner is a log event too, with what it says as fields.
    let banner = lines
        .iter()
        .map(|(_, line)| serde_json::from_str::<Value>(line).unwrap())
        .find(|event| event["mode"].is_string())
        .expect("the banner's event");
    assert_eq!(banner["mode"], "cluster", "{banner}");
    assert_eq!(
        banner["url"],
        format!("http://127.0.0.1:{}", server.port),
        "{banner}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_has_a_request_id_new_or_the_sane_one_it_came_with() {
    let schema = PgSchema::create_in(&mes_e2e::database_url());
    let mut server = ServerProc::spawn(BIN, &cluster(&schema, None, &[]));
    server.wait_ready().await;
    let port = server.port;

    // None given: a new UUID v4 on each answer, success or error.
    let (status, first) = get(port, "/health/ready", None).await;
    assert_eq!(status, 200);
    let first = first.expect("an X-Request-Id on a 200");
    assert!(is_uuid_v4(&first), "{first}");
    let (status, second) = get(port, "/health/ready", None).await;
    assert_eq!(status, 200);
    let second = second.unwrap();
    assert!(is_uuid_v4(&second) && second != first, "{first} {second}");
    for (path, expected) in [("/api/me", 401), ("/no/such/route", 404)] {
        let (status, id) = get(port, path, None).await;
        assert_eq!(status, expected, "{path}");
        let id = id.unwrap_or_else(|| panic!("no X-Request-Id on the {expected} of {path}"));
        assert!(is_uuid_v4(&id), "{path}: {id}");
    }

    // A sane one is echoed, on a success and on an error.
    let sane = "req-42.abc_DEF";
    assert_eq!(
        get(port, "/health/ready", Some(sane)).await.1.unwrap(),
        sane
    );
    assert_eq!(
        get(port, "/api/me", Some(sane)).await,
        (401, Some(sane.to_owned()))
    );
    let longest = "a".repeat(64);
    assert_eq!(
        get(port, "/health/live", Some(&longest)).await.1.unwrap(),
        longest
    );

    // An insane one (too long, or characters a log line should not get) is replaced.
    for insane in [
        "a".repeat(65),
        "has space".to_owned(),
        "quote\"d".to_owned(),
        "semi;colon".to_owned(),
        "{json}".to_owned(),
    ] {
        let (status, id) = get(port, "/api/me", Some(&insane)).await;
        assert_eq!(status, 401);
        let id = id.unwrap();
        assert_ne!(id, insane);
        assert!(is_uuid_v4(&id), "{insane:?} → {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_start_says_where_and_against_what_and_never_the_password() {
    let schema = PgSchema::create_in(&mes_e2e::database_url());
    let env = cluster(&schema, Some(PASSWORD), &[]);
    assert!(
        env.iter()
            .any(|(k, v)| k == "MES_DATABASE_URL" && v.contains(":secret@")),
        "{env:?}"
    );
    let (mut server, output) = ServerProc::spawn_with_output(BIN, &env);
    server.wait_ready().await;
    let before_ready = output.lines();
    let url = format!("http://127.0.0.1:{}", server.port);

    // A few lines, not Rocket's listing of its configuration, routes and fairings.
    assert!(
        (5..=15).contains(&before_ready.len()),
        "{} lines before ready: {before_ready:#?}",
        before_ready.len()
    );
    // The banner comes first on standard output, before anything is started.
    let stdout = output.of(Stream::Stdout);
    let banner = stdout.get(..5).unwrap_or_else(|| panic!("{stdout:#?}"));
    assert!(banner[0].ends_with(&format!(" on {url}")), "{banner:#?}");
    let field = |name: &str| {
        banner
            .iter()
            .find_map(|line| line.trim().strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name}: {banner:#?}"))
            .trim()
            .to_owned()
    };
    assert_eq!(field("mode"), "cluster");
    let database = field("database");
    let host = reqwest::Url::parse(schema.url()).unwrap();
    let host = format!(
        "{}:{}",
        host.host_str().unwrap(),
        host.port().unwrap_or(5432)
    );
    assert!(
        database.starts_with(&format!("postgresql postgres://{host}/")),
        "{database}"
    );
    assert!(!database.contains('@'), "no user: {database}");
    assert_eq!(field("brokers"), kafka_brokers());
    assert!(field("reply trust").starts_with("unsigned"), "{banner:#?}");
    // Rocket's listing is not there, at any level.
    for (_, line) in &before_ready {
        assert!(
            !line.contains("rocket::launch") && !line.contains("Routes:"),
            "{line}"
        );
    }

    // Nor is the password, until the end.
    assert_eq!(get(server.port, "/api/me", None).await.0, 401);
    let status = server.terminate().await;
    assert!(status.success(), "{status}");
    output.wait_closed();
    for (stream, line) in output.lines() {
        assert!(!line.contains(PASSWORD), "{stream:?}: {line}");
    }
}
