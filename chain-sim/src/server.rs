//! The simulator on Kafka: one consumer group reading every request topic, one
//! long-lived producer writing every reply to the reply topic.
//!
//! Requests are applied to the ledger in arrival order, at once; with a delay, each
//! reply is published after its own delay by its own task, so a slow "commit" never
//! serialises the requests behind it. What else becomes of a request (held commit,
//! lost, late or unanswered reply) is decided by [`Fate::decide`] before it is
//! handled; held answers, too, wait on tasks of their own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_bridge::kafka::{
    Detached, StartAt, assign_partitions, correlation_headers, ensure_topics, header_corr,
};
use kafka_bridge::{Error, Result};
use mes_core::domain::AgentKey;
use mes_core::signing::SigningKey;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::{GatewayOptions, Route, SimConfig, SimTopics, derived_mes_agent};
use crate::demo;
use crate::fate::{Fate, ReplyFate, Subject};
use crate::gateway::{Gateway, Outgoing, lock};
use crate::ledger::{Counters, Ledger, LedgerState};

/// The chain gateway simulator; see [`Simulator::start`].
#[derive(Debug)]
pub struct Simulator;

/// A running simulator: read its ledger, stop it.
#[derive(Debug)]
pub struct SimHandle {
    ledger: Arc<Mutex<Ledger>>,
    public_key: AgentKey,
    mes_agent: AgentKey,
    topics: SimTopics,
    stop: watch::Sender<bool>,
    changes: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Simulator {
    /// Creates the simulator's topics, assigns every partition of its input topics to
    /// its consumer and returns: a request sent right after `start` returns is answered
    /// (each partition is read from its committed offset, or from the beginning when
    /// the group has none).
    ///
    /// # Errors
    /// [`Error::Config`] for invalid [`GatewayOptions`] or clients that cannot be
    /// made; [`Error::BrokerUnavailable`] when topics or partitions cannot be had within
    /// `start_timeout`.
    pub async fn start(config: SimConfig) -> Result<SimHandle> {
        config.gateway.validate().map_err(Error::Config)?;
        let key = config.key.clone().unwrap_or_else(SigningKey::generate);
        let mes_agent = config
            .mes_agent
            .clone()
            .unwrap_or_else(|| derived_mes_agent(&key));
        let mut ledger = Ledger::new(key.clone(), mes_agent.clone(), config.tokens.clone());
        match config.ledger.clone() {
            Some(state) => ledger = ledger.with_state(state),
            None => demo::seed(&mut ledger, config.demo, chrono::Utc::now().timestamp()),
        }
        let ledger = Arc::new(Mutex::new(ledger));

        let topics = config.topics.clone();
        if config.create_topics {
            ensure_topics(
                &config.kafka,
                &topics.all(),
                config.partitions,
                1,
                config.start_timeout,
            )
            .await?;
        }

        let producer: FutureProducer = config.kafka.create(
            "the reply producer",
            &[("linger.ms", "0"), ("message.timeout.ms", "30000")],
        )?;
        let consumer: StreamConsumer = config.kafka.create(
            "the request consumer",
            &[
                ("group.id", config.group_id.as_str()),
                ("auto.offset.reset", "earliest"),
                ("fetch.wait.max.ms", "5"),
                ("enable.auto.commit", "true"),
                ("auto.commit.interval.ms", "1000"),
            ],
        )?;
        let consumer = Arc::new(Detached::new(consumer));
        // Every partition, assigned by hand: one ledger must see every request, and a
        // simulator restarted after a crash must not wait for its dead predecessor to
        // leave a consumer group (tansu 0.6 kept such a group stuck for more than 30 s).
        // The group id still keeps the committed offsets, so a restart resumes.
        let assigned = Arc::clone(&consumer);
        let inputs: Vec<String> = topics.inputs().iter().map(|t| (*t).to_owned()).collect();
        let timeout = config.start_timeout;
        tokio::task::spawn_blocking(move || {
            assign_partitions(&**assigned, &inputs, StartAt::Committed, timeout)
        })
        .await
        .map_err(|e| Error::BrokerUnavailable(format!("assigning partitions: {e}")))??;

        let (stop, stopped) = watch::channel(false);
        let (changed, changes) = watch::channel(0u64);
        let worker = Worker {
            consumer: Arc::clone(&consumer),
            step: Step {
                gateway: Gateway::new(Arc::clone(&ledger), key.clone(), config.gateway.clone()),
                replies: Replies {
                    producer,
                    topic: topics.chain.reply.clone(),
                },
                changed,
            },
            topics: topics.clone(),
            options: config.gateway,
            delay: config.delay,
        };
        let task = tokio::spawn(worker.run(stopped));
        let handle = SimHandle {
            ledger,
            public_key: key.agent_key(),
            mes_agent,
            topics,
            stop,
            changes,
            task,
        };
        tracing::info!(
            public_key = %handle.public_key,
            mes_agent = %handle.mes_agent,
            "chain simulator ready"
        );
        Ok(handle)
    }
}

impl SimHandle {
    /// The simulator's public key: transaction ids and signed replies verify with it.
    pub fn public_key(&self) -> &AgentKey {
        &self.public_key
    }

    /// The MES's agent key, the `receiving_agent` of every partner request and order.
    pub fn mes_agent(&self) -> &AgentKey {
        &self.mes_agent
    }

    /// The topic names in use.
    pub fn topics(&self) -> &SimTopics {
        &self.topics
    }

    /// A copy of the ledger's state.
    pub fn ledger_snapshot(&self) -> LedgerState {
        lock(&self.ledger).snapshot()
    }

    /// Reads (or, for tests and demos, changes) the ledger under its lock. Keep `f`
    /// short: requests wait while it runs.
    pub fn with_ledger<R>(&self, f: impl FnOnce(&mut Ledger) -> R) -> R {
        f(&mut lock(&self.ledger))
    }

    /// The request counters.
    pub fn counters(&self) -> Counters {
        lock(&self.ledger).counters().clone()
    }

    /// A receiver whose value grows after every handled message, to act on changes
    /// (e.g. dump the ledger) without polling.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Stops consuming, publishes the replies still waiting for their delay, flushes
    /// the producer and leaves the consumer group.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| Error::BrokerUnavailable(format!("simulator task: {e}")))
    }
}

struct Worker {
    consumer: Arc<Detached<StreamConsumer>>,
    step: Step,
    topics: SimTopics,
    options: GatewayOptions,
    delay: Duration,
}

impl Worker {
    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let mut pending: JoinSet<()> = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = stopped.changed() => break,
                Some(_) = pending.join_next(), if !pending.is_empty() => {}
                message = self.consumer.recv() => match message {
                    Ok(message) => {
                        let header_corr = header_corr(&message);
                        let Some(route) = self.topics.route(message.topic()) else {
                            continue;
                        };
                        let payload = message.payload().unwrap_or_default();
                        self.receive(route, payload, header_corr, &mut pending);
                    }
                    Err(e) => {
                        tracing::warn!("reading requests: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        let grace = self.delay + self.options.longest_hold() + Duration::from_secs(10);
        if tokio::time::timeout(grace, async {
            while pending.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("replies still unpublished after {grace:?}; dropping them");
        }
        let Worker { consumer, step, .. } = self;
        // Flushing and leaving the group block; keep them off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = step.replies.producer.flush(Duration::from_secs(10)) {
                tracing::warn!("flushing replies: {e}");
            }
            drop(consumer);
        })
        .await;
    }

    /// Carries out the fate of one request: applied now and its reply enqueued in
    /// arrival order, or, held by a commit delay, applied and answered by a task of
    /// its own so that the requests behind it are not held up.
    fn receive(
        &self,
        route: Route,
        payload: &[u8],
        header_corr: Option<String>,
        pending: &mut JoinSet<()>,
    ) {
        let subject = Subject::of(route, payload);
        let draw = if self.options.lose_replies > 0.0 {
            secp256k1::rand::random::<f64>()
        } else {
            1.0
        };
        let fate = Fate::decide(&self.options, self.delay, &subject, draw);
        if fate.commit_after.is_zero() {
            if let Some(publish) = self
                .step
                .run(route, payload, header_corr.as_deref(), fate.reply)
            {
                pending.spawn(publish);
            }
            return;
        }
        let payload = payload.to_vec();
        let step = self.step.clone();
        pending.spawn(async move {
            tokio::time::sleep(fate.commit_after).await;
            if let Some(publish) = step.run(route, &payload, header_corr.as_deref(), fate.reply) {
                publish.await;
            }
        });
    }
}

/// What handling one request needs, cloned for a request held by a commit delay.
#[derive(Clone)]
struct Step {
    gateway: Gateway,
    replies: Replies,
    changed: watch::Sender<u64>,
}

impl Step {
    /// Applies the request, counts a withheld reply, signals the change, and returns
    /// the publication still to await, if the reply is to be published.
    fn run(
        &self,
        route: Route,
        payload: &[u8],
        header_corr: Option<&str>,
        fate: ReplyFate,
    ) -> Option<impl Future<Output = ()> + Send + use<>> {
        let outgoing = self.gateway.handle(route, payload, header_corr);
        let publish = outgoing.filter(|_| self.gateway.settle(fate));
        self.changed.send_modify(|n| *n += 1);
        match (publish, fate) {
            (Some(outgoing), ReplyFate::Publish(after)) => {
                Some(self.replies.publish(outgoing, after))
            }
            _ => None,
        }
    }
}

/// The reply producer and topic, shared by every request.
#[derive(Clone)]
struct Replies {
    producer: FutureProducer,
    topic: String,
}

impl Replies {
    /// Enqueues a reply now (keeping arrival order) when `after` is zero, else after
    /// `after`; the future returned awaits its delivery.
    fn publish(
        &self,
        outgoing: Outgoing,
        after: Duration,
    ) -> impl Future<Output = ()> + Send + use<> {
        let enqueued = if after.is_zero() {
            match self
                .producer
                .send_result(reply_record(&self.topic, &outgoing))
            {
                Ok(delivery) => Some(delivery),
                Err((e, _)) => {
                    tracing::debug!("reply queue full ({e}); retrying on a task");
                    None
                }
            }
        } else {
            None
        };
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        async move {
            if let Some(delivery) = enqueued {
                match delivery.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => tracing::warn!("publishing a reply: {e}"),
                    Err(_) => tracing::warn!("publishing a reply: producer gone"),
                }
                return;
            }
            tokio::time::sleep(after).await;
            let record = reply_record(&topic, &outgoing);
            if let Err((e, _)) = producer.send(record, Duration::from_secs(10)).await {
                tracing::warn!("publishing a reply: {e}");
            }
        }
    }
}

fn reply_record<'a>(topic: &'a str, outgoing: &'a Outgoing) -> FutureRecord<'a, (), Vec<u8>> {
    let record = FutureRecord::to(topic).payload(&outgoing.payload);
    match &outgoing.corr {
        Some(corr) => record.headers(correlation_headers(corr)),
        None => record,
    }
}
