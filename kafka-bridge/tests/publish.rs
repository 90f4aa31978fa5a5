//! `Bridge::publish` against the real test broker (tansu via `./scripts/test`): the
//! request is on its topic with the envelope `request` would send, and the call returns
//! on the broker's acknowledgement with no reply pending.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use kafka_bridge::Error;
use kafka_bridge::bridge::{Bridge, BridgeConfig, CallOptions};
use kafka_bridge::kafka::{CORRELATION_HEADER, KafkaConfig, TopicNames};
use mes_core::codec::{Envelope, PropertyValue, RecordAction, Request, Topic};
use mes_core::signing::{SigningKey, verify_envelope};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;

/// The master token the test sends.
const TOKEN: &str = "4f1c2a9e7b";

/// Bound on the wait for the published record: a lost one fails the test, never hangs it.
const WAIT: Duration = Duration::from_secs(20);

/// The test broker, which `./scripts/test` starts and names (docs/testing.md).
fn brokers() -> String {
    std::env::var("MES_TEST_KAFKA_BROKERS")
        .ok()
        .filter(|b| !b.trim().is_empty())
        .expect("MES_TEST_KAFKA_BROKERS is not set: run `./scripts/test -p kafka-bridge`")
}

fn update(code: &str) -> Request {
    Request::Record(RecordAction::UpdateProperties {
        record_id: code.to_owned(),
        properties: vec![PropertyValue {
            name: "status".to_owned(),
            value: json!("RUNNING"),
        }],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_returns_on_the_brokers_ack_with_the_envelope_request_would_send() {
    // Nobody reads these topics: a reply will never come, and none is awaited.
    let topics = TopicNames::with_suffix(&format!("-{}", uuid::Uuid::new_v4().simple()));
    let key = SigningKey::generate();
    let mut config = BridgeConfig::new(KafkaConfig::new(brokers()));
    config.topics = topics.clone();
    config.signing_key = Some(key.clone());
    let bridge = Bridge::connect(config).await.unwrap();

    let options = CallOptions {
        idem: Some("unit:PT10:update:1".to_owned()),
        ..CallOptions::default()
    };
    let published = bridge
        .publish(TOKEN, update("PT10"), options)
        .await
        .unwrap();
    assert_eq!(published.topic, topics.record);
    assert_eq!(bridge.pending(), 0, "no reply is awaited");
    assert_eq!(bridge.metrics().requests(Topic::Record), 1);

    // The message at the acknowledged offset.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(
        &published.topic,
        published.partition,
        Offset::Offset(published.offset),
    )
    .unwrap();
    consumer.assign(&tpl).unwrap();
    let message = tokio::time::timeout(WAIT, consumer.recv())
        .await
        .expect("the published request is on its topic")
        .unwrap();
    assert_eq!(message.offset(), published.offset);
    let header = message
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == CORRELATION_HEADER))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8(v.to_vec()).unwrap());
    assert_eq!(header.as_deref(), Some(published.corr.as_str()));
    let value: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
    let envelope = Envelope::from_value(&value).unwrap();
    assert_eq!(envelope.head["auth"], TOKEN);
    assert_eq!(envelope.head["corr"], published.corr.as_str());
    assert_eq!(envelope.head["idem"], "unit:PT10:update:1");
    verify_envelope(&envelope, Some(&key.agent_key())).expect("signed by the MES key");
    assert_eq!(envelope.body, Some(update("PT10").body()));

    // After shutdown nothing is published.
    bridge.shutdown().await;
    let after = bridge
        .publish(TOKEN, update("PT10"), CallOptions::default())
        .await;
    assert!(matches!(after, Err(Error::Shutdown)), "{after:?}");
}
