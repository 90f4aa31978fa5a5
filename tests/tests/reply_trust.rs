//! Replies are authentic, or the operator said otherwise (docs/security.md, "Replies
//! from the chain"; docs/protocol.md §5). `mes-api` as a process, the real broker and
//! PostgreSQL, the chain simulator, and a forger: a test producer that writes to the
//! reply topic (and the request topics) as anyone with write access could.
//!
//! - Without `MES_GATEWAY_KEY_FILE` and without `MES_REPLY_TRUST=unsigned`, the server
//!   refuses to start, with one line naming both.
//! - With a gateway key, forged, replayed, header-swapped replies, and the gateway's
//!   own signed answer to another request sent under our `corr`, are dropped and
//!   counted; the operator gets the real reply.
//! - With `MES_REPLY_TRUST=unsigned`, the server says so: one WARN line at start,
//!   `/health/ready`, `/metrics` (the console's banner is checked in `console.rs`).
//! - In `auto` mode after the first echo, stray replies without `corr` for our token
//!   never change the matching mode nor cost an operator a timeout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use chain_sim::{SimConfig, SimHandle, SimTopics, Simulator};
use kafka_bridge::kafka::{correlation_headers, header_corr};
use mes_core::codec::{Envelope, Page, Reply, ReplyBody, Request, Topic, decode_reply};
use mes_core::db::{self, tokens};
use mes_core::signing::{SigningKey, request_digest};
use mes_e2e::db::{PgSchema, TempDir, add_operators};
use mes_e2e::kafka_brokers;
use mes_e2e::server::{DEADLINE, ServerProc, http, topic_env};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

const BIN: &str = env!("CARGO_BIN_EXE_mes-api-proc");

/// Partner requests the simulated chain starts with.
const DEMO: usize = 12;

/// How much later than the others the chain answers a list of the page at index 0:
/// the window in which the forger's replies come first.
const LATE_FIRST_PAGE: Duration = Duration::from_millis(2500);

struct Chain {
    sim: SimHandle,
    token: String,
    key: SigningKey,
    schema: PgSchema,
    operator: String,
}

/// A simulated chain (signing its replies or not) and a database holding its master
/// token and an operator.
async fn chain(sign_replies: bool) -> Chain {
    let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
    let token = format!("trust-token{suffix}");
    let key = SigningKey::generate();
    let mut config = SimConfig::new(kafka_brokers());
    config.topics = SimTopics::with_suffix(&suffix);
    config.group_id = format!("chain-sim{suffix}");
    config.tokens = vec![token.clone()];
    config.key = Some(key.clone());
    config.demo = DEMO;
    config.gateway.sign_replies = sign_replies;
    config.gateway.late_list_replies.insert(0, LATE_FIRST_PAGE);
    let sim = Simulator::start(config).await.unwrap();

    let schema = PgSchema::create_in(&mes_e2e::database_url());
    let (url, master) = (schema.url().to_owned(), token.clone());
    let operator = tokio::task::spawn_blocking(move || {
        let mut conn = db::connect(&url).unwrap();
        tokens::put(
            &mut conn,
            &tokens::NewKafkaToken {
                instance_type: tokens::MASTER,
                token: &master,
                ..Default::default()
            },
        )
        .unwrap();
        add_operators(&mut conn).unwrap().0
    })
    .await
    .unwrap();
    Chain {
        sim,
        token,
        key,
        schema,
        operator,
    }
}

impl Chain {
    /// The server's environment on this chain's topics and database, plus `extra`.
    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = vec![
            ("MES_DATABASE_URL".to_owned(), self.schema.url().to_owned()),
            ("MES_KAFKA_BROKERS".to_owned(), kafka_brokers()),
            // The poller stays out of the way: its lists are not the subject here.
            ("MES_POLL_INTERVAL_SECS".to_owned(), "3600".to_owned()),
        ];
        env.extend(topic_env(&self.sim.topics().chain));
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        env
    }

    fn topic(&self, topic: Topic) -> String {
        self.sim.topics().chain.request(topic).to_owned()
    }

    fn reply_topic(&self) -> String {
        self.sim.topics().chain.reply.clone()
    }
}

/// Writes to any topic, as anyone with write access to the cluster could.
struct Forger {
    producer: FutureProducer,
}

impl Forger {
    fn new() -> Forger {
        let producer = mes_e2e::client_config(&kafka_brokers())
            .set("message.timeout.ms", "10000")
            .create()
            .unwrap();
        Forger { producer }
    }

    async fn send(&self, topic: &str, payload: &[u8], header_corr: Option<&str>) {
        let mut record: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic).payload(payload);
        if let Some(corr) = header_corr {
            record = record.headers(correlation_headers(corr));
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
}

/// Reads `topics` from their beginning: everything published on them, in order.
fn reader(topics: &[&str]) -> StreamConsumer {
    let consumer: StreamConsumer = mes_e2e::client_config(&kafka_brokers())
        .set(
            "group.id",
            format!("forger-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        assignment
            .add_partition_offset(topic, 0, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    consumer
}

/// The next record of `consumer` for which `pick` says something, within the deadline.
async fn next<T>(
    consumer: &StreamConsumer,
    mut pick: impl FnMut(&str, &[u8], Option<String>) -> Option<T>,
) -> T {
    let until = Instant::now() + DEADLINE;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, consumer.recv())
            .await
            .expect("the record the forger waits for never came")
            .unwrap();
        if let Some(found) = pick(
            message.topic(),
            message.payload().unwrap_or_default(),
            header_corr(&message),
        ) {
            return found;
        }
    }
}

/// A list request of the page at `start` (limit 10, as the original LIST routes ask)
/// read from its topic: its `corr` and envelope.
fn list_request(payload: &[u8], start: u32) -> Option<(String, Envelope)> {
    let (head, request) = Request::decode(Topic::PartnerList, payload).ok()?;
    match request {
        Request::ListPartners(page) if page.start == start && page.limit == 10 => {
            let value: Value = serde_json::from_slice(payload).ok()?;
            Some((head.corr?, Envelope::from_value(&value).ok()?))
        }
        _ => None,
    }
}

/// The value of one metric line (`name{labels}` exactly), 0 when absent.
async fn metric(port: u16, series: &str) -> f64 {
    let (status, body) = http(port, "GET", "/metrics", None, None).await.unwrap();
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0.0)
}

fn dropped(reason: &str) -> String {
    format!("mes_chain_replies_dropped_total{{reason=\"{reason}\"}}")
}

/// Waits until `series` reaches at least `n`: the server has counted what was sent.
async fn wait_metric(port: u16, series: &str, n: f64) {
    let until = Instant::now() + DEADLINE;
    loop {
        if metric(port, series).await >= n {
            return;
        }
        assert!(Instant::now() < until, "{series} never reached {n}");
        sleep(Duration::from_millis(100)).await;
    }
}

async fn ready(port: u16) -> Value {
    let (status, body) = http(port, "GET", "/health/ready", None, None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// `GET /api/KafkaPartner/LIST?start=…`: the partner ids of the page, in order.
async fn list(port: u16, key: &str, start: u32) -> Vec<String> {
    let path = format!("/api/KafkaPartner/LIST?start={start}&limit=10");
    let (status, body) = http(port, "GET", &path, Some(key), None).await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    let items: Vec<Value> = serde_json::from_str(&body).unwrap();
    items
        .iter()
        .map(|item| {
            item["partner_request_id"]
                .as_str()
                .unwrap_or_else(|| panic!("not a partner request: {item}"))
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_gateway_key_nor_unsigned_trust_the_server_refuses_to_start() {
    let chain = chain(false).await;
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("MES_") || name.starts_with("ROCKET_") {
            command.env_remove(name);
        }
    }
    let output = command
        .envs(chain.env(&[]))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].starts_with("mes-api: error: ")
            && lines[0].contains("MES_GATEWAY_KEY_FILE")
            && lines[0].contains("MES_REPLY_TRUST=unsigned"),
        "{stderr}"
    );
    // Refused before anything was sent to the chain.
    assert_eq!(chain.sim.counters().applied, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_gateway_key_forged_replayed_and_header_swapped_replies_are_dropped_and_the_real_one_returned()
 {
    let chain = chain(true).await;
    let dir = TempDir::create().unwrap();
    let key_file = dir.path().join("gateway.pub");
    std::fs::write(&key_file, chain.key.agent_key().to_string()).unwrap();
    let key_path = key_file.display().to_string();
    let mut server = ServerProc::spawn(BIN, &chain.env(&[("MES_GATEWAY_KEY_FILE", &key_path)]));
    server.wait_ready().await;
    let port = server.port;
    assert_eq!(ready(port).await["reply_verification"], "on");
    assert_eq!(metric(port, "mes_chain_reply_verification").await, 1.0);

    let list_topic = chain.topic(Topic::PartnerList);
    let reply_topic = chain.reply_topic();
    let requests = reader(&[&list_topic]);
    let replies = reader(&[&reply_topic]);
    let forger = Forger::new();

    // An earlier call, answered: its signed reply is what the forger will replay.
    let page2 = list(port, &chain.operator, 2).await;
    assert_eq!(page2.len(), 10);
    let (old_corr, _) = next(&requests, |_, payload, _| list_request(payload, 2)).await;
    let old_reply = next(&replies, |_, payload, _| {
        let reply = decode_reply(payload).ok()?;
        (reply.head.corr.as_deref() == Some(old_corr.as_str())).then(|| payload.to_vec())
    })
    .await;

    // The operator lists the first page; the chain answers it late.
    let operator = chain.operator.clone();
    let call = tokio::spawn(async move { list(port, &operator, 0).await });
    let (corr, envelope) = next(&requests, |_, payload, _| list_request(payload, 0)).await;
    let forged_data = ReplyBody::Data(vec![json!({"partner_request_id": "forged"})]);

    // 1. The earlier signed reply, replayed as it was.
    forger.send(&reply_topic, &old_reply, None).await;
    // 2. The same, with our call's corr in the (unsigned) Kafka header.
    forger.send(&reply_topic, &old_reply, Some(&corr)).await;
    // 3. Unsigned, with our corr in head and header.
    let unsigned = Reply::new(&chain.token, Some(&corr), forged_data.clone());
    forger
        .send(&reply_topic, &unsigned.to_json_bytes(), Some(&corr))
        .await;
    // 4. Bound to our request, but signed by another key.
    let mut other_key = Reply::new(&chain.token, Some(&corr), forged_data);
    other_key
        .envelope_mut()
        .head
        .insert("req".into(), Value::String(request_digest(&envelope)));
    SigningKey::generate().sign_envelope(other_key.envelope_mut());
    forger
        .send(&reply_topic, &other_key.to_json_bytes(), Some(&corr))
        .await;
    // 5. A request of the forger's under our corr: the gateway's genuine signed answer
    //    to it (the page at 2) carries our corr, but another request's digest.
    let theirs = Request::ListPartners(Page {
        start: 2,
        limit: 10,
    })
    .envelope(&chain.token, Some(&corr));
    forger
        .send(&list_topic, &theirs.to_bytes(), Some(&corr))
        .await;

    for (reason, n) in [
        ("replayed", 1.0),
        ("header_mismatch", 1.0),
        ("bad_signature", 2.0),
        ("wrong_request", 1.0),
    ] {
        wait_metric(port, &dropped(reason), n).await;
    }
    // Then the chain's own answer comes, and it is the one the operator gets.
    let page0 = call.await.unwrap();
    assert_eq!(page0.len(), 10);
    assert!(!page0.iter().any(|id| id == "forged"), "{page0:?}");
    assert_eq!(page0[2..], page2[..8], "the first page, not the page at 2");
    assert_ne!(page0[0], page2[0]);
    assert_eq!(metric(port, "mes_chain_timeouts_total").await, 0.0);
    server.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_unsigned_trust_the_server_says_so_at_start_in_health_and_metrics() {
    let chain = chain(false).await;
    let port = mes_e2e::free_port().unwrap();
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("MES_") || name.starts_with("ROCKET_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .envs(chain.env(&[("MES_REPLY_TRUST", "unsigned")]))
        .env("ROCKET_ADDRESS", "127.0.0.1")
        .env("ROCKET_PORT", port.to_string())
        .env("ROCKET_LOG_LEVEL", "off")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let until = Instant::now() + DEADLINE;
    let health = loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("mes-api exited: {status}");
        }
        if let Ok((200, body)) = http(port, "GET", "/health/ready", None, None).await {
            break serde_json::from_str::<Value>(&body).unwrap();
        }
        assert!(Instant::now() < until, "mes-api did not become ready");
        sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(health["reply_verification"], "off", "{health}");
    assert_eq!(metric(port, "mes_chain_reply_verification").await, 0.0);
    // The console carries the banner the page shows when health says "off".
    let (status, page) = http(port, "GET", "/", None, None).await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("id=\"unverified\""), "{page}");
    // The warning was written before the server listened: all of it is there now.
    let _ = child.kill();
    let _ = child.wait();
    let lines: Vec<String> = rx.iter().collect();
    let warnings: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("MES_REPLY_TRUST=unsigned"))
        .collect();
    assert_eq!(warnings.len(), 1, "{lines:#?}");
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(
        !lines.iter().any(|l| l.contains(&chain.token)),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_auto_mode_stray_replies_after_the_first_echo_cost_operators_no_timeout() {
    let chain = chain(false).await;
    // ServerProc accepts unsigned replies unless told otherwise; auto is the default.
    let mut server = ServerProc::spawn(BIN, &chain.env(&[]));
    server.wait_ready().await;
    let port = server.port;
    assert_eq!(ready(port).await["reply_verification"], "off");

    // The first echo: requests run concurrently from now on.
    list(port, &chain.operator, 1).await;
    assert_eq!(ready(port).await["chain"]["matching"], "id");

    let forger = Forger::new();
    let reply_topic = chain.reply_topic();
    let list_topic = chain.topic(Topic::PartnerList);
    let requests = reader(&[&list_topic]);
    let unmatched = dropped("unmatched");
    for i in 0..10u32 {
        // A call of ours waits for its (late) reply: a stray could be its answer, as
        // far as the token tells.
        let operator = chain.operator.clone();
        let waiting = tokio::spawn(async move { list(port, &operator, 0).await });
        next(&requests, |_, payload, _| list_request(payload, 0)).await;
        // A reply for our token without corr, as anyone who read the token can send.
        let body = if i % 2 == 0 {
            ReplyBody::Message(json!(format!("stray {i}")))
        } else {
            ReplyBody::Data(vec![json!({"partner_request_id": "stray"})])
        };
        let stray = Reply::new(&chain.token, None, body);
        forger
            .send(&reply_topic, &stray.to_json_bytes(), None)
            .await;
        wait_metric(port, &unmatched, f64::from(i + 1)).await;
        assert_eq!(
            ready(port).await["chain"]["matching"],
            "id",
            "stray reply {i} changed the matching mode"
        );
        let page = list(port, &chain.operator, 1 + i % 2).await;
        assert!(!page.iter().any(|id| id == "stray"));
        let first = waiting.await.unwrap();
        assert!(!first.iter().any(|id| id == "stray"));
    }
    assert_eq!(metric(port, "mes_chain_timeouts_total").await, 0.0);
    assert_eq!(
        metric(port, "mes_chain_matching_fallbacks_total").await,
        0.0
    );
    server.terminate().await;
}
