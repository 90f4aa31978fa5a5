//! librdkafka plumbing shared by the bridge, the relay and the simulator: client
//! configuration with pass-through settings, topic creation, and clients that are
//! destroyed off the async runtime ([`Detached`]).
//!
//! Nothing may assume a topic exists (tansu and many production clusters do not
//! auto-create topics), so every component creates what it needs with
//! [`ensure_topics`], where "already exists" counts as success.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use mes_core::codec::Topic;

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
    let admin: AdminClient<DefaultClientContext> = config
        .client_config(&[])
        .create()
        .map_err(|e| Error::Config(e.to_string()))?;
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
