#![doc = include_str!("../README.md")]
//!
//! # Helpers
//!
//! This library holds what every end-to-end test needs. The tests run against real
//! services: a Kafka-protocol broker (tansu) and PostgreSQL. `./scripts/test` installs and starts them and tells the tests where they
//! are through the environment ([`KAFKA_BROKERS_ENV`], [`DATABASE_URL_ENV`]). Without
//! those variables the helpers panic, so a test run without the services fails loudly
//! instead of passing without having checked anything.
//!
//! Nothing here assumes that a topic exists: tansu does not create topics on first use
//! (and many production clusters forbid it), so a test creates its topics with
//! [`create_topics`], under names from [`unique_topic`] so that tests never share one.

pub mod bench;
mod broker;
pub mod db;
pub mod live;
pub mod server;
pub mod sim;

use std::time::Duration;

use anyhow::{Context as _, bail};
use rdkafka::{
    ClientConfig, TopicPartitionList,
    consumer::{Consumer, ConsumerContext},
};
use tokio::time::{Instant, sleep};

pub use broker::{PrivateBroker, TANSU_BIN_ENV};

/// Environment variable holding the bootstrap servers of the test broker (`host:port`).
pub const KAFKA_BROKERS_ENV: &str = "MES_TEST_KAFKA_BROKERS";

/// Environment variable holding the URL of the test PostgreSQL database.
pub const DATABASE_URL_ENV: &str = "MES_TEST_DATABASE_URL";

/// Upper bound for any single wait on the broker in the helpers (topic creation, metadata,
/// partition assignment). A broken broker makes a test fail after this long, never hang.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(30);

/// Bootstrap servers of the test broker, from [`KAFKA_BROKERS_ENV`].
///
/// # Panics
///
/// When the variable is unset or empty: the test suite must be run through
/// `./scripts/test`, which starts a broker and sets it.
pub fn kafka_brokers() -> String {
    required_env(KAFKA_BROKERS_ENV, "a Kafka-protocol broker")
}

/// URL of the test PostgreSQL database, from [`DATABASE_URL_ENV`].
///
/// # Panics
///
/// When the variable is unset or empty: the test suite must be run through
/// `./scripts/test`, which starts PostgreSQL and sets it.
pub fn database_url() -> String {
    required_env(DATABASE_URL_ENV, "a PostgreSQL database")
}

#[expect(
    clippy::panic,
    reason = "a missing service must fail the test, and the message must say how to fix it"
)]
fn required_env(name: &str, what: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value,
        _ => panic!(
            "{name} is not set: this end-to-end test needs {what}. \
             Run the tests with `./scripts/test` (it starts the services and sets {name}), \
             or set {name} yourself; see docs/testing.md"
        ),
    }
}

/// A topic name that no other test (or earlier run against the same broker) uses:
/// `{prefix}-{32 hex digits}`.
pub fn unique_topic(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub use kafka_bridge::kafka::TopicStatus;

/// A [`ClientConfig`] with `bootstrap.servers` set to `brokers`.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

/// Creates `names` on `brokers` with `partitions` partitions each and waits until every
/// partition has a leader; a topic that exists already counts as success
/// ([`TopicStatus::AlreadyExists`]). The same code path as the bridge's own topic
/// creation ([`kafka_bridge::kafka::ensure_topics`]).
///
/// # Errors
///
/// When the broker cannot be reached or refuses a topic for another reason than its
/// existence, within [`BROKER_TIMEOUT`].
pub async fn create_topics(
    brokers: &str,
    names: &[&str],
    partitions: i32,
) -> anyhow::Result<Vec<TopicStatus>> {
    kafka_bridge::kafka::ensure_topics(
        &kafka_bridge::kafka::KafkaConfig::new(brokers),
        names,
        partitions,
        1,
        BROKER_TIMEOUT,
    )
    .await
    .with_context(|| format!("creating topics {names:?} on {brokers}"))
}

/// Waits until `consumer` has been assigned at least one partition by its group, and
/// returns the assignment.
///
/// librdkafka serves group rebalances only while the consumer is being polled, so some
/// other task must be receiving from `consumer` (for a
/// [`StreamConsumer`](rdkafka::consumer::StreamConsumer): `recv()` or a stream) while
/// this waits. Note that with `auto.offset.reset=latest` the assignment alone does not
/// yet mean that the consumer will see the next record: its start offset is looked up
/// after the assignment. Enable `enable.partition.eof` and wait for the end-of-partition
/// event to know that the consumer has caught up.
///
/// # Errors
///
/// When nothing is assigned within `timeout`, or the consumer cannot report its
/// assignment.
pub async fn wait_for_assignment<X, C>(
    consumer: &C,
    timeout: Duration,
) -> anyhow::Result<TopicPartitionList>
where
    X: ConsumerContext,
    C: Consumer<X>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let assignment = consumer
            .assignment()
            .context("reading the consumer's assignment")?;
        if assignment.count() > 0 {
            return Ok(assignment);
        }
        if Instant::now() >= deadline {
            bail!("the consumer got no partition assignment within {timeout:?}");
        }
        sleep(Duration::from_millis(10)).await;
    }
}

/// A loopback port that was free a moment ago, for a server a test or bench starts.
///
/// # Errors
///
/// When no port can be bound.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
