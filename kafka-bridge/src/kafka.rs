//! librdkafka plumbing shared by the bridge, the relay and the chain simulator
//! (`chain-sim`): client configuration with pass-through settings, topic creation,
//! partitions assigned by hand, the correlation header, and clients that are destroyed
//! off the async runtime ([`Detached`]).
//!
//! Nothing may assume a topic exists (tansu and many production clusters do not
//! auto-create topics), so every component creates what it needs with
//! [`ensure_topics`], where "already exists" counts as success.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::FromClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use mes_core::codec::Topic;

use crate::trace::TraceParent;
use crate::{Error, Result};

/// A librdkafka client that is destroyed on a thread of its own.
///
/// librdkafka's destructors block: a consumer with a `group.id` polls until its group
/// has closed, with no bound when the coordinator is gone or has forgotten the group
/// (a restarted broker); a producer purges and flushes for up to 500 ms. Dropped on
/// a tokio worker, that stalls every task and timer scheduled there, including the
/// timeouts that would report the trouble. Wrapped in this, whoever drops the last
/// owner inside a runtime hands the client to a short-lived thread and goes on;
/// outside a runtime it is dropped in place.
pub struct Detached<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> Detached<T> {
    /// Wraps `client`.
    pub fn new(client: T) -> Detached<T> {
        Detached(Some(client))
    }
}

impl<T: Send + 'static> std::ops::Deref for Detached<T> {
    type Target = T;

    #[allow(
        clippy::expect_used,
        reason = "the client is taken out only in drop, after which nothing can deref"
    )]
    fn deref(&self) -> &T {
        self.0
            .as_ref()
            .expect("a Detached client is only taken out by drop")
    }
}

impl<T: Send + 'static> Drop for Detached<T> {
    fn drop(&mut self) {
        let Some(client) = self.0.take() else { return };
        if tokio::runtime::Handle::try_current().is_err() {
            return; // dropped here, where blocking is allowed
        }
        // If no thread can be started the closure, and the client, drop here.
        let _ = std::thread::Builder::new()
            .name("kafka-close".into())
            .spawn(move || drop(client));
    }
}

/// Where the broker is and how to talk to it.
///
/// `settings` are passed to librdkafka as they are (`security.protocol`,
/// `sasl.mechanism`, `ssl.ca.location`, …), so any cluster librdkafka can reach is
/// reachable; they override the bridge's own defaults.
#[derive(Clone, Default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Extra librdkafka settings, applied last.
    pub settings: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Settings may hold passwords (sasl.password, ssl.key.password): names only.
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("settings", &self.settings.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KafkaConfig {
    /// A config for `brokers` with no extra settings.
    pub fn new(brokers: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            settings: BTreeMap::new(),
        }
    }

    /// A librdkafka client config: `defaults` first, then the user's settings.
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.settings {
            config.set(key, value);
        }
        config
    }

    /// A librdkafka client (producer, consumer, admin client) from
    /// [`KafkaConfig::client_config`]`(defaults)`; `what` names it in the error.
    ///
    /// # Errors
    /// [`Error::Config`] when librdkafka refuses the settings.
    pub fn create<T: FromClientConfig>(&self, what: &str, defaults: &[(&str, &str)]) -> Result<T> {
        self.client_config(defaults)
            .create()
            .map_err(|e| Error::Config(format!("creating {what}: {e}")))
    }
}

/// The Kafka header that carries a request's correlation id beside the head's `corr`
/// (docs/protocol.md §2): the bridge sets it on every request and reads it on replies,
/// and a gateway that echoes it (`chain-sim`) copies it onto its reply.
pub const CORRELATION_HEADER: &str = "correlation_id";

/// The headers of a record that carries `corr` in [`CORRELATION_HEADER`] (a reply
/// that echoes it).
pub fn correlation_headers(corr: &str) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: CORRELATION_HEADER,
        value: Some(corr.as_bytes()),
    })
}

/// The headers of a request record we send: `corr` in [`CORRELATION_HEADER`] and `trace` in
/// W3C's `traceparent` ([`crate::trace::HEADER`]).
pub fn request_headers(corr: &str, trace: &TraceParent) -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header {
            key: CORRELATION_HEADER,
            value: Some(corr.as_bytes()),
        })
        .insert(Header {
            key: crate::trace::HEADER,
            value: Some(trace.to_string().as_bytes()),
        })
}

/// The correlation id in a record's [`CORRELATION_HEADER`], if it has one in UTF-8.
pub fn header_corr(message: &impl Message) -> Option<String> {
    message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == CORRELATION_HEADER)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    })
}

/// Where [`assign_partitions`] starts a consumer in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The partition's end (high watermark) as read while assigning: a reader of
    /// replies, which reads only what is produced after it is positioned.
    End,
    /// The group's committed offset, or `auto.offset.reset` for a group that has
    /// none: a reader of requests that resumes where it stopped. librdkafka resolves
    /// it later, but never past a record produced after the assignment.
    Committed,
}

/// Assigns every partition of `topics` to `consumer`, each at `start`, within
/// `timeout`; blocking (metadata and offset requests), so called off the runtime.
///
/// By hand rather than by subscribing: the consumer gets every partition at once,
/// without waiting for a group rebalance (or for a crashed predecessor to leave the
/// group), and once this returns no record produced afterwards is missed. A topic the
/// broker does not show yet (it may just have been created) is asked for again every
/// 100 ms until `timeout`.
///
/// # Errors
/// [`Error::BrokerUnavailable`] when a topic does not exist, or its metadata or
/// offsets cannot be read, within `timeout`.
pub fn assign_partitions<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topics: &[impl AsRef<str>],
    start: StartAt,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100))
    };
    let mut assignment = TopicPartitionList::new();
    let topics: Vec<&str> = topics.iter().map(AsRef::as_ref).collect();
    for topic in &topics {
        for partition in partitions_of(consumer, topic, deadline)? {
            let offset = match start {
                StartAt::Committed => Offset::Stored,
                StartAt::End => {
                    let (_, high) = consumer
                        .fetch_watermarks(topic, partition, remaining())
                        .map_err(|e| {
                            Error::BrokerUnavailable(format!(
                                "reading the end of {topic}/{partition}: {e}"
                            ))
                        })?;
                    Offset::Offset(high)
                }
            };
            assignment
                .add_partition_offset(topic, partition, offset)
                .map_err(|e| Error::Config(e.to_string()))?;
        }
    }
    consumer
        .assign(&assignment)
        .map_err(|e| Error::BrokerUnavailable(format!("assigning {}: {e}", topics.join(", "))))
}

/// The partition ids of `topic`, asking until the broker shows some or `deadline`.
fn partitions_of<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    deadline: Instant,
) -> Result<Vec<i32>> {
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let metadata =
            consumer.fetch_metadata(Some(topic), remaining.max(Duration::from_millis(100)));
        let partitions: Vec<i32> = metadata.as_ref().map_or_else(
            |_| Vec::new(),
            |metadata| {
                metadata
                    .topics()
                    .iter()
                    .filter(|t| t.name() == topic && t.error().is_none())
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect()
            },
        );
        if !partitions.is_empty() {
            return Ok(partitions);
        }
        if Instant::now() >= deadline {
            return Err(Error::BrokerUnavailable(match metadata {
                Ok(_) => format!(
                    "topic {topic} does not exist (create it, or let the program that uses it create its topics)"
                ),
                Err(e) => format!("reading metadata of {topic}: {e}"),
            }));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A consumer of the reply topic `topic` positioned at its end: a consumer group of
/// its own (`{group_prefix}-{uuid}`, so every reader sees every reply, and nothing
/// committed) with `fetch.wait.max.ms` = `fetch_wait`, the floor of a round trip.
/// Returns once every partition is assigned ([`assign_partitions`],
/// [`StartAt::End`]): no reply produced afterwards is missed. The bridge reads
/// replies with one, and so does `chain-sim erp`.
///
/// # Errors
/// [`Error::Config`] when the client cannot be made; [`Error::BrokerUnavailable`] when
/// the topic cannot be had within `timeout`.
pub async fn reply_reader(
    config: &KafkaConfig,
    group_prefix: &str,
    fetch_wait: Duration,
    topic: &str,
    timeout: Duration,
) -> Result<Arc<Detached<StreamConsumer>>> {
    let group = format!("{group_prefix}-{}", uuid::Uuid::new_v4());
    let consumer: StreamConsumer = config.create(
        "the Kafka reply consumer",
        &[
            ("group.id", &group),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            (
                "fetch.wait.max.ms",
                &fetch_wait.as_millis().max(1).to_string(),
            ),
            ("fetch.error.backoff.ms", "50"),
            ("socket.nagle.disable", "true"),
        ],
    )?;
    let consumer = Arc::new(Detached::new(consumer));
    let assigned = Arc::clone(&consumer);
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        assign_partitions(&**assigned, &[topic], StartAt::End, timeout)
    })
    .await
    .map_err(|e| Error::BrokerUnavailable(e.to_string()))??;
    Ok(consumer)
}

/// What [`ensure_topics`] found for one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicStatus {
    /// The broker created it.
    Created,
    /// It existed already.
    AlreadyExists,
}

/// Creates the topics (replication factor 1 unless the cluster's default applies via
/// `replication`), treating "already exists" as success, then waits until the broker's
/// metadata shows every partition with a leader, so producers and consumers find them.
pub async fn ensure_topics(
    config: &KafkaConfig,
    names: &[&str],
    partitions: i32,
    replication: i32,
    timeout: Duration,
) -> Result<Vec<TopicStatus>> {
    let admin: AdminClient<DefaultClientContext> = config.create("the Kafka admin client", &[])?;
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = tokio::time::timeout(
        timeout + Duration::from_secs(1),
        admin.create_topics(&new_topics, &options),
    )
    .await
    .map_err(|_| Error::BrokerUnavailable(format!("creating topics {names:?}: no answer")))?
    .map_err(|e| Error::BrokerUnavailable(format!("creating topics {names:?}: {e}")))?;
    let mut statuses = Vec::with_capacity(names.len());
    for name in names {
        let result = results.iter().find(|r| match r {
            Ok(n) | Err((n, _)) => n == name,
        });
        statuses.push(match result {
            Some(Ok(_)) => TopicStatus::Created,
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => TopicStatus::AlreadyExists,
            Some(Err((_, code))) => {
                return Err(Error::BrokerUnavailable(format!(
                    "creating topic {name}: {code}"
                )));
            }
            None => {
                return Err(Error::BrokerUnavailable(format!(
                    "creating topic {name}: no answer for it"
                )));
            }
        });
    }
    let owned: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    tokio::task::spawn_blocking(move || wait_for_leaders(&admin, &owned, timeout))
        .await
        .map_err(|e| Error::BrokerUnavailable(format!("waiting for topic metadata: {e}")))??;
    Ok(statuses)
}

/// What [`probe_topics`] found on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicProbe {
    /// Brokers in the cluster's metadata.
    pub brokers: usize,
    /// The asked-for topics the cluster does not have, in the order asked.
    pub missing: Vec<String>,
}

/// Asks the cluster which of `names` it lacks, changing nothing: for checking a
/// configuration (`mes-api check-config`) before a server starts on it.
///
/// # Errors
/// [`Error::Config`] when librdkafka refuses the settings, [`Error::BrokerUnavailable`]
/// when no broker answers within `timeout`.
pub async fn probe_topics(
    config: &KafkaConfig,
    names: &[&str],
    timeout: Duration,
) -> Result<TopicProbe> {
    let admin: AdminClient<DefaultClientContext> = config.create("the Kafka admin client", &[])?;
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let metadata = admin
            .inner()
            .fetch_metadata(None, timeout)
            .map_err(|e| Error::BrokerUnavailable(e.to_string()))?;
        let missing = names
            .into_iter()
            .filter(|name| {
                !metadata
                    .topics()
                    .iter()
                    .any(|topic| topic.name() == name && topic.error().is_none())
            })
            .collect();
        Ok(TopicProbe {
            brokers: metadata.brokers().len(),
            missing,
        })
    })
    .await
    .map_err(|e| Error::BrokerUnavailable(e.to_string()))?
}

/// Whether the cluster would create `names` as [`ensure_topics`] asks it to, without
/// creating them (`CreateTopics` with `validate_only`): a principal without the right
/// to create topics, or a partition count the cluster refuses, shows here.
///
/// # Errors
/// [`Error::BrokerUnavailable`] naming the first topic the broker refuses and why.
pub async fn validate_topic_creation(
    config: &KafkaConfig,
    names: &[&str],
    partitions: i32,
    replication: i32,
    timeout: Duration,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = config.create("the Kafka admin client", &[])?;
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let options = AdminOptions::new()
        .validate_only(true)
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = tokio::time::timeout(
        timeout + Duration::from_secs(1),
        admin.create_topics(&new_topics, &options),
    )
    .await
    .map_err(|_| Error::BrokerUnavailable("no answer to CreateTopics".to_owned()))?
    .map_err(|e| Error::BrokerUnavailable(e.to_string()))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::BrokerUnavailable(format!(
                    "the broker would not create {name}: {code}"
                )));
            }
        }
    }
    Ok(())
}

fn wait_for_leaders(
    admin: &AdminClient<DefaultClientContext>,
    names: &[String],
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for name in names {
        loop {
            let ready = admin
                .inner()
                .fetch_metadata(Some(name), timeout)
                .is_ok_and(|metadata| {
                    metadata.topics().iter().any(|topic| {
                        topic.name() == name
                            && topic.error().is_none()
                            && !topic.partitions().is_empty()
                            && topic.partitions().iter().all(|p| p.leader() >= 0)
                    })
                });
            if ready {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::BrokerUnavailable(format!(
                    "topic {name} has no leader after {timeout:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// The names of the chain's topics on this cluster; the defaults are the original's.
///
/// Configurable so that tests can run on random topic names and a site can follow its
/// own naming rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicNames {
    /// `BLK_Part_Lst`.
    pub partner_list: String,
    /// `BLK_Part_Ans`.
    pub partner_answer: String,
    /// `BLK_Act_Lst`.
    pub order_list: String,
    /// `BLK_Act_Ans`.
    pub order_answer: String,
    /// `BLK_Rty`.
    pub record_type: String,
    /// `BLK_Rec`.
    pub record: String,
    /// `BLK_Res`, where every reply arrives.
    pub reply: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        TopicNames::with_prefix("")
    }
}

impl TopicNames {
    /// The default names with `prefix` in front, e.g. a random one per test.
    pub fn with_prefix(prefix: &str) -> TopicNames {
        let name = |topic: Topic| format!("{prefix}{}", topic.name());
        TopicNames {
            partner_list: name(Topic::PartnerList),
            partner_answer: name(Topic::PartnerAnswer),
            order_list: name(Topic::OrderList),
            order_answer: name(Topic::OrderAnswer),
            record_type: name(Topic::RecordType),
            record: name(Topic::Record),
            reply: format!("{prefix}{}", mes_core::codec::REPLY_TOPIC),
        }
    }

    /// The default names with `suffix` after each, e.g. `BLK_Rec-<uuid>`.
    pub fn with_suffix(suffix: &str) -> TopicNames {
        let mut names = TopicNames::default();
        for name in names.names_mut() {
            name.push_str(suffix);
        }
        names
    }

    /// Renames the topic whose default name is `default` (`BLK_Part_Lst` … `BLK_Res`);
    /// false if no topic has that default name.
    pub fn set(&mut self, default: &str, name: &str) -> bool {
        let slot = if default == mes_core::codec::REPLY_TOPIC {
            &mut self.reply
        } else {
            match Topic::from_name(default) {
                Some(Topic::PartnerList) => &mut self.partner_list,
                Some(Topic::PartnerAnswer) => &mut self.partner_answer,
                Some(Topic::OrderList) => &mut self.order_list,
                Some(Topic::OrderAnswer) => &mut self.order_answer,
                Some(Topic::RecordType) => &mut self.record_type,
                Some(Topic::Record) => &mut self.record,
                None => return false,
            }
        };
        name.clone_into(slot);
        true
    }

    fn names_mut(&mut self) -> [&mut String; 7] {
        [
            &mut self.partner_list,
            &mut self.partner_answer,
            &mut self.order_list,
            &mut self.order_answer,
            &mut self.record_type,
            &mut self.record,
            &mut self.reply,
        ]
    }

    /// The request topic called `name`, if any.
    pub fn topic_of(&self, name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| self.request(*t) == name)
    }

    /// The name of a request topic.
    pub fn request(&self, topic: Topic) -> &str {
        match topic {
            Topic::PartnerList => &self.partner_list,
            Topic::PartnerAnswer => &self.partner_answer,
            Topic::OrderList => &self.order_list,
            Topic::OrderAnswer => &self.order_answer,
            Topic::RecordType => &self.record_type,
            Topic::Record => &self.record,
        }
    }

    /// Every topic the MES publishes to or reads from.
    pub fn all(&self) -> Vec<&str> {
        let mut all: Vec<&str> = Topic::ALL.iter().map(|t| self.request(*t)).collect();
        all.push(&self.reply);
        all
    }
}
