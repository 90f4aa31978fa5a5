//! Helpers for the simulator's tests against the real broker: a simulator on topics of
//! its own, a raw producer of requests and a raw reader of the reply topic.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chain_sim::{SimConfig, SimHandle, SimTopics, Simulator};
use kafka_bridge::kafka::{correlation_headers, header_corr};
use mes_core::codec::{Reply, decode_reply};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The master token the tests use.
pub(crate) const TOKEN: &str = "4f1c2a9e7b";

/// Bound on every wait for a reply: a broken simulator fails the test, never hangs it.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// The test broker's address.
///
/// # Panics
/// When `MES_TEST_KAFKA_BROKERS` is unset: these tests need a real broker.
pub(crate) fn brokers() -> String {
    match std::env::var("MES_TEST_KAFKA_BROKERS") {
        Ok(b) if !b.trim().is_empty() => b,
        _ => panic!(
            "MES_TEST_KAFKA_BROKERS is not set: the simulator's tests need a Kafka-protocol \
             broker. Run them with `./scripts/test -p chain-sim` (it starts tansu and sets \
             the variable), or set it yourself; see docs/testing.md"
        ),
    }
}

/// A simulator config on topics and a consumer group no other test uses.
pub(crate) fn config() -> SimConfig {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut config = SimConfig::new(brokers());
    config.topics = SimTopics::with_suffix(&format!("-{id}"));
    config.group_id = format!("chain-sim-test-{id}");
    config.tokens = vec![TOKEN.to_owned()];
    config
}

/// Starts a simulator with `config()` changed by `change`, and a reader of its replies.
pub(crate) async fn start(change: impl FnOnce(&mut SimConfig)) -> (SimHandle, Client) {
    let mut config = config();
    change(&mut config);
    let sim = Simulator::start(config)
        .await
        .expect("starting the simulator");
    let client = Client::new(sim.topics()).await;
    (sim, client)
}

/// A reply as read from the reply topic.
pub(crate) struct Received {
    /// The raw bytes.
    pub(crate) payload: Vec<u8>,
    /// The decoded reply.
    pub(crate) reply: Reply,
    /// The `correlation_id` header, if any.
    pub(crate) header_corr: Option<String>,
}

/// Publishes requests and reads replies, as an MES would, with raw rdkafka clients.
pub(crate) struct Client {
    producer: FutureProducer,
    consumer: StreamConsumer,
    pub(crate) topics: SimTopics,
}

impl Client {
    /// A client of the simulator using `topics`; the reply topic must exist and be new
    /// (its reader starts at the beginning).
    pub(crate) async fn new(topics: &SimTopics) -> Client {
        let brokers = brokers();
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("linger.ms", "0")
            .create()
            .unwrap();
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topics.chain.reply, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        Client {
            producer,
            consumer,
            topics: topics.clone(),
        }
    }

    /// Publishes `payload` on `topic`, with a `correlation_id` header when given.
    pub(crate) async fn send(&self, topic: &str, payload: &[u8], header_corr: Option<&str>) {
        let mut record = FutureRecord::<(), _>::to(topic).payload(payload);
        if let Some(corr) = header_corr {
            record = record.headers(correlation_headers(corr));
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("publishing a request");
    }

    /// The next reply on the reply topic.
    pub(crate) async fn next(&self) -> Received {
        let message = tokio::time::timeout(WAIT, self.consumer.recv())
            .await
            .expect("no reply within the wait")
            .expect("reading the reply topic");
        let payload = message.payload().unwrap_or_default().to_vec();
        let header_corr = header_corr(&message);
        let reply = decode_reply(&payload).unwrap_or_else(|e| {
            panic!(
                "undecodable reply {:?}: {e}",
                String::from_utf8_lossy(&payload)
            )
        });
        Received {
            payload,
            reply,
            header_corr,
        }
    }
}

/// The error code of a reply, if it is an error.
pub(crate) fn code(reply: &Reply) -> Option<&str> {
    match &reply.body {
        mes_core::codec::ReplyBody::Error { code, .. } => code.as_deref(),
        _ => None,
    }
}
