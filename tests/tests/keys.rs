//! Keys, roles and sessions against real processes (`mes-api-proc`), the real broker,
//! PostgreSQL and `chain-sim`: every mounted route answers each role as its table
//! says, and a key removed on one instance fails on another and closes its event
//! streams.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use chain_sim::{SimConfig, SimHandle, SimTopics, Simulator};
use mes_api::config::{ReplyTrust, Settings};
use mes_api::service::units::{NewUnit, UnitService};
use mes_core::db::{self, operators, outbox, tokens};
use mes_core::domain::Status as ChainStatus;
use mes_e2e::db::PgSchema;
use mes_e2e::kafka_brokers;
use mes_e2e::server::{DEADLINE, ServerProc, topic_env};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_mes-api-proc");

/// Who calls, in the matrix's column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Viewer,
    Operator,
    Admin,
    NoKey,
    Removed,
}

const EVERYONE: [Who; 5] = [
    Who::Viewer,
    Who::Operator,
    Who::Admin,
    Who::NoKey,
    Who::Removed,
];

impl Who {
    /// A small number per caller, so that the calls that change something work on
    /// things of their own (another open request, another unit, another operator).
    fn n(self) -> usize {
        self as usize
    }
}

/// The least a route asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Least {
    Public,
    Viewer,
    Operator,
    Admin,
}

/// Every route the server mounts and the least role it asks for. A mounted route
/// missing here, or a row for a route that is not mounted, fails the matrix test: a
/// new route must say who may call it.
const TABLE: &[(&str, &str, Least)] = &[
    ("GET", "/api/KafkaPartner/LIST", Least::Viewer),
    ("GET", "/api/KafkaPartner/ANS", Least::Operator),
    ("GET", "/api/KafkaOrder/LIST", Least::Viewer),
    ("GET", "/api/KafkaOrder/ANS", Least::Operator),
    ("POST", "/api/partners/<id>/answer", Least::Operator),
    ("POST", "/api/orders/<id>/answer", Least::Operator),
    ("GET", "/api/requests", Least::Viewer),
    ("GET", "/api/requests/counts", Least::Viewer),
    ("GET", "/api/decisions", Least::Viewer),
    ("GET", "/api/production-orders", Least::Viewer),
    ("POST", "/api/ProductionUnit", Least::Operator),
    ("GET", "/api/ProductionUnit", Least::Viewer),
    ("GET", "/api/ProductionUnit/<id>", Least::Viewer),
    ("PATCH", "/api/ProductionUnit/<id>", Least::Operator),
    ("POST", "/api/DayReport", Least::Operator),
    ("GET", "/api/DayReport", Least::Viewer),
    ("POST", "/api/reports/daily/run", Least::Operator),
    ("GET", "/api/outbox", Least::Viewer),
    ("GET", "/api/outbox/relay", Least::Viewer),
    ("POST", "/api/outbox/<id>/retry", Least::Operator),
    ("POST", "/api/outbox/<id>/discard", Least::Operator),
    ("PUT", "/api/ProductionUnit/<id>/target", Least::Operator),
    ("GET", "/api/DayReport/series", Least::Viewer),
    ("GET", "/api/DayReport.csv", Least::Viewer),
    ("GET", "/api/decisions.csv", Least::Viewer),
    ("GET", "/api/production-orders.csv", Least::Viewer),
    ("GET", "/api/outbox.csv", Least::Viewer),
    ("GET", "/api/notifications", Least::Viewer),
    ("GET", "/api/tokens", Least::Admin),
    ("POST", "/api/tokens", Least::Admin),
    ("DELETE", "/api/tokens/<id>", Least::Admin),
    ("GET", "/api/operators", Least::Admin),
    ("POST", "/api/operators", Least::Admin),
    ("DELETE", "/api/operators/<name>", Least::Admin),
    ("POST", "/api/operators/<name>/rotate", Least::Admin),
    ("GET", "/health/live", Least::Public),
    ("GET", "/health/ready", Least::Public),
    ("GET", "/metrics", Least::Public),
    ("GET", "/api/openapi.json", Least::Public),
    ("GET", "/", Least::Public),
    ("GET", "/assets/<name>", Least::Public),
    ("GET", "/api/me", Least::Viewer),
    ("POST", "/api/session", Least::Viewer),
    ("DELETE", "/api/session", Least::Public),
    ("GET", "/api/events", Least::Viewer),
];

/// What the matrix's calls work on.
struct Fixture {
    /// OPEN partner requests and orders on the chain: one per call that answers (only
    /// the viewer's, operator's and admin's calls are numbered apart: the others are
    /// refused before anything is sent).
    open_partners: Vec<String>,
    open_orders: Vec<String>,
    /// Spare tokens, by [`Who::n`], to delete.
    spare_tokens: Vec<i64>,
    /// Failed outbox rows, by [`Who::n`], to retry and to discard.
    failed_rows: Vec<(i64, i64)>,
}

impl Fixture {
    /// The call of `route` by `who`: a URI and a JSON body.
    fn call(&self, method: &str, path: &str, who: Who) -> (String, Option<Value>) {
        let n = who.n();
        let day = format!("2021-01-{:02}", 11 + n);
        match (method, path) {
            ("GET", "/api/KafkaPartner/ANS") => (
                format!(
                    "/api/KafkaPartner/ANS?ID={}&Response=1",
                    self.open_partners[n % 3]
                ),
                None,
            ),
            ("GET", "/api/KafkaOrder/ANS") => (
                format!(
                    "/api/KafkaOrder/ANS?ID={}&Response=1",
                    self.open_orders[n % 3]
                ),
                None,
            ),
            ("POST", "/api/partners/<id>/answer") => (
                format!("/api/partners/{}/answer", self.open_partners[3 + n % 3]),
                Some(json!({"response": "accept"})),
            ),
            ("POST", "/api/orders/<id>/answer") => (
                format!("/api/orders/{}/answer", self.open_orders[3 + n % 3]),
                Some(json!({"response": "reject"})),
            ),
            ("GET", "/api/requests") => ("/api/requests?kind=partner".to_owned(), None),
            ("POST", "/api/ProductionUnit") => (
                "/api/ProductionUnit".to_owned(),
                Some(
                    json!({"code": format!("M{n}"), "name": "Matrix", "Status": "IDLE", "ProcessName": null}),
                ),
            ),
            ("GET", "/api/ProductionUnit/<id>") => ("/api/ProductionUnit/MX".to_owned(), None),
            ("PATCH", "/api/ProductionUnit/<id>") => (
                "/api/ProductionUnit/MX".to_owned(),
                Some(json!({"Status": format!("RUNNING-{n}")})),
            ),
            ("POST", "/api/DayReport") => (
                "/api/DayReport".to_owned(),
                Some(json!({"unit": "MX", "date": day, "shifts": {"A": {"oee": 0.5}}})),
            ),
            ("GET", "/api/DayReport") => (format!("/api/DayReport?date={day}"), None),
            ("POST", "/api/reports/daily/run") => {
                (format!("/api/reports/daily/run?date={day}"), None)
            }
            ("POST", "/api/tokens") => (
                "/api/tokens".to_owned(),
                Some(json!({"instance_type": format!("Matrix{n}"), "token": "t-matrix"})),
            ),
            ("DELETE", "/api/tokens/<id>") => {
                (format!("/api/tokens/{}", self.spare_tokens[n]), None)
            }
            ("POST", "/api/operators") => (
                "/api/operators".to_owned(),
                Some(json!({"name": format!("new{n}"), "role": "viewer"})),
            ),
            ("DELETE", "/api/operators/<name>") => (format!("/api/operators/gone{n}"), None),
            ("POST", "/api/operators/<name>/rotate") => {
                (format!("/api/operators/spin{n}/rotate"), None)
            }
            ("GET", "/assets/<name>") => ("/assets/app.js".to_owned(), None),
            ("POST", "/api/outbox/<id>/retry") => {
                (format!("/api/outbox/{}/retry", self.failed_rows[n].0), None)
            }
            ("POST", "/api/outbox/<id>/discard") => (
                format!("/api/outbox/{}/discard", self.failed_rows[n].1),
                Some(json!({"reason": "matrix"})),
            ),
            ("PUT", "/api/ProductionUnit/<id>/target") => (
                "/api/ProductionUnit/MX/target".to_owned(),
                Some(json!({"oee": 0.8})),
            ),
            ("GET", "/api/DayReport/series") => (
                "/api/DayReport/series?unit=MX&from=2021-01-01&to=2021-01-31".to_owned(),
                None,
            ),
            ("GET", "/api/DayReport.csv") => (
                "/api/DayReport.csv?from=2021-01-01&to=2021-01-31".to_owned(),
                None,
            ),
            (_, path) => (path.to_owned(), None),
        }
    }
}

async fn start_sim(brokers: &str, topics: &SimTopics, token: &str) -> SimHandle {
    let mut config = SimConfig::new(brokers);
    config.topics = topics.clone();
    config.group_id = format!("chain-sim-{}", uuid::Uuid::new_v4().simple());
    config.tokens = vec![token.to_owned()];
    // 25: eight OPEN partner requests and thirteen OPEN orders (sim::demo::seed).
    config.demo = 25;
    Simulator::start(config).await.unwrap()
}

fn add(conn: &mut db::DbConnection, name: &str, role: &str) -> String {
    let key = operators::new_key();
    operators::create(
        conn,
        &operators::NewOperator {
            name,
            role,
            key_hash: &operators::hash_key(&key),
        },
    )
    .unwrap();
    key
}

/// `mes-api-proc ARGS` on the database at `url`, as an administrator runs it; its
/// standard output.
fn cli(url: &str, args: &[&str]) -> String {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("MES_") || name.starts_with("ROCKET_") {
            command.env_remove(name);
        }
    }
    let out = command
        .env("MES_DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn server_env(url: &str, brokers: &str, topics: &SimTopics) -> Vec<(String, String)> {
    let mut env = vec![
        ("MES_DATABASE_URL".to_owned(), url.to_owned()),
        ("MES_DATABASE_POOL_SIZE".to_owned(), "4".to_owned()),
        ("MES_KAFKA_BROKERS".to_owned(), brokers.to_owned()),
        // Streams check their key every second here (default 60).
        ("MES_SESSION_RECHECK_SECS".to_owned(), "1".to_owned()),
        // The matrix presents a removed key to every route: that many failed sign-ins
        // from one address would be answered 429 at the default limit.
        ("MES_AUTH_FAILURES_PER_MIN".to_owned(), "10000".to_owned()),
    ];
    env.extend(topic_env(&topics.chain));
    env
}

/// One call; the status. The event stream is answered with its headers: its status
/// is all the matrix needs, so the body is not read.
async fn status_of(
    http: &reqwest::Client,
    port: u16,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> u16 {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http.request(method, format!("http://127.0.0.1:{port}{uri}"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = tokio::time::timeout(DEADLINE, request.send())
        .await
        .unwrap_or_else(|_| panic!("{uri}: no answer within {DEADLINE:?}"))
        .unwrap();
    response.status().as_u16()
}

/// The routes of the server as built: `server::prepare` and `server::rocket`,
/// ignited, exactly what `mes-api` mounts.
async fn mounted_routes(url: &str, brokers: &str, topics: &SimTopics) -> Vec<(String, String)> {
    let mut settings = Settings {
        database_url: Some(url.to_owned()),
        database_pool_size: 2,
        kafka_brokers: brokers.to_owned(),
        reply_trust: ReplyTrust::Unsigned,
        ..Settings::default()
    };
    settings.set_topics(&topics.chain);
    let prepared = mes_api::server::prepare(settings).await.unwrap();
    let rocket = mes_api::server::rocket(rocket::Config::figment(), prepared.app)
        .ignite()
        .await
        .unwrap();
    let routes: Vec<(String, String)> = rocket
        .routes()
        .map(|r| (r.method.as_str().to_owned(), r.uri.path().to_string()))
        .collect();
    if let Some(app) = rocket.state::<mes_api::app::App>() {
        app.shutdown().await;
    }
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mounted_route_answers_each_role_as_its_table_says() {
    let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
    let token = format!("keys-test{suffix}");
    let topics = SimTopics::with_suffix(&suffix);
    let brokers = kafka_brokers();
    let sim = start_sim(&brokers, &topics, &token).await;
    let schema = PgSchema::create_in(&mes_e2e::database_url());
    let url = schema.url().to_owned();

    let setup_url = url.clone();
    let master = token.clone();
    let (keys, spare_tokens, failed_rows) = tokio::task::spawn_blocking(move || {
        let mut conn = db::connect(&setup_url).unwrap();
        mes_e2e::db::put_master(&mut conn, &master).unwrap();
        let (operator, viewer) = mes_e2e::db::add_operators(&mut conn).unwrap();
        let admin = mes_e2e::db::add_admin(&mut conn).unwrap();
        let removed = add(&mut conn, "rex", operators::ROLE_OPERATOR);
        let mut spare = Vec::new();
        for n in 0..EVERYONE.len() {
            add(&mut conn, &format!("gone{n}"), operators::ROLE_VIEWER);
            add(&mut conn, &format!("spin{n}"), operators::ROLE_VIEWER);
            let row = tokens::put(
                &mut conn,
                &tokens::NewKafkaToken {
                    instance_type: &format!("Spare{n}"),
                    token: "spare",
                    ..Default::default()
                },
            )
            .unwrap();
            spare.push(row.id);
        }
        // Two failed rows per caller (one to retry, one to discard), failed before the
        // server (and its relay) starts.
        let mut failed = Vec::new();
        for n in 0..EVERYONE.len() {
            let mut fail = |what: &str| {
                let key = format!("matrix:{what}:{n}");
                outbox::enqueue(
                    &mut conn,
                    &outbox::NewOutboxRow {
                        topic: "BLK_Rec",
                        dedup_key: &key,
                        ordering_key: &key,
                        payload: "{}",
                        traceparent: None,
                    },
                )
                .unwrap();
                let row = outbox::claim_next_of_key(
                    &mut conn,
                    db::now(),
                    &key,
                    chrono::Duration::minutes(5),
                    &[],
                )
                .unwrap()
                .unwrap();
                outbox::mark_failed(&mut conn, row.id, "refused by the matrix").unwrap();
                row.id
            };
            let retry = fail("retry");
            failed.push((retry, fail("discard")));
        }
        UnitService::default()
            .create(
                &mut conn,
                &NewUnit {
                    code: "MX".to_owned(),
                    name: "Matrix unit".to_owned(),
                    status: "IDLE".to_owned(),
                    process_name: None,
                },
            )
            .unwrap();
        ([viewer, operator, admin, removed], spare, failed)
    })
    .await
    .unwrap();
    let [viewer, operator, admin, removed] = keys;
    // `rex` is removed the way an administrator does it.
    let out = cli(&url, &["operator", "remove", "rex"]);
    assert!(out.contains("removed rex"), "{out}");

    let snapshot = sim.ledger_snapshot();
    let fixture = Fixture {
        open_partners: snapshot
            .partners
            .iter()
            .filter(|p| p.status == ChainStatus::Open)
            .map(|p| p.partner_request_id.to_string())
            .collect(),
        open_orders: snapshot
            .orders
            .iter()
            .filter(|o| o.status == ChainStatus::Open)
            .map(|o| o.abs_action_id.to_string())
            .collect(),
        spare_tokens,
        failed_rows,
    };
    assert!(fixture.open_partners.len() >= 6 && fixture.open_orders.len() >= 6);

    let routes = mounted_routes(&url, &brokers, &topics).await;
    let unlisted: Vec<String> = routes
        .iter()
        .filter(|(m, p)| !TABLE.iter().any(|(tm, tp, _)| tm == m && tp == p))
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        unlisted.is_empty(),
        "mounted routes without an expected role in TABLE: {unlisted:?}"
    );
    let stale: Vec<String> = TABLE
        .iter()
        .filter(|(m, p, _)| !routes.iter().any(|(rm, rp)| rm == m && rp == p))
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    assert!(
        stale.is_empty(),
        "TABLE rows for routes not mounted: {stale:?}"
    );

    let mut server = ServerProc::spawn(BIN, &server_env(&url, &brokers, &topics));
    server.wait_ready().await;
    let http = reqwest::Client::new();
    let mut wrong = Vec::new();
    let mut cells = 0;
    for (method, path, least) in TABLE {
        for who in EVERYONE {
            let key = match who {
                Who::Viewer => Some(viewer.as_str()),
                Who::Operator => Some(operator.as_str()),
                Who::Admin => Some(admin.as_str()),
                Who::NoKey => None,
                Who::Removed => Some(removed.as_str()),
            };
            let role = match who {
                Who::Viewer => Some(Least::Viewer),
                Who::Operator => Some(Least::Operator),
                Who::Admin => Some(Least::Admin),
                Who::NoKey | Who::Removed => None,
            };
            let expected = match (least, role) {
                (Least::Public, _) => "2xx",
                (_, None) => "401",
                (least, Some(role)) if role >= *least => "2xx",
                _ => "403",
            };
            let (uri, body) = fixture.call(method, path, who);
            let status = status_of(&http, server.port, method, &uri, key, body.as_ref()).await;
            let got = match status {
                200..=299 => "2xx",
                401 => "401",
                403 => "403",
                _ => "other",
            };
            cells += 1;
            if got != expected {
                wrong.push(format!(
                    "{method} {uri} as {who:?}: {status}, expected {expected}"
                ));
            }
        }
    }
    assert_eq!(cells, TABLE.len() * EVERYONE.len());
    assert!(
        wrong.is_empty(),
        "{} cells of {cells} are wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Each allowed call did what it says: the admin's new operator is listed with its
    // role, and `spin2`'s old key is gone.
    let listed = cli(&url, &["operator", "list"]);
    assert!(
        listed.lines().any(|l| l.contains("\tnew2\tviewer\t")),
        "{listed}"
    );
    assert!(
        !listed.contains("\tgone2\t") && listed.contains("\tgone1\t"),
        "{listed}"
    );
    assert!(!listed.contains("\trex\t"), "{listed}");
    drop(server);
    sim.shutdown().await.unwrap();
}

/// An event stream read on a task of its own: its events; the channel closes when it ends.
async fn open_stream(
    http: &reqwest::Client,
    port: u16,
    auth: (&str, &str),
) -> mpsc::UnboundedReceiver<(String, Value)> {
    let response = http
        .get(format!("http://127.0.0.1:{port}/api/events"))
        .header(auth.0, auth.1)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    mes_e2e::live::read_events(response)
}

/// The names of `stream`'s events until it ends; fails the test if it has not ended
/// within `limit`.
async fn until_closed(
    stream: &mut mpsc::UnboundedReceiver<(String, Value)>,
    limit: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut names = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, stream.recv()).await {
            Ok(Some((name, _))) => names.push(name),
            Ok(None) => return names,
            Err(_) => panic!("the stream is still open after {limit:?}; events: {names:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_on_one_instance_fails_on_the_other_and_its_streams_close() {
    let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
    let topics = SimTopics::with_suffix(&suffix);
    let brokers = kafka_brokers();
    let schema = PgSchema::create_in(&mes_e2e::database_url());
    let url = schema.url().to_owned();
    let setup_url = url.clone();
    let (admin, rita, olga) = tokio::task::spawn_blocking(move || {
        let mut conn = db::connect(&setup_url).unwrap();
        let (olga, _) = mes_e2e::db::add_operators(&mut conn).unwrap();
        let admin = mes_e2e::db::add_admin(&mut conn).unwrap();
        let rita = add(&mut conn, "rita", operators::ROLE_OPERATOR);
        (admin, rita, olga)
    })
    .await
    .unwrap();
    let env = server_env(&url, &brokers, &topics);
    let mut a = ServerProc::spawn(BIN, &env);
    let mut b = ServerProc::spawn(BIN, &env);
    a.wait_ready().await;
    b.wait_ready().await;
    let http = reqwest::Client::new();
    let me = |port: u16, key: String| {
        let http = http.clone();
        async move { status_of(&http, port, "GET", "/api/me", Some(&key), None).await }
    };

    // Rita works on B (and B has her key in its cache now), with two event streams:
    // one by key, one by the console's session cookie.
    assert_eq!(me(b.port, rita.clone()).await, 200);
    let mut by_key = open_stream(&http, b.port, ("Authorization", &format!("Bearer {rita}"))).await;
    let session = http
        .post(format!("http://127.0.0.1:{}/api/session", b.port))
        .bearer_auth(&rita)
        .send()
        .await
        .unwrap();
    assert_eq!(session.status().as_u16(), 200);
    let cookies: Vec<String> = session
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let stream_cookie = cookies
        .iter()
        .find(|c| c.starts_with("mes_session="))
        .expect("the stream cookie")
        .clone();
    assert!(
        stream_cookie.contains("HttpOnly")
            && stream_cookie.contains("SameSite=Strict")
            && stream_cookie.contains("Path=/api/events"),
        "{stream_cookie}"
    );
    let pair = stream_cookie.split(';').next().unwrap().to_owned();
    assert!(
        !pair.contains(&rita) && !pair.contains("mesk_"),
        "the cookie never holds the key"
    );
    let mut by_cookie = open_stream(&http, b.port, ("Cookie", &pair)).await;
    for stream in [&mut by_key, &mut by_cookie] {
        let first = tokio::time::timeout(DEADLINE, stream.recv()).await.unwrap();
        assert_eq!(first.map(|(name, _)| name).as_deref(), Some("hello"));
    }

    // Removed on A by an admin: A refuses her at once.
    let removed = status_of(
        &http,
        a.port,
        "DELETE",
        "/api/operators/rita",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(removed, 204);
    assert_eq!(me(a.port, rita.clone()).await, 401);

    // B refuses her too once its short cache has run out (docs/security.md: within
    // 2 s); the bound here is generous for a loaded machine, not the guarantee.
    let start = Instant::now();
    loop {
        if me(b.port, rita.clone()).await == 401 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "B still accepts the removed key"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        me(b.port, olga.clone()).await,
        200,
        "other keys are untouched"
    );

    // Both streams are told and closed at their next check (every second here, every
    // 60 s by default).
    for stream in [&mut by_key, &mut by_cookie] {
        let names = until_closed(stream, Duration::from_secs(90)).await;
        assert_eq!(
            names.last().map(String::as_str),
            Some("signed_out"),
            "{names:?}"
        );
    }
    // The session is gone with its operator: the cookie no longer opens a stream.
    let again = http
        .get(format!("http://127.0.0.1:{}/api/events", b.port))
        .header("Cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 401);
    a.assert_running();
    b.assert_running();
}

/// One call with `key`; its status and `Retry-After`.
async fn limited_call(
    http: &reqwest::Client,
    port: u16,
    uri: &str,
    key: &str,
) -> (u16, Option<u64>) {
    let response = tokio::time::timeout(
        DEADLINE,
        http.get(format!("http://127.0.0.1:{port}{uri}"))
            .bearer_auth(key)
            .send(),
    )
    .await
    .unwrap_or_else(|_| panic!("{uri}: no answer within {DEADLINE:?}"))
    .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    (response.status().as_u16(), retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_from_one_address_get_429_and_chain_calls_are_limited_per_key() {
    let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
    let token = format!("limits-test{suffix}");
    let topics = SimTopics::with_suffix(&suffix);
    let brokers = kafka_brokers();
    let sim = start_sim(&brokers, &topics, &token).await;
    let schema = PgSchema::create_in(&mes_e2e::database_url());
    let url = schema.url().to_owned();
    let setup_url = url.clone();
    let master = token.clone();
    let (operator, viewer) = tokio::task::spawn_blocking(move || {
        let mut conn = db::connect(&setup_url).unwrap();
        mes_e2e::db::put_master(&mut conn, &master).unwrap();
        mes_e2e::db::add_operators(&mut conn).unwrap()
    })
    .await
    .unwrap();
    let mut env = server_env(&url, &brokers, &topics);
    env.retain(|(name, _)| name != "MES_AUTH_FAILURES_PER_MIN");
    env.extend([
        ("MES_AUTH_FAILURES_PER_MIN".to_owned(), "5".to_owned()),
        ("MES_RATE_LIMIT_PER_SEC".to_owned(), "2".to_owned()),
    ]);
    let mut server = ServerProc::spawn(BIN, &env);
    server.wait_ready().await;
    let http = reqwest::Client::new();
    let port = server.port;

    // Chain calls: two a second per key. Ten at once with one key: some are refused
    // with a wait; the other key is not limited by them.
    let list = "/api/KafkaPartner/LIST?limit=5";
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let (http, viewer) = (http.clone(), viewer.clone());
            tokio::spawn(async move { limited_call(&http, port, list, &viewer).await })
        })
        .collect();
    let mut answered = 0;
    let mut limited = 0;
    for call in calls {
        match call.await.unwrap() {
            (200, None) => answered += 1,
            (429, Some(1)) => limited += 1,
            other => panic!("a LIST answered {other:?}"),
        }
    }
    assert!(
        answered >= 1 && limited >= 1,
        "{answered} answered, {limited} limited"
    );
    let (status, _) = limited_call(&http, port, list, &operator).await;
    assert_eq!(status, 200, "the operator's own limit");
    // Five unknown keys from this address are 401; the sixth, and any key not verified
    // before, 429 with the wait (one more try every 12 s at 5 a minute). (Last: from
    // here on this address is refused.)
    for n in 0..5 {
        let (status, _) = limited_call(&http, port, "/api/me", &format!("mesk_wrong{n}")).await;
        assert_eq!(status, 401, "unknown key {n}");
    }
    for key in ["mesk_wrong0", "mesk_another"] {
        let (status, retry_after) = limited_call(&http, port, "/api/me", key).await;
        assert_eq!(status, 429, "{key}");
        let retry_after = retry_after.expect("Retry-After on a 429");
        assert!(
            (1..=12).contains(&retry_after),
            "Retry-After: {retry_after}"
        );
    }

    drop(server);
    sim.shutdown().await.unwrap();
}
