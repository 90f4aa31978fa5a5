//! W3C trace context from an HTTP request to the Kafka records it causes, against the
//! real broker, PostgreSQL and `chain-sim`, read back with a plain consumer:
//! - a LIST with a `traceparent` sends its list request with a child of that trace
//!   (same trace id, a span id of its own);
//! - a PATCH with a `traceparent` stores the trace with its outbox row, and the
//!   relay's record for that row (sent later, by a background task) carries the
//!   PATCH's trace id;
//! - a request without one starts a trace of its own, which every row it enqueued
//!   and every record sent for them share.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chain_sim::{SimConfig, SimTopics, Simulator};
use mes_api::config::{ReplyTrust, Settings};
use mes_api::server;
use mes_core::db::{self, outbox, tokens};
use mes_core::trace::TraceParent;
use mes_e2e::db::PgSchema;
use mes_e2e::kafka_brokers;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rocket::http::{ContentType, Header, Status};
use rocket::local::asynchronous::Client;
use serde_json::Value;

/// Generous: the relay polls every second and the test machine is shared.
const DEADLINE: Duration = Duration::from_secs(90);

const LIST_PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const PATCH_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// One record as a plain consumer reads it: its envelope and its `traceparent`.
struct Record {
    envelope: Value,
    traceparent: Option<String>,
}

/// Every record on `topic` (one partition) from the beginning, until `enough` holds
/// for what was read.
async fn read_topic(topic: &str, enough: impl Fn(&[Record]) -> bool) -> Vec<Record> {
    let consumer: StreamConsumer = mes_e2e::client_config(&kafka_brokers())
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    while !enough(&records) {
        let message = tokio::time::timeout(DEADLINE, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("no further record on {topic}"))
            .unwrap();
        let traceparent = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "traceparent"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8(v.to_vec()).unwrap());
        records.push(Record {
            envelope: serde_json::from_slice(message.payload().unwrap()).unwrap(),
            traceparent,
        });
    }
    records
}

/// The trace a record carries; it must be a valid version-00 `traceparent`.
fn trace_of(record: &Record) -> TraceParent {
    let value = record
        .traceparent
        .as_deref()
        .unwrap_or_else(|| panic!("a record without traceparent: {}", record.envelope));
    assert_eq!(value.len(), 55, "{value}");
    TraceParent::parse(value).unwrap_or_else(|| panic!("not a traceparent: {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_carry_the_trace_of_the_request_that_caused_them_even_through_the_outbox() {
    let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
    let token = format!("trace-test-token{suffix}");
    let topics = SimTopics::with_suffix(&suffix);
    let mut sim_config = SimConfig::new(kafka_brokers());
    sim_config.topics = topics.clone();
    sim_config.group_id = format!("chain-sim{suffix}");
    sim_config.tokens = vec![token.clone()];
    sim_config.demo = 0;
    let sim = Simulator::start(sim_config).await.unwrap();
    let schema = PgSchema::create_in(&mes_e2e::database_url());
    let url = schema.url().to_owned();
    let (operator, _) = tokio::task::spawn_blocking(move || {
        let mut conn = db::connect(&url).unwrap();
        tokens::put(
            &mut conn,
            &tokens::NewKafkaToken {
                instance_type: tokens::MASTER,
                token: &token,
                ..Default::default()
            },
        )
        .unwrap();
        mes_e2e::db::add_operators(&mut conn).unwrap()
    })
    .await
    .unwrap();
    let mut settings = Settings {
        database_url: Some(schema.url().to_owned()),
        kafka_brokers: kafka_brokers(),
        database_pool_size: 4,
        reply_trust: ReplyTrust::Unsigned,
        ..Settings::default()
    };
    settings.set_topics(&topics.chain);
    let prepared = server::prepare(settings).await.unwrap();
    let client = Client::tracked(server::rocket(rocket::Config::figment(), prepared.app))
        .await
        .unwrap();
    let auth = Header::new("Authorization", format!("Bearer {operator}"));

    // A LIST that continues a caller's trace.
    let status = client
        .get("/api/KafkaPartner/LIST")
        .header(auth.clone())
        .header(Header::new("traceparent", LIST_PARENT))
        .dispatch()
        .await
        .status();
    assert_eq!(status, Status::Ok);

    // A unit created without a traceparent, then changed with one.
    let status = client
        .post("/api/ProductionUnit")
        .header(auth.clone())
        .header(ContentType::JSON)
        .body(r#"{"code": "PT70", "name": "Press PT70", "Status": "RUNNING", "ProcessName": "Stamping"}"#)
        .dispatch()
        .await
        .status();
    assert_eq!(status, Status::Created);
    let status = client
        .patch("/api/ProductionUnit/PT70")
        .header(auth.clone())
        .header(ContentType::JSON)
        .header(Header::new("traceparent", PATCH_PARENT))
        .body(r#"{"Status": "STOPPED", "ProcessName": "Maintenance"}"#)
        .dispatch()
        .await
        .status();
    assert_eq!(status, Status::Ok);

    // The rows keep the trace of the request that wrote them.
    let url = schema.url().to_owned();
    let rows = tokio::task::spawn_blocking(move || {
        let mut conn = db::connect(&url).unwrap();
        outbox::list(&mut conn, None, 100, 0).unwrap()
    })
    .await
    .unwrap();
    let patch = TraceParent::parse(PATCH_PARENT).unwrap();
    let mut row_traces = HashMap::new();
    for row in &rows {
        let stored = TraceParent::parse(row.traceparent.as_deref().unwrap()).unwrap();
        row_traces.insert(row.dedup_key.clone(), stored.trace_id());
    }
    let update_key = rows
        .iter()
        .find(|r| r.payload.contains("Maintenance"))
        .map(|r| r.dedup_key.clone())
        .expect("the PATCH's update row");
    assert_eq!(row_traces[&update_key], patch.trace_id());
    let creation: HashSet<&String> = row_traces
        .iter()
        .filter(|(key, _)| **key != update_key)
        .map(|(_, trace)| trace)
        .collect();
    assert_eq!(creation.len(), 1, "one request, one trace: {row_traces:?}");
    let creation_trace = creation.into_iter().next().unwrap().clone();
    assert_ne!(creation_trace, patch.trace_id());

    // The list request on the broker: a child of the LIST's traceparent.
    let list_parent = TraceParent::parse(LIST_PARENT).unwrap();
    // The server's own background scans of the list (the mirror) send list requests
    // too, each on a new trace of its own: read until the LIST's record.
    let ours = |record: &Record| trace_of(record).trace_id() == list_parent.trace_id();
    let lists = read_topic(&topics.chain.partner_list, |read| read.iter().any(ours)).await;
    let sent = lists.iter().find(|r| ours(r)).map(trace_of).unwrap();
    assert_ne!(sent.parent_id(), list_parent.parent_id());
    for background in lists.iter().filter(|r| !ours(r)) {
        assert_ne!(trace_of(background).trace_id(), patch.trace_id());
    }

    // The relay's records (every row is on BLK_Rty or BLK_Rec): each carries the trace
    // its row was stored with; the update's is the PATCH's.
    let on = |topic: &str| rows.iter().filter(|r| r.topic == topic).count();
    let (rty, rec) = (on("BLK_Rty"), on("BLK_Rec"));
    assert_eq!(rty + rec, rows.len());
    let mut records = read_topic(&topics.chain.record_type, |read| read.len() >= rty).await;
    records.extend(read_topic(&topics.chain.record, |read| read.len() >= rec).await);
    for record in &records {
        let idem = record.envelope[0]["idem"].as_str().unwrap().to_owned();
        let trace = trace_of(record);
        assert_eq!(trace.trace_id(), row_traces[&idem], "{idem}");
        if idem == update_key {
            assert_eq!(trace.trace_id(), patch.trace_id());
            assert_ne!(trace.parent_id(), patch.parent_id());
        }
    }
    let _ = client.terminate().await;
    sim.shutdown().await.unwrap();
}
