//! The HTTP API in-process (`rocket::local::asynchronous::Client`) against the real
//! broker, PostgreSQL (or SQLite) and `chain-sim` on topics of its own per test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chain_sim::{Ledger, LedgerState, NewOrder, SimConfig, SimHandle, SimTopics, Simulator};
use mes_api::app::App;
use mes_api::config::{ReplyTrust, Settings};
use mes_api::server;
use mes_core::db::{self, decisions, tokens};
use mes_core::domain::{RequestId, Status as ChainStatus};
use mes_core::signing::SigningKey;
use mes_e2e::db::{PgSchema, TempDir};
use mes_e2e::{PrivateBroker, kafka_brokers};
use rocket::http::{ContentType, Header, Status};
use rocket::local::asynchronous::{Client, LocalResponse};
use serde_json::{Value, json};

const TOKEN_PREFIX: &str = "api-test-token";

/// What a test's server looks like.
struct Options {
    /// Start a chain simulator (false: a silent chain).
    chain: bool,
    /// Replies as Python literals without correlation echo (the original gateway).
    legacy_gateway: bool,
    /// Store the master token.
    master: bool,
    /// Chain request deadline.
    timeout_ms: u64,
    /// SQLite instead of PostgreSQL.
    sqlite: bool,
    /// Another broker than the shared test broker.
    brokers: Option<String>,
    /// Chain calls a second per key (`MES_RATE_LIMIT_PER_SEC`).
    rate_limit_per_sec: std::num::NonZeroU32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chain: true,
            legacy_gateway: false,
            master: true,
            timeout_ms: 10_000,
            sqlite: false,
            brokers: None,
            rate_limit_per_sec: Settings::default().rate_limit_per_sec,
        }
    }
}

enum Database {
    Pg(PgSchema),
    Sqlite(TempDir),
}

struct Server {
    client: Client,
    sim: Option<SimHandle>,
    token: String,
    operator: String,
    viewer: String,
    admin: String,
    _db: Database,
}

async fn server(options: Options) -> Server {
    let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
    let token = format!("{TOKEN_PREFIX}{suffix}");
    let topics = SimTopics::with_suffix(&suffix);
    let brokers = options.brokers.clone().unwrap_or_else(kafka_brokers);
    let sim = if options.chain {
        Some(start_sim(&brokers, &topics, &token, options.legacy_gateway).await)
    } else {
        None
    };
    let database = if options.sqlite {
        Database::Sqlite(TempDir::create().unwrap())
    } else {
        Database::Pg(PgSchema::create_in(&mes_e2e::database_url()))
    };
    let mut settings = Settings {
        database_url: Some(match &database {
            Database::Pg(schema) => schema.url().to_owned(),
            Database::Sqlite(dir) => dir.path().join("mes.db").display().to_string(),
        }),
        kafka_brokers: brokers,
        request_timeout_ms: options.timeout_ms,
        database_pool_size: 4,
        // The simulator does not sign its replies.
        reply_trust: ReplyTrust::Unsigned,
        rate_limit_per_sec: options.rate_limit_per_sec,
        ..Settings::default()
    };
    settings.set_topics(&topics.chain);

    let url = settings.database_url();
    let master = token.clone();
    let (operator, viewer, admin) = tokio::task::spawn_blocking(move || {
        let mut conn = db::connect(&url).unwrap();
        if options.master {
            tokens::put(
                &mut conn,
                &tokens::NewKafkaToken {
                    instance_type: tokens::MASTER,
                    token: &master,
                    password: Some("pw-never-shown"),
                    ..Default::default()
                },
            )
            .unwrap();
        }
        let (operator, viewer) = mes_e2e::db::add_operators(&mut conn).unwrap();
        let admin = mes_e2e::db::add_admin(&mut conn).unwrap();
        (operator, viewer, admin)
    })
    .await
    .unwrap();

    let prepared = server::prepare(settings).await.unwrap();
    let rocket = server::rocket(rocket::Config::figment(), prepared.app);
    let client = Client::tracked(rocket).await.unwrap();
    Server {
        client,
        sim,
        token,
        operator,
        viewer,
        admin,
        _db: database,
    }
}

async fn start_sim(brokers: &str, topics: &SimTopics, token: &str, legacy: bool) -> SimHandle {
    let mut config = SimConfig::new(brokers);
    config.topics = topics.clone();
    config.group_id = format!("chain-sim-{}", uuid::Uuid::new_v4().simple());
    config.tokens = vec![token.to_owned()];
    config.demo = 12;
    config.gateway.python_literal = legacy;
    config.gateway.no_echo = legacy;
    Simulator::start(config).await.unwrap()
}

impl Server {
    async fn get(&self, uri: &str, key: Option<&str>) -> (Status, Value) {
        let mut request = self.client.get(uri.to_owned());
        if let Some(key) = key {
            request = request.header(Header::new("Authorization", format!("Bearer {key}")));
        }
        read(request.dispatch().await).await
    }

    async fn post(&self, uri: &str, key: Option<&str>, body: &str) -> (Status, Value) {
        let mut request = self
            .client
            .post(uri.to_owned())
            .header(ContentType::JSON)
            .body(body);
        if let Some(key) = key {
            request = request.header(Header::new("Authorization", format!("Bearer {key}")));
        }
        read(request.dispatch().await).await
    }

    fn sim(&self) -> &SimHandle {
        self.sim.as_ref().unwrap()
    }

    fn open_partner(&self) -> String {
        let snapshot = self.sim().ledger_snapshot();
        let partner = snapshot
            .partners
            .iter()
            .find(|p| p.status == ChainStatus::Open)
            .unwrap();
        partner.partner_request_id.to_string()
    }

    fn open_order(&self) -> String {
        let snapshot = self.sim().ledger_snapshot();
        let order = snapshot
            .orders
            .iter()
            .find(|o| o.status == ChainStatus::Open)
            .unwrap();
        order.abs_action_id.to_string()
    }

    async fn stop(self) {
        if let Some(app) = self.client.rocket().state::<App>() {
            app.shutdown().await;
        }
        if let Some(sim) = self.sim {
            sim.shutdown().await.unwrap();
        }
    }
}

async fn read(response: LocalResponse<'_>) -> (Status, Value) {
    let status = response.status();
    let is_json = response.content_type() == Some(ContentType::JSON);
    let text = response.into_string().await.unwrap_or_default();
    let value = if is_json {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e})"))
    } else {
        Value::String(text)
    };
    (status, value)
}

/// Asserts an error answer: status, JSON shape and code.
fn assert_error(got: &(Status, Value), status: Status, code: &str) {
    assert_eq!(got.0, status, "{}", short(&got.1));
    assert_eq!(got.1["error"]["code"], code, "{}", short(&got.1));
    assert!(got.1["error"]["message"].is_string(), "{}", short(&got.1));
}

/// At most 300 characters of a value, for assertion messages.
fn short(value: &Value) -> String {
    value.to_string().chars().take(300).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_lists_and_answers_against_the_original_gateway_return_the_chains_values() {
    let s = server(Options {
        legacy_gateway: true,
        ..Options::default()
    })
    .await;
    let key = Some(s.operator.as_str());
    let snapshot = s.sim().ledger_snapshot();

    let (status, partners) = s.get("/api/KafkaPartner/LIST", key).await;
    assert_eq!(status, Status::Ok, "{}", short(&partners));
    let expected: Vec<Value> = snapshot.partners[..10]
        .iter()
        .map(|p| serde_json::to_value(p).unwrap())
        .collect();
    assert_eq!(
        partners,
        Value::Array(expected),
        "the chain's data, as it is"
    );

    let (status, orders) = s.get("/api/KafkaOrder/LIST?start=2&limit=3", key).await;
    assert_eq!(status, Status::Ok);
    let expected: Vec<Value> = snapshot.orders[2..5]
        .iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect();
    assert_eq!(orders, Value::Array(expected));
    // An apostrophe survives the Python-literal reply (the original broke on it).
    let (_, all) = s.get("/api/KafkaOrder/LIST?limit=100", key).await;
    assert!(all.to_string().contains("Operator's"), "{}", short(&all));

    let (status, open) = s
        .get("/api/KafkaPartner/LIST?status=open&limit=100", key)
        .await;
    assert_eq!(status, Status::Ok);
    let open = open.as_array().unwrap();
    assert!(!open.is_empty());
    assert!(
        open.iter().all(|p| p["status"] == "OPEN"),
        "{}",
        short(&Value::Array(open.clone()))
    );

    let partner = s.open_partner();
    let (status, message) = s
        .get(
            &format!("/api/KafkaPartner/ANS?ID={partner}&Response=1"),
            key,
        )
        .await;
    assert_eq!(status, Status::Ok, "{}", short(&message));
    assert_eq!(message, json!(format!("Request {partner} accepted")));
    let answered = s.sim().ledger_snapshot();
    let on_chain = answered
        .partners
        .iter()
        .find(|p| p.partner_request_id.as_str() == partner)
        .unwrap();
    assert_eq!(on_chain.status, ChainStatus::Accepted);

    // Twice on one request: the chain's error, as a 502.
    let again = s
        .get(
            &format!("/api/KafkaPartner/ANS?ID={partner}&Response=0"),
            key,
        )
        .await;
    assert_error(&again, Status::BadGateway, "chain_error");
    assert_eq!(again.1["error"]["chain_code"], "not_open");

    let order = s.open_order();
    let (status, message) = s
        .get(&format!("/api/KafkaOrder/ANS?ID={order}&Response=1"), key)
        .await;
    assert_eq!(status, Status::Ok, "{}", short(&message));
    assert_eq!(message, json!(format!("Request {order} accepted")));

    // Audit trail and the production order.
    let (status, decisions) = s.get("/api/decisions", key).await;
    assert_eq!(status, Status::Ok);
    let decisions = decisions.as_array().unwrap();
    assert_eq!(
        decisions.len(),
        3,
        "{}",
        short(&Value::Array(decisions.clone()))
    );
    assert_eq!(decisions[0]["request_id"], order.as_str());
    assert_eq!(decisions[0]["outcome"], decisions::OUTCOME_ACCEPTED);
    assert_eq!(decisions[0]["operator"], "olga");
    assert_eq!(decisions[1]["outcome"], decisions::OUTCOME_CHAIN_ERROR);
    assert_eq!(decisions[1]["response"], "reject");
    assert!(
        decisions[1]["chain_error"]
            .as_str()
            .unwrap()
            .contains("not OPEN")
    );
    assert_eq!(decisions[2]["outcome"], decisions::OUTCOME_ACCEPTED);
    assert!(decisions.iter().all(|d| d["correlation_id"].is_string()));

    let (status, produced) = s.get("/api/production-orders", key).await;
    assert_eq!(status, Status::Ok);
    let produced = produced.as_array().unwrap();
    assert_eq!(produced.len(), 1);
    let chain_order = answered_order(&s, &order);
    assert_eq!(produced[0]["chain_order_id"], order.as_str());
    assert_eq!(produced[0]["issuing_agent"], chain_order["issuing_agent"]);
    assert_eq!(produced[0]["metadata"], chain_order["metadata"]);
    assert_eq!(produced[0]["description"], chain_order["description"]);
    assert_eq!(produced[0]["decision_id"], decisions[0]["id"]);
    s.stop().await;
}

fn answered_order(s: &Server, id: &str) -> Value {
    let snapshot = s.sim().ledger_snapshot();
    let order = snapshot
        .orders
        .iter()
        .find(|o| o.abs_action_id.as_str() == id)
        .unwrap();
    serde_json::to_value(order).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_routes_take_json_and_an_accepted_order_is_produced_once() {
    let s = server(Options::default()).await;
    let key = Some(s.operator.as_str());
    let order = s.open_order();
    let (status, body) = s
        .post(
            &format!("/api/orders/{order}/answer"),
            key,
            r#"{"response": "accept"}"#,
        )
        .await;
    assert_eq!(status, Status::Ok, "{}", short(&body));
    assert_eq!(body["message"], json!(format!("Request {order} accepted")));
    assert!(body["decision_id"].is_i64());
    assert_eq!(body["production_order"]["chain_order_id"], order.as_str());
    assert_eq!(body["production_order"]["status"], "planned");

    // Accepting again: the chain refuses, nothing is produced twice.
    let again = s
        .post(
            &format!("/api/orders/{order}/answer"),
            key,
            r#"{"response": 1}"#,
        )
        .await;
    assert_error(&again, Status::BadGateway, "chain_error");
    let (_, produced) = s.get("/api/production-orders", key).await;
    assert_eq!(produced.as_array().unwrap().len(), 1);

    let partner = s.open_partner();
    let (status, body) = s
        .post(
            &format!("/api/partners/{partner}/answer"),
            key,
            r#"{"response": 0}"#,
        )
        .await;
    assert_eq!(status, Status::Ok, "{}", short(&body));
    assert_eq!(
        body["message"],
        json!(format!("Request {partner} rejected"))
    );
    assert!(body["production_order"].is_null());
    s.stop().await;
}

/// What schemathesis (tests/tests/openapi_fuzz.rs) found and this keeps: an undeclared
/// method on a known path is a 405 naming the methods it takes; a query key given
/// twice, `null` or a number written loosely is a 400 naming the parameter, never a
/// page read with a default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_method_is_405_with_allow_and_loose_query_values_are_400() {
    let s = server(Options::default()).await;
    let key = Some(s.operator.as_str());

    for (method, uri, allow) in [
        (
            rocket::http::Method::Put,
            "/api/ProductionUnit",
            "GET, POST",
        ),
        (
            rocket::http::Method::Delete,
            "/api/ProductionUnit/PT10",
            "GET, PATCH",
        ),
        (rocket::http::Method::Options, "/api/decisions", "GET"),
        (rocket::http::Method::Post, "/assets/app.js", "GET"),
    ] {
        let response = s
            .client
            .req(method, uri)
            .header(Header::new(
                "Authorization",
                format!("Bearer {}", s.operator),
            ))
            .dispatch()
            .await;
        assert_eq!(
            response.headers().get_one("Allow"),
            Some(allow),
            "{method} {uri}"
        );
        let got = read(response).await;
        assert_error(&got, Status::MethodNotAllowed, "method_not_allowed");
    }
    // An unknown path stays a 404, whatever the method.
    let response = s.client.put("/api/nothing-here").dispatch().await;
    assert_eq!(response.headers().get_one("Allow"), None);
    assert_error(&read(response).await, Status::NotFound, "not_found");

    for (uri, name) in [
        ("/api/decisions?offset=1&offset=2", "offset"),
        ("/api/decisions?offset=null&offset=null", "offset"),
        ("/api/decisions?offset=null", "offset"),
        ("/api/decisions?offset=%2B1", "offset"),
        ("/api/decisions?offset=2147483648", "offset"),
        ("/api/decisions?limit=%201", "limit"),
        ("/api/outbox?status=done&status=failed", "status"),
        ("/api/requests?kind=", "kind"),
        ("/api/KafkaPartner/LIST?start=2147483648", "start"),
        ("/api/DayReport?date=2021-01-11&date=2021-01-12", "date"),
    ] {
        let got = s.get(uri, key).await;
        assert_error(&got, Status::BadRequest, "invalid_parameter");
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{name}:")), "{uri}: {message}");
    }
    let (status, _) = s
        .get("/api/decisions?offset=2147483647&limit=500", key)
        .await;
    assert_eq!(status, Status::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400_json_with_stable_codes() {
    let s = server(Options::default()).await;
    let key = Some(s.operator.as_str());
    let id = "9df8888dea6df991f86e0e61b2379e46";
    for (uri, code) in [
        (
            "/api/KafkaPartner/ANS?Response=1".to_owned(),
            "missing_parameter",
        ),
        (
            format!("/api/KafkaPartner/ANS?ID={id}"),
            "missing_parameter",
        ),
        (
            format!("/api/KafkaPartner/ANS?ID={id}&Response=2"),
            "invalid_parameter",
        ),
        (
            format!("/api/KafkaOrder/ANS?ID={id}&Response=yes"),
            "invalid_parameter",
        ),
        (
            "/api/KafkaPartner/LIST?limit=0".to_owned(),
            "invalid_parameter",
        ),
        (
            "/api/KafkaPartner/LIST?limit=101".to_owned(),
            "invalid_parameter",
        ),
        (
            "/api/KafkaOrder/LIST?start=-1".to_owned(),
            "invalid_parameter",
        ),
        ("/api/decisions?limit=x".to_owned(), "invalid_parameter"),
    ] {
        let got = s.get(&uri, key).await;
        assert_error(&got, Status::BadRequest, code);
    }
    for (uri, body, code) in [
        (
            format!("/api/orders/{id}/answer"),
            r#"{"response": "maybe"}"#,
            "invalid_parameter",
        ),
        (
            format!("/api/orders/{id}/answer"),
            r#"{"response": 2}"#,
            "invalid_parameter",
        ),
        (
            format!("/api/orders/{id}/answer"),
            r#"{"respo"#,
            "invalid_body",
        ),
        (
            format!("/api/partners/{id}/answer"),
            r#"{"other": 1}"#,
            "invalid_body",
        ),
    ] {
        let got = s.post(&uri, key, body).await;
        assert_error(&got, Status::BadRequest, code);
    }
    // Request ids: 1–128 characters from [0-9A-Za-z_-], as query value and as path
    // segment (percent-encoded, as a client must send them).
    let too_long = "a".repeat(129);
    for bad in [
        too_long.as_str(),
        "a%2Fb",
        "a.b",
        "..",
        "a%3Fb",
        "a%23b",
        "a%20b",
        "%20ab",
    ] {
        for kind in ["KafkaPartner", "KafkaOrder"] {
            let got = s
                .get(&format!("/api/{kind}/ANS?ID={bad}&Response=1"), key)
                .await;
            assert_error(&got, Status::BadRequest, "invalid_parameter");
            let message = got.1["error"]["message"].as_str().unwrap();
            assert!(message.contains("1 to 128 characters"), "{bad}: {message}");
        }
        // A `..` segment is the client's to resolve, never a parameter.
        for kind in ["partners", "orders"].iter().filter(|_| bad != "..") {
            let got = s
                .post(
                    &format!("/api/{kind}/{bad}/answer"),
                    key,
                    r#"{"response": 1}"#,
                )
                .await;
            assert_error(&got, Status::BadRequest, "invalid_parameter");
        }
    }
    let got = s.get("/api/KafkaPartner/ANS?ID=&Response=1", key).await;
    assert_error(&got, Status::BadRequest, "invalid_parameter");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("empty")
    );
    // Rocket's own failures are JSON too.
    assert_error(
        &s.get("/api/nothing-here", key).await,
        Status::NotFound,
        "not_found",
    );
    // Nothing was sent for a bad request: no decision recorded.
    let (_, decisions) = s.get("/api/decisions", key).await;
    assert_eq!(decisions, json!([]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_roles_are_enforced() {
    let s = server(Options::default()).await;
    let partner = s.open_partner();
    let ans = format!("/api/KafkaPartner/ANS?ID={partner}&Response=1");

    assert_error(
        &s.get("/api/KafkaPartner/LIST", None).await,
        Status::Unauthorized,
        "unauthenticated",
    );
    assert_error(
        &s.get("/api/KafkaPartner/LIST", Some("mesk_unknown")).await,
        Status::Unauthorized,
        "unauthenticated",
    );
    assert_error(
        &s.get(&ans, None).await,
        Status::Unauthorized,
        "unauthenticated",
    );

    let viewer = Some(s.viewer.as_str());
    let (status, _) = s.get("/api/KafkaPartner/LIST", viewer).await;
    assert_eq!(status, Status::Ok, "a viewer may list");
    let (status, _) = s.get("/api/decisions", viewer).await;
    assert_eq!(status, Status::Ok);
    assert_error(&s.get(&ans, viewer).await, Status::Forbidden, "forbidden");
    assert_error(
        &s.post(
            &format!("/api/partners/{partner}/answer"),
            viewer,
            r#"{"response": 1}"#,
        )
        .await,
        Status::Forbidden,
        "forbidden",
    );
    assert_error(
        &s.get("/api/tokens", viewer).await,
        Status::Forbidden,
        "forbidden",
    );
    // Still open: nothing a viewer did reached the chain.
    assert_eq!(s.open_partner(), partner);

    // Health and metrics need no key.
    assert_eq!(s.get("/health/live", None).await.0, Status::Ok);
    let (status, ready) = s.get("/health/ready", None).await;
    assert_eq!(status, Status::Ok, "{}", short(&ready));
    assert_eq!(ready["status"], "ok");
    assert_eq!(
        ready["outbox"]["waiting_for_token"],
        false,
        "{}",
        short(&ready)
    );
    // Both record topics are answered: nothing is on hold.
    let topics = ready["outbox"]["topics"].as_array().unwrap();
    let states: Vec<(&str, &str)> = topics
        .iter()
        .map(|t| (t["topic"].as_str().unwrap(), t["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("BLK_Rty", "closed"), ("BLK_Rec", "closed")]);
    let (status, relay) = s.get("/api/outbox/relay", viewer).await;
    assert_eq!(status, Status::Ok, "{}", short(&relay));
    assert_eq!(relay["record_replies"], "wait");
    assert_eq!(relay["topics"].as_array().map(Vec::len), Some(2));
    let (status, metrics) = s.get("/metrics", None).await;
    assert_eq!(status, Status::Ok);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .lines()
            .any(|l| l == "mes_relay_topic_state{topic=\"BLK_Rec\"} 0"),
        "{}",
        short(&metrics)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_managed_over_http_with_secrets_redacted() {
    let s = server(Options {
        master: false,
        ..Options::default()
    })
    .await;
    let key = Some(s.operator.as_str());
    // No master token: 409, not a crash.
    assert_error(
        &s.get("/api/KafkaPartner/LIST", key).await,
        Status::Conflict,
        "no_master_token",
    );
    let partner = s.open_partner();
    assert_error(
        &s.get(
            &format!("/api/KafkaPartner/ANS?ID={partner}&Response=1"),
            key,
        )
        .await,
        Status::Conflict,
        "no_master_token",
    );

    let sim_token = s.token.clone();
    let body = json!({
        "instance_type": "Master",
        "token": sim_token,
        "password": "pw-top-secret",
        "name": "MES 1",
    });
    // Only an admin may replace the master token.
    assert_error(
        &s.post("/api/tokens", key, &body.to_string()).await,
        Status::Forbidden,
        "forbidden",
    );
    let key = Some(s.admin.as_str());
    let (status, stored) = s.post("/api/tokens", key, &body.to_string()).await;
    assert_eq!(status, Status::Ok, "{}", short(&stored));
    assert_eq!(stored["token"], "<redacted>");
    assert_eq!(stored["password"], "<redacted>");
    assert_eq!(stored["name"], "MES 1");
    let (status, listed) = s.get("/api/tokens", key).await;
    assert_eq!(status, Status::Ok);
    let text = listed.to_string();
    assert!(
        !text.contains(&sim_token) && !text.contains("pw-top-secret"),
        "{}",
        short(&listed)
    );

    // The new token is used at once.
    let (status, partners) = s.get("/api/KafkaPartner/LIST", key).await;
    assert_eq!(status, Status::Ok, "{}", short(&partners));
    assert_eq!(partners.as_array().unwrap().len(), 10);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_chain_never_hangs_a_call_and_the_decision_says_what_happened() {
    let s = server(Options {
        chain: false,
        timeout_ms: 1_500,
        ..Options::default()
    })
    .await;
    let key = Some(s.operator.as_str());
    // Against a silent chain a call times out (504), or, when the poller's list timed
    // out first and its reply may still come, is refused at once (503 chain_behind,
    // docs/protocol.md §9): both are true, neither hangs.
    let silent = |(status, body): &(Status, Value)| match *status {
        Status::GatewayTimeout => assert_eq!(body["error"]["code"], "chain_timeout"),
        Status::ServiceUnavailable => assert_eq!(body["error"]["code"], "chain_behind"),
        other => panic!("{other}: {}", short(body)),
    };
    silent(&s.get("/api/KafkaPartner/LIST", key).await);
    let id = "9df8888dea6df991f86e0e61b2379e46";
    let answered = s
        .get(&format!("/api/KafkaOrder/ANS?ID={id}&Response=0"), key)
        .await;
    silent(&answered);
    let (_, decisions) = s.get("/api/decisions", key).await;
    // Sent and unanswered: unknown (the chain's list settles it); refused: not sent.
    let expected = if answered.0 == Status::GatewayTimeout {
        decisions::OUTCOME_UNKNOWN
    } else {
        decisions::OUTCOME_NOT_SENT
    };
    assert_eq!(decisions[0]["outcome"], expected, "{}", short(&decisions));
    assert_eq!(decisions[0]["request_id"], id);

    let (_, metrics) = s.get("/metrics", None).await;
    let metrics = metrics.as_str().unwrap();
    // Timeouts are counted (the poller's own list calls time out against a silent
    // chain too).
    let timeouts: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mes_chain_timeouts_total ")?.parse().ok())
        .expect("mes_chain_timeouts_total");
    assert!(timeouts >= 1, "timeouts counted: {timeouts}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_is_a_503_and_the_server_recovers_without_a_restart() {
    let mut broker = PrivateBroker::start().unwrap();
    let mut s = server(Options {
        brokers: Some(broker.brokers()),
        timeout_ms: 8_000,
        ..Options::default()
    })
    .await;
    let key = Some(s.operator.clone());
    let key = key.as_deref();
    let (status, _) = s.get("/api/KafkaPartner/LIST", key).await;
    assert_eq!(status, Status::Ok);
    let topics = s.sim().topics().clone();

    broker.stop();
    let down = s.get("/api/KafkaPartner/LIST?limit=3", key).await;
    assert_error(&down, Status::ServiceUnavailable, "broker_unavailable");

    // The broker comes back with its topics; the chain's gateway restarts too.
    broker.restart().unwrap();
    if let Some(old) = s.sim.take() {
        let _ = tokio::time::timeout(Duration::from_secs(15), old.shutdown()).await;
    }
    s.sim = Some(start_sim(&broker.brokers(), &topics, &s.token, false).await);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = s.get("/api/KafkaPartner/LIST?limit=3", key).await;
        if status == Status::Ok {
            assert_eq!(body.as_array().unwrap().len(), 3);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery within 60 s: {status} {}",
            short(&body)
        );
        assert!(
            [Status::ServiceUnavailable, Status::GatewayTimeout].contains(&status),
            "{status} {}",
            short(&body)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_list_calls_each_get_their_own_page() {
    // All 64 with one key, at once: above the default per-key limit of 20 a second.
    let s = server(Options {
        rate_limit_per_sec: std::num::NonZeroU32::new(64).unwrap(),
        ..Options::default()
    })
    .await;
    let snapshot = s.sim().ledger_snapshot();
    let key = s.operator.clone();
    let calls = (0..64u32).map(|i| {
        let (start, kind) = (
            i % 12,
            if i % 2 == 0 {
                "KafkaPartner"
            } else {
                "KafkaOrder"
            },
        );
        let uri = format!("/api/{kind}/LIST?start={start}&limit=1");
        let s = &s;
        let key = key.clone();
        async move { (i, start, kind, s.get(&uri, Some(&key)).await) }
    });
    for (i, start, kind, (status, items)) in futures::future::join_all(calls).await {
        assert_eq!(status, Status::Ok, "call {i}: {}", short(&items));
        let expected = if kind == "KafkaPartner" {
            serde_json::to_value(&snapshot.partners[start as usize]).unwrap()
        } else {
            serde_json::to_value(&snapshot.orders[start as usize]).unwrap()
        };
        assert_eq!(items, json!([expected]), "call {i}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_covers_every_route_and_metrics_parse() {
    let s = server(Options::default()).await;
    let key = Some(s.operator.as_str());
    let _ = s.get("/api/KafkaPartner/LIST", key).await;
    let _ = s.get("/api/KafkaPartner/ANS?ID=z.z&Response=1", key).await;

    let (status, doc) = s.get("/api/openapi.json", None).await;
    assert_eq!(status, Status::Ok);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for route in s.client.rocket().routes() {
        let path: String = route
            .uri
            .path()
            .split('/')
            .map(|seg| match seg.strip_prefix('<') {
                Some(name) => format!("{{{}}}", name.trim_end_matches('>')),
                None => seg.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("/");
        let method = route.method.as_str().to_ascii_lowercase();
        assert!(
            doc["paths"][&path][&method].is_object(),
            "{method} {path} is not in the OpenAPI document"
        );
    }

    let response = s.client.get("/metrics").dispatch().await;
    assert_eq!(response.status(), Status::Ok);
    assert_eq!(
        response.content_type().map(|t| t.to_string()).as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = response.into_string().await.unwrap();
    // OpenMetrics: no blank lines, and `# EOF` ends the exposition, once.
    let body = text
        .strip_suffix("# EOF\n")
        .unwrap_or_else(|| panic!("no # EOF at the end: {text}"));
    let mut samples = 0;
    for line in body.lines() {
        assert!(!line.is_empty(), "a blank line");
        if let Some(comment) = line.strip_prefix('#') {
            assert!(
                comment.starts_with(" HELP ")
                    || comment.starts_with(" TYPE ")
                    || comment.starts_with(" UNIT "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        samples += 1;
    }
    assert!(samples > 20);
    assert!(text.contains(
        "mes_http_requests_total{method=\"GET\",route=\"/api/KafkaPartner/LIST\",status=\"200\"} 1"
    ));
    assert!(text.contains(
        "mes_http_requests_total{method=\"GET\",route=\"/api/KafkaPartner/ANS\",status=\"400\"} 1"
    ));
    // The poller lists the chain too (it keeps the mirror fresh): at least our call.
    let sample = |series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no sample {series}"))
    };
    let lists = sample("mes_chain_requests_total{topic=\"BLK_Part_Lst\"}");
    assert!(lists >= 1, "{lists}");
    assert!(sample("mes_chain_request_duration_seconds_count{topic=\"BLK_Part_Lst\"}") >= 1);
    assert!(text.contains("mes_outbox_rows{status=\"pending\"} 0"));
    assert!(text.contains("mes_chain_replies_dropped_total{reason=\"late\"}"));
    s.stop().await;
}

/// Replaces the id of the partner request `old` in the simulator's ledger with `new`:
/// the chain may spell ids in any way the rule allows.
fn respell_partner(sim: &SimHandle, old: &RequestId, new: &str) {
    let new: RequestId = new.parse().unwrap();
    sim.with_ledger(|ledger| {
        let mut state = ledger.snapshot();
        let partner = state
            .partners
            .iter_mut()
            .find(|p| &p.partner_request_id == old)
            .unwrap();
        partner.partner_request_id = new;
        resume(ledger, state);
    });
}

/// Like [`respell_partner`], for an order.
fn respell_order(sim: &SimHandle, old: &RequestId, new: &str) {
    let new: RequestId = new.parse().unwrap();
    sim.with_ledger(|ledger| {
        let mut state = ledger.snapshot();
        let order = state
            .orders
            .iter_mut()
            .find(|o| &o.abs_action_id == old)
            .unwrap();
        order.abs_action_id = new;
        resume(ledger, state);
    });
}

/// The same chain (key, agent, tokens) holding `state`.
fn resume(ledger: &mut Ledger, state: LedgerState) {
    let placeholder = Ledger::new(SigningKey::generate(), ledger.mes_agent().clone(), []);
    let current = std::mem::replace(ledger, placeholder);
    *ledger = current.with_state(state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_as_the_chain_spells_them() {
    let s = server(Options::default()).await;
    let key = Some(s.operator.as_str());
    let erp = SigningKey::generate().agent_key();
    let (partner, order) = s.sim().with_ledger(|ledger| {
        let partner = ledger
            .add_partner(erp.clone(), ChainStatus::Open, 1_900_000_000)
            .unwrap();
        let order = ledger
            .add_order(
                NewOrder {
                    issuing_agent: erp.clone(),
                    order_type: "dummy_action".to_owned(),
                    description: "mixed-case id".to_owned(),
                    metadata: json!({"qty": 1}),
                    files: vec![],
                },
                ChainStatus::Open,
                1_900_000_001,
            )
            .unwrap();
        (partner, order)
    });
    respell_partner(s.sim(), &partner, "ABC_def-123");
    respell_order(s.sim(), &order, "Order_XY-9");

    // Another case is another id: the chain does not know it.
    let got = s
        .post(
            "/api/partners/abc_DEF-123/answer",
            key,
            r#"{"response": 1}"#,
        )
        .await;
    assert_error(&got, Status::BadGateway, "chain_error");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("abc_DEF-123"),
        "{}",
        short(&got.1)
    );

    let (status, body) = s
        .get("/api/KafkaPartner/ANS?ID=ABC_def-123&Response=1", key)
        .await;
    assert_eq!(status, Status::Ok, "{}", short(&body));
    assert_eq!(body, json!("Request ABC_def-123 accepted"));
    let on_chain = s.sim().with_ledger(|ledger| {
        ledger
            .partner(&"ABC_def-123".parse().unwrap())
            .map(|p| p.status.clone())
    });
    assert_eq!(on_chain, Some(ChainStatus::Accepted));

    // The order is listed (and remembered) as spelled, then taken over as spelled.
    let (status, listed) = s
        .get("/api/KafkaOrder/LIST?status=OPEN&limit=100", key)
        .await;
    assert_eq!(status, Status::Ok, "{}", short(&listed));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["abs_action_id"] == "Order_XY-9"),
        "{}",
        short(&listed)
    );
    let (status, body) = s
        .post(
            "/api/orders/Order_XY-9/answer",
            key,
            r#"{"response": "accept"}"#,
        )
        .await;
    assert_eq!(status, Status::Ok, "{}", short(&body));
    assert_eq!(body["message"], json!("Request Order_XY-9 accepted"));
    assert_eq!(body["production_order"]["chain_order_id"], "Order_XY-9");
    assert_eq!(body["production_order"]["description"], "mixed-case id");

    let (_, decisions) = s.get("/api/decisions", key).await;
    let ids: Vec<&str> = decisions
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["Order_XY-9", "ABC_def-123", "abc_DEF-123"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_filter_applies_to_the_whole_chain_list_before_paging() {
    let s = server(Options::default()).await;
    let key = Some(s.operator.as_str());
    // 240 more partner requests, after the demo's; some accepted on the chain, on
    // several of its pages of 100.
    let erp = SigningKey::generate().agent_key();
    let seeded: Vec<RequestId> = s.sim().with_ledger(|ledger| {
        for p in ledger.snapshot().partners {
            if p.status == ChainStatus::Accepted {
                ledger.set_partner_status(&p.partner_request_id, ChainStatus::Open);
            }
        }
        (0..240)
            .map(|i| {
                let status = if [17, 95, 160].contains(&i) {
                    ChainStatus::Accepted
                } else {
                    ChainStatus::Open
                };
                ledger
                    .add_partner(erp.clone(), status, 1_900_000_000 + i)
                    .unwrap()
            })
            .collect()
    });
    // Two more accepted through the API, further down the list.
    for i in [120, 230] {
        let (status, body) = s
            .post(
                &format!("/api/partners/{}/answer", seeded[i]),
                key,
                r#"{"response": "accept"}"#,
            )
            .await;
        assert_eq!(status, Status::Ok, "{}", short(&body));
    }
    // The chain's order: by timestamp, then id.
    let mut chain = s.sim().ledger_snapshot().partners;
    chain.sort_by(|a, b| {
        (a.timestamp, &a.partner_request_id).cmp(&(b.timestamp, &b.partner_request_id))
    });
    assert!(chain.len() >= 250);
    let accepted: Vec<Value> = chain
        .iter()
        .filter(|p| p.status == ChainStatus::Accepted)
        .map(|p| json!(p.partner_request_id))
        .collect();
    assert_eq!(accepted.len(), 5);
    let ids = |body: &Value| -> Vec<Value> {
        body.as_array()
            .unwrap_or_else(|| panic!("{}", short(body)))
            .iter()
            .map(|p| p["partner_request_id"].clone())
            .collect()
    };

    // The default limit (10): every accepted one, though the chain's first 10 have none.
    let (status, body) = s.get("/api/KafkaPartner/LIST?status=ACCEPTED", key).await;
    assert_eq!(status, Status::Ok, "{}", short(&body));
    assert_eq!(ids(&body), accepted);
    assert!(
        body.as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] == "ACCEPTED")
    );
    // start/limit page over the filtered list.
    let (_, body) = s
        .get(
            "/api/KafkaPartner/LIST?status=accepted&start=1&limit=2",
            key,
        )
        .await;
    assert_eq!(ids(&body), accepted[1..3]);
    let (_, body) = s
        .get(
            "/api/KafkaPartner/LIST?status=ACCEPTED&start=4&limit=100",
            key,
        )
        .await;
    assert_eq!(ids(&body), accepted[4..]);
    let (_, body) = s
        .get("/api/KafkaPartner/LIST?status=ACCEPTED&start=5", key)
        .await;
    assert_eq!(ids(&body), Vec::<Value>::new());
    // Open ones: the filtered list's third page of 100.
    let open: Vec<Value> = chain
        .iter()
        .filter(|p| p.status == ChainStatus::Open)
        .map(|p| json!(p.partner_request_id))
        .collect();
    let (_, body) = s
        .get(
            "/api/KafkaPartner/LIST?status=OPEN&start=200&limit=100",
            key,
        )
        .await;
    assert_eq!(ids(&body), open[200..]);
    // Without a status, a page of the chain's list as before.
    let (_, body) = s.get("/api/KafkaPartner/LIST?start=100&limit=5", key).await;
    let page: Vec<Value> = chain[100..105]
        .iter()
        .map(|p| json!(p.partner_request_id))
        .collect();
    assert_eq!(ids(&body), page);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backed_server_lists_accepts_and_produces() {
    let s = server(Options {
        sqlite: true,
        ..Options::default()
    })
    .await;
    let key = Some(s.operator.as_str());
    let (status, partners) = s.get("/api/KafkaPartner/LIST?limit=5", key).await;
    assert_eq!(status, Status::Ok);
    assert_eq!(partners.as_array().unwrap().len(), 5);
    let order = s.open_order();
    let (status, message) = s
        .get(&format!("/api/KafkaOrder/ANS?ID={order}&Response=1"), key)
        .await;
    assert_eq!(status, Status::Ok, "{}", short(&message));
    let (_, produced) = s.get("/api/production-orders", key).await;
    assert_eq!(produced[0]["chain_order_id"], order.as_str());
    let (_, decisions) = s.get("/api/decisions", key).await;
    assert_eq!(decisions[0]["outcome"], "accepted");
    s.stop().await;
}

/// `cargo run -p mes-api` with nothing configured, in-process: SQLite in a data dir,
/// the mock broker, the simulated chain with demo data, a master token and a demo
/// operator key. The whole flow works with that key alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_serves_the_whole_flow() {
    let dir = TempDir::create().unwrap();
    let settings = Settings {
        data_dir: dir.path().join("mes-data"),
        ..Settings::default()
    };
    assert!(settings.is_embedded(), "the default is the embedded demo");
    let prepared = tokio::time::timeout(Duration::from_secs(60), server::prepare(settings))
        .await
        .unwrap()
        .unwrap();
    let key = prepared.demo_key.clone().unwrap();
    let client = Client::tracked(server::rocket(rocket::Config::figment(), prepared.app))
        .await
        .unwrap();
    assert!(dir.path().join("mes-data/mes.db").exists());
    let auth = || Header::new("Authorization", format!("Bearer {key}"));

    let (status, partners) = read(
        client
            .get("/api/KafkaPartner/LIST?status=OPEN&limit=100")
            .header(auth())
            .dispatch()
            .await,
    )
    .await;
    assert_eq!(status, Status::Ok, "{}", short(&partners));
    let partner = partners[0]["partner_request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, message) = read(
        client
            .get(format!("/api/KafkaPartner/ANS?ID={partner}&Response=1"))
            .header(auth())
            .dispatch()
            .await,
    )
    .await;
    assert_eq!(status, Status::Ok, "{}", short(&message));

    let (status, orders) = read(
        client
            .get("/api/KafkaOrder/LIST?status=OPEN&limit=100")
            .header(auth())
            .dispatch()
            .await,
    )
    .await;
    assert_eq!(status, Status::Ok);
    let order = orders[0]["abs_action_id"].as_str().unwrap().to_owned();
    let (status, body) = read(
        client
            .post(format!("/api/orders/{order}/answer"))
            .header(auth())
            .header(ContentType::JSON)
            .body(r#"{"response": "accept"}"#)
            .dispatch()
            .await,
    )
    .await;
    assert_eq!(status, Status::Ok, "{}", short(&body));
    assert_eq!(body["production_order"]["chain_order_id"], order.as_str());

    // The demo seeds production units; the server's relay delivers their records to
    // the embedded chain.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, units) = read(
            client
                .get("/api/ProductionUnit")
                .header(auth())
                .dispatch()
                .await,
        )
        .await;
        assert_eq!(status, Status::Ok, "{}", short(&units));
        let units = units.as_array().unwrap().clone();
        let codes: Vec<&str> = units.iter().filter_map(|u| u["code"].as_str()).collect();
        assert_eq!(codes, ["PT10", "PT11"]);
        if units.iter().all(|u| u["chain"]["state"] == "delivered") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the demo units' records were not delivered: {}",
            short(&Value::Array(units))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (status, ready) = read(client.get("/health/ready").dispatch().await).await;
    assert_eq!(status, Status::Ok, "{}", short(&ready));
    assert_eq!(ready["status"], "ok");
    // The demo's units were seeded; their records are on their way to the chain.
    assert!(ready["outbox"]["pending"].is_i64(), "{}", short(&ready));
    if let Some(app) = client.rocket().state::<App>() {
        app.shutdown().await;
    }
}
