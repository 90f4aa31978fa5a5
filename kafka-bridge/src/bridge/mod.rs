//! Request/reply over the chain's request topics and the shared `BLK_Res`.
//!
//! One [`Bridge`] per process holds one idempotent producer and one reply consumer,
//! both created once by [`Bridge::connect`]. The consumer reads `BLK_Res` by manual
//! assignment, starting at the end of every partition as measured before `connect`
//! returns, so no reply to a request sent after that is ever missed, and every
//! instance sees every reply (a shared reply topic is a broadcast medium).
//!
//! Each request carries a correlation id (head field `corr` and header
//! `correlation_id`). How replies are matched depends on [`CorrelationMode`]; see
//! `matcher` for the rules (the legacy slot and the reply-shape fences), and the crate
//! documentation for the trade-offs. Behind a gateway that needs the legacy slot, it
//! goes to operators' calls before background work ([`Priority`]). Every call has a
//! deadline that covers everything, waiting for a slot included; identical list
//! requests in flight at the same moment share one chain request.

mod matcher;
mod metrics;
mod publish;
mod slot;
mod trust;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use mes_core::codec::{
    self, DEFAULT_MAX_REPLY_BYTES, Page, RecordAction, RecordTypeAction, Reply, ReplyBody, Request,
    Topic,
};
use mes_core::domain::{AgentKey, Answer, RequestId};
use mes_core::signing::{SigningKey, request_digest};
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use matcher::{DropReason, Echo, FALLBACK_EVIDENCE, Fence, FenceCounts, LateReply, Shape};
pub use metrics::MetricsSnapshot;
pub use publish::Published;
pub use slot::Priority;

use self::matcher::{Matcher, Routed};
use self::metrics::Metrics;
use self::slot::{AcquireError, LegacySlot, SlotPermit};
use crate::kafka::{
    Detached, KafkaConfig, TopicNames, correlation_headers, ensure_topics, header_corr,
    reply_reader,
};
use crate::{Error, Result};

/// How replies are matched to requests (docs/protocol.md §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CorrelationMode {
    /// Start as `Legacy`; run concurrently once the gateway has echoed a `corr`, and
    /// fall back (with a warning) if it stops. Safe by default, fast when allowed.
    #[default]
    Auto,
    /// The gateway echoes `corr`: every request runs concurrently; replies without
    /// `corr` are dropped.
    Id,
    /// The gateway echoes only `auth`: one request in flight, matched by token.
    Legacy,
}

impl FromStr for CorrelationMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(CorrelationMode::Auto),
            "id" => Ok(CorrelationMode::Id),
            "legacy" => Ok(CorrelationMode::Legacy),
            _ => Err(Error::Config(format!(
                "correlation mode must be auto, id or legacy, got {s:?}"
            ))),
        }
    }
}

impl fmt::Display for CorrelationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CorrelationMode::Auto => "auto",
            CorrelationMode::Id => "id",
            CorrelationMode::Legacy => "legacy",
        })
    }
}

/// Everything a [`Bridge`] needs; [`BridgeConfig::new`] gives defaults that work on
/// one machine.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The cluster and librdkafka pass-through settings.
    pub kafka: KafkaConfig,
    /// Topic names.
    pub topics: TopicNames,
    /// Reply matching.
    pub correlation: CorrelationMode,
    /// Deadline of a whole call, waiting for a slot included (default 10 s). Behind
    /// the legacy slot an operator's call may first wait up to this long more for a
    /// background request in flight, so its own round trip keeps the whole timeout.
    pub request_timeout: Duration,
    /// Behind a gateway that echoes only the token, how long a request that ended
    /// without its reply keeps new requests of its shape from being sent while that
    /// reply may still come (default 2 min, `MES_LEGACY_FENCE_MAX`); also how long a
    /// timed-out request's `corr` is remembered as late. See `matcher`.
    pub legacy_fence_max: Duration,
    /// Most chain requests in flight; more calls get [`Error::Overloaded`] (default 1024).
    pub max_in_flight: usize,
    /// librdkafka's `message.timeout.ms`: how soon an unreachable broker is reported as
    /// [`Error::BrokerUnavailable`] (default 5 s, capped at the request timeout).
    pub message_timeout: Duration,
    /// `fetch.wait.max.ms` of the reply consumer; the floor of the round trip
    /// (default 5 ms).
    pub reply_fetch_wait: Duration,
    /// Largest reply decoded; larger ones are dropped as undecodable.
    pub max_reply_bytes: usize,
    /// Create missing topics at connect ("already exists" is fine). Turn off where the
    /// cluster forbids it and the topics are managed elsewhere.
    pub create_topics: bool,
    /// Partitions of topics created by the bridge.
    pub topic_partitions: i32,
    /// Replication factor of topics created by the bridge.
    pub topic_replication: i32,
    /// Signs every request when set.
    pub signing_key: Option<SigningKey>,
    /// Accepts only replies signed by this key when set; each must carry, signed, the
    /// `corr` and the digest (`req`) of the request it answers (docs/protocol.md §5).
    pub gateway_key: Option<AgentKey>,
    /// How long `connect` may take (topic creation, metadata, assignment).
    pub connect_timeout: Duration,
}

impl BridgeConfig {
    /// Defaults for `kafka`.
    pub fn new(kafka: KafkaConfig) -> BridgeConfig {
        BridgeConfig {
            kafka,
            topics: TopicNames::default(),
            correlation: CorrelationMode::Auto,
            request_timeout: Duration::from_secs(10),
            legacy_fence_max: Duration::from_secs(120),
            max_in_flight: 1024,
            message_timeout: Duration::from_secs(5),
            reply_fetch_wait: Duration::from_millis(5),
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
            create_topics: true,
            topic_partitions: 1,
            topic_replication: 1,
            signing_key: None,
            gateway_key: None,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Correlation id to use (e.g. one already written to the audit trail); a new
    /// UUID v4 when `None`. A call with its own `corr` never shares a list request.
    pub corr: Option<String>,
    /// Idempotency key (`idem`, for `BLK_Rty`/`BLK_Rec`).
    pub idem: Option<String>,
    /// Deadline of this call instead of the configured request timeout.
    pub timeout: Option<Duration>,
    /// Who waits for it: behind a legacy gateway, operators' calls take the slot
    /// before background work. Operator by default; the relay and the poller say
    /// [`Priority::Background`].
    pub priority: Priority,
    /// Set once the request is handed to the producer: from then on it may reach the
    /// chain even if the call fails. A caller that must know whether a failed call
    /// was sent (an operator's answer: `unknown` or `not_sent`) passes one.
    pub receipt: Option<SendReceipt>,
}

/// Whether a call's request was handed to the producer ([`CallOptions::receipt`]).
#[derive(Debug, Clone, Default)]
pub struct SendReceipt(Arc<std::sync::atomic::AtomicBool>);

impl SendReceipt {
    /// A receipt that says "not sent" until the request is handed to the producer.
    pub fn new() -> SendReceipt {
        SendReceipt::default()
    }

    /// Whether the request may have reached the broker. `false` proves it did not.
    pub fn was_sent(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    fn mark(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

impl CallOptions {
    /// Options of a background call (relay, poller): it yields the legacy slot to
    /// operators.
    pub fn background() -> CallOptions {
        CallOptions {
            priority: Priority::Background,
            ..CallOptions::default()
        }
    }
}

/// Which of the chain's two request lists to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listing {
    /// Partner requests (`BLK_Part_Lst`).
    Partners,
    /// Order requests (`BLK_Act_Lst`).
    Orders,
}

/// A reply with the correlation id its request carried.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The request's correlation id.
    pub corr: String,
    /// The chain's reply.
    pub reply: Reply,
}

/// The chain's answer to an accept or reject.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    /// The request's correlation id, for the audit trail.
    pub corr: String,
    /// The chain's `message`.
    pub message: Value,
}

/// The outcome of creating something on the chain, where "already exists" is fine.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// Created; the chain's message.
    Created(String),
    /// It existed (docs/protocol.md §6 `already_exists`); the chain's text.
    AlreadyExists(String),
}

type SharedReply = Shared<BoxFuture<'static, Result<Exchange>>>;
type ListKey = (Topic, String, Page, Priority);

struct Inner {
    config: BridgeConfig,
    producer: RwLock<Arc<Detached<FutureProducer>>>,
    matcher: Arc<Matcher>,
    legacy_slot: Arc<LegacySlot>,
    in_flight: Arc<Semaphore>,
    lists: Mutex<HashMap<ListKey, SharedReply>>,
    metrics: Metrics,
    producer_replaced: Mutex<Option<Instant>>,
    /// The last broker error, until a message is delivered again.
    broker_down: Mutex<Option<String>>,
    shutdown: watch::Sender<bool>,
    consumer_task: Mutex<Option<JoinHandle<()>>>,
    /// Replies that came after their call ended, for [`Bridge::late_replies`].
    late: broadcast::Sender<LateReply>,
}

/// Late replies kept for a slow [`Bridge::late_replies`] subscriber before it misses
/// some (it is told it did; the mirror settles what it missed).
pub const LATE_REPLY_CAPACITY: usize = 256;

/// The MES side of the chain: typed calls that publish a request and await its reply.
///
/// Cheap to clone (an `Arc`); create one per process with [`Bridge::connect`].
#[derive(Clone)]
pub struct Bridge {
    inner: Arc<Inner>,
}

impl fmt::Debug for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge")
            .field("brokers", &self.inner.config.kafka.brokers)
            .field("correlation", &self.inner.config.correlation)
            .field("pending", &self.inner.matcher.pending())
            .finish_non_exhaustive()
    }
}

fn create_producer(config: &BridgeConfig) -> Result<FutureProducer> {
    let message_timeout = config
        .message_timeout
        .min(config.request_timeout)
        .as_millis()
        .max(1);
    config.kafka.create(
        "the Kafka producer",
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "0"),
            ("message.timeout.ms", &message_timeout.to_string()),
            ("socket.nagle.disable", "true"),
        ],
    )
}

impl Bridge {
    /// Creates the producer and the reply consumer, creates missing topics (if
    /// configured), and returns once the consumer is positioned at the end of every
    /// partition of the reply topic: from then on no reply is missed.
    pub async fn connect(config: BridgeConfig) -> Result<Bridge> {
        if config.max_in_flight == 0 {
            return Err(Error::Config("max_in_flight must be at least 1".into()));
        }
        let deadline = Instant::now() + config.connect_timeout;
        if config.create_topics {
            let names = config.topics.all();
            ensure_topics(
                &config.kafka,
                &names,
                config.topic_partitions,
                config.topic_replication,
                config.connect_timeout,
            )
            .await?;
        }
        let producer = create_producer(&config)?;
        let consumer = reply_reader(
            &config.kafka,
            "mes-bridge",
            config.reply_fetch_wait,
            &config.topics.reply,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            matcher: Arc::new(
                Matcher::new(
                    config.correlation,
                    config.request_timeout,
                    config.legacy_fence_max,
                )
                .bound(config.gateway_key.is_some()),
            ),
            legacy_slot: Arc::new(LegacySlot::default()),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            producer: RwLock::new(Arc::new(Detached::new(producer))),
            producer_replaced: Mutex::new(None),
            broker_down: Mutex::new(None),
            lists: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            shutdown,
            consumer_task: Mutex::new(None),
            late: broadcast::channel(LATE_REPLY_CAPACITY).0,
            config,
        });
        let task = tokio::spawn(consume_replies(
            Arc::downgrade(&inner),
            consumer,
            shutdown_rx,
        ));
        *lock(&inner.consumer_task) = Some(task);
        Ok(Bridge { inner })
    }

    /// Publishes `request` and waits for its reply (any body: `data`, `message` or
    /// `error`). List requests without their own `corr` share a chain request with
    /// identical ones in flight.
    pub async fn request(
        &self,
        auth: &str,
        request: Request,
        options: CallOptions,
    ) -> Result<Exchange> {
        let timeout = options.timeout.unwrap_or(self.inner.config.request_timeout);
        // Behind the legacy slot, an operator may first wait for a background request
        // in flight (at most its timeout): that wait is not taken from the operator's
        // own round trip, so background work never makes an operator's call time out.
        let behind_background =
            if options.priority == Priority::Operator && self.inner.matcher.uses_legacy() {
                timeout
            } else {
                Duration::ZERO
            };
        let deadline = Deadline {
            at: Instant::now() + timeout + behind_background,
            timeout,
        };
        let list_page = match &request {
            Request::ListPartners(page) | Request::ListOrders(page) => Some(*page),
            _ => None,
        };
        let shared = match list_page {
            Some(page) if options.corr.is_none() => {
                self.shared_list(auth, request, page, options, deadline)?
            }
            _ => self
                .spawn_request(auth, request, options, deadline, None)?
                .map(flatten_join)
                .boxed()
                .shared(),
        };
        let result = match tokio::time::timeout_at(deadline.at, shared).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(timeout)),
        };
        // Counted here, once per call that timed out, whichever timer fired first: the
        // caller's or its request's.
        if matches!(result, Err(Error::Timeout(_))) {
            self.inner.metrics.timeouts.inc();
        }
        result
    }

    fn shared_list(
        &self,
        auth: &str,
        request: Request,
        page: Page,
        options: CallOptions,
        deadline: Deadline,
    ) -> Result<SharedReply> {
        let key: ListKey = (request.topic(), auth.to_owned(), page, options.priority);
        let mut lists = lock(&self.inner.lists);
        if let Some(shared) = lists.get(&key) {
            self.inner.metrics.coalesced.inc();
            return Ok(shared.clone());
        }
        // The request's own task removes the entry when it ends, whoever is waiting.
        let handle = self.spawn_request(auth, request, options, deadline, Some(key.clone()))?;
        let shared = handle.map(flatten_join).boxed().shared();
        lists.insert(key, shared.clone());
        Ok(shared)
    }

    fn spawn_request(
        &self,
        auth: &str,
        request: Request,
        options: CallOptions,
        deadline: Deadline,
        list_key: Option<ListKey>,
    ) -> Result<JoinHandle<Result<Exchange>>> {
        let CallOptions {
            corr,
            idem,
            priority,
            receipt,
            ..
        } = options;
        if *self.inner.shutdown.borrow() {
            return Err(Error::Shutdown);
        }
        let permit = Arc::clone(&self.inner.in_flight)
            .try_acquire_owned()
            .map_err(|_| {
                self.inner.metrics.overloaded.inc();
                Error::Overloaded(self.inner.config.max_in_flight)
            })?;
        let (corr, payload, req) = self.inner.envelope(auth, &request, corr, idem.as_deref());
        let job = Job {
            topic: request.topic(),
            shape: Shape::of(&request),
            priority,
            receipt,
            payload,
            auth: auth.to_owned(),
            corr,
            req,
            deadline: deadline.at,
            timeout: deadline.timeout,
        };
        let inner = Arc::clone(&self.inner);
        Ok(tokio::spawn(async move {
            let result = execute(&inner, job, permit).await;
            if let Some(key) = list_key {
                lock(&inner.lists).remove(&key);
            }
            if let Ok(exchange) = &result
                && matches!(exchange.reply.body, ReplyBody::Error { .. })
            {
                inner.metrics.chain_errors.inc();
            }
            result
        }))
    }

    /// `BLK_Part_Lst` or `BLK_Act_Lst`: a page of the chain's `data` list as it sent
    /// it. `options` say whose call it is (the poller's are background).
    pub async fn list(
        &self,
        auth: &str,
        listing: Listing,
        page: Page,
        options: CallOptions,
    ) -> Result<Vec<Value>> {
        let request = match listing {
            Listing::Partners => Request::ListPartners(page),
            Listing::Orders => Request::ListOrders(page),
        };
        data_of(self.request(auth, request, options).await?.reply)
    }

    /// `BLK_Part_Lst` for an operator: the chain's `data` list as it sent it.
    pub async fn list_partners(&self, auth: &str, page: Page) -> Result<Vec<Value>> {
        self.list(auth, Listing::Partners, page, CallOptions::default())
            .await
    }

    /// `BLK_Act_Lst` for an operator: the chain's `data` list as it sent it.
    pub async fn list_orders(&self, auth: &str, page: Page) -> Result<Vec<Value>> {
        self.list(auth, Listing::Orders, page, CallOptions::default())
            .await
    }

    /// `BLK_Part_Ans` or `BLK_Act_Ans`: accept or reject a request of `listing`'s kind.
    pub async fn answer(
        &self,
        auth: &str,
        listing: Listing,
        id: RequestId,
        response: Answer,
        options: CallOptions,
    ) -> Result<Answered> {
        let body = codec::AnswerBody { id, response };
        let request = match listing {
            Listing::Partners => Request::AnswerPartner(body),
            Listing::Orders => Request::AnswerOrder(body),
        };
        message_of(self.request(auth, request, options).await?)
    }

    /// Replies that come after their call ended without them (a timeout, a lost
    /// delivery report), each with the `corr` its call was sent with: what the call
    /// was for can still be settled from them (an operator's answer). In `legacy`
    /// mode this is the reply that lifts a fence. A subscriber sees those that come
    /// after it subscribed.
    pub fn late_replies(&self) -> broadcast::Receiver<LateReply> {
        self.inner.late.subscribe()
    }

    /// `BLK_Part_Ans`: accept or reject a partner request.
    pub async fn answer_partner(
        &self,
        auth: &str,
        id: RequestId,
        response: Answer,
        options: CallOptions,
    ) -> Result<Answered> {
        self.answer(auth, Listing::Partners, id, response, options)
            .await
    }

    /// `BLK_Act_Ans`: accept or reject an order request.
    pub async fn answer_order(
        &self,
        auth: &str,
        id: RequestId,
        response: Answer,
        options: CallOptions,
    ) -> Result<Answered> {
        self.answer(auth, Listing::Orders, id, response, options)
            .await
    }

    /// `BLK_Rty`: create a record type; "already exists" is a success.
    pub async fn create_record_type(
        &self,
        auth: &str,
        action: RecordTypeAction,
        options: CallOptions,
    ) -> Result<Created> {
        created_of(
            self.request(auth, Request::RecordType(action), options)
                .await?,
        )
    }

    /// `BLK_Rec`: create a record, add a reporter, update properties or publish a day
    /// report; "already exists" is a success.
    pub async fn record(
        &self,
        auth: &str,
        action: RecordAction,
        options: CallOptions,
    ) -> Result<Created> {
        created_of(self.request(auth, Request::Record(action), options).await?)
    }

    /// What the bridge knows about the gateway's `corr` echo.
    pub fn echo(&self) -> Echo {
        self.inner.matcher.echo()
    }

    /// Whether the next request is matched by token (one at a time, behind the legacy
    /// slot) rather than by correlation id.
    pub fn uses_legacy(&self) -> bool {
        self.inner.matcher.uses_legacy()
    }

    /// The reply-shape fences that are up now (behind a gateway that echoes only the
    /// token): for `/health/ready`, metrics and the console's "chain is behind".
    pub fn fences(&self) -> Vec<Fence> {
        self.inner.matcher.fences(std::time::Instant::now())
    }

    /// How fences went since start.
    pub fn fence_counts(&self) -> FenceCounts {
        self.inner.matcher.fence_counts()
    }

    /// Whether replies are verified: only those signed by the configured gateway key,
    /// bound to their request, are matched.
    pub fn verifies_replies(&self) -> bool {
        self.inner.config.gateway_key.is_some()
    }

    /// Calls waiting for the legacy slot now, by priority.
    pub fn waiting_for_slot(&self, priority: Priority) -> usize {
        self.inner.legacy_slot.waiting(priority)
    }

    /// Requests waiting for a reply now.
    pub fn pending(&self) -> usize {
        self.inner.matcher.pending()
    }

    /// The configuration in use.
    pub fn config(&self) -> &BridgeConfig {
        &self.inner.config
    }

    /// Whether the reply consumer is running (false after [`Bridge::shutdown`]).
    pub fn is_ready(&self) -> bool {
        !*self.inner.shutdown.borrow()
            && lock(&self.inner.consumer_task)
                .as_ref()
                .is_some_and(|t| !t.is_finished())
    }

    /// Waits until no request waits for a reply (each answered or timed out), for at
    /// most `within`; whether none is left. A stopping server calls it before
    /// [`Bridge::shutdown`], so that calls accepted before the stop get their answer
    /// rather than [`Error::Shutdown`].
    pub async fn drain(&self, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.pending() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Stops the reply consumer, fails waiting calls with [`Error::Shutdown`], and
    /// flushes the producer (bounded by the message timeout).
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        self.inner.matcher.close();
        self.inner.legacy_slot.close();
        let task = lock(&self.inner.consumer_task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let producer = self.inner.producer();
        let timeout = self.inner.config.message_timeout;
        let _ = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn flatten_join(joined: Result<Result<Exchange>, tokio::task::JoinError>) -> Result<Exchange> {
    joined.unwrap_or(Err(Error::Shutdown))
}

fn data_of(reply: Reply) -> Result<Vec<Value>> {
    match reply.body {
        ReplyBody::Data(items) => Ok(items),
        body @ ReplyBody::Error { .. } => Err(chain_error(&body)),
        ReplyBody::Message(m) => Err(Error::UnexpectedReply(format!(
            "expected a data list, got the message {m}"
        ))),
    }
}

fn message_of(exchange: Exchange) -> Result<Answered> {
    match exchange.reply.body {
        ReplyBody::Message(message) => Ok(Answered {
            corr: exchange.corr,
            message,
        }),
        body @ ReplyBody::Error { .. } => Err(chain_error(&body)),
        ReplyBody::Data(_) => Err(Error::UnexpectedReply(
            "expected a message, got a data list".into(),
        )),
    }
}

fn created_of(exchange: Exchange) -> Result<Created> {
    let body = exchange.reply.body;
    if body.is_already_exists() {
        return Ok(Created::AlreadyExists(body.text()));
    }
    match body {
        ReplyBody::Message(_) => Ok(Created::Created(body.text())),
        ReplyBody::Error { .. } => Err(chain_error(&body)),
        ReplyBody::Data(_) => Err(Error::UnexpectedReply(
            "expected a message, got a data list".into(),
        )),
    }
}

fn chain_error(body: &ReplyBody) -> Error {
    let code = match body {
        ReplyBody::Error { code, .. } => code.clone(),
        _ => None,
    };
    Error::Chain {
        message: body.text(),
        code,
    }
}

impl Inner {
    /// The bytes of `request`'s envelope as every call sends it: head `corr` (a new
    /// UUID v4 unless given), `idem` if given, signed when a key is configured; with
    /// the `corr` and the envelope's digest (`req`, docs/protocol.md §5).
    fn envelope(
        &self,
        auth: &str,
        request: &Request,
        corr: Option<String>,
        idem: Option<&str>,
    ) -> (String, Vec<u8>, String) {
        let corr = corr.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut envelope = request.envelope(auth, Some(&corr));
        if let Some(idem) = idem {
            envelope = envelope.with_idem(idem);
        }
        if let Some(key) = &self.config.signing_key {
            key.sign_envelope(&mut envelope);
        }
        let req = request_digest(&envelope);
        (corr, envelope.to_bytes(), req)
    }

    fn producer(&self) -> Arc<Detached<FutureProducer>> {
        Arc::clone(&self.producer.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the producer after a delivery failure.
    ///
    /// An idempotent producer can be left unusable by a broker that lost its state (a
    /// restarted broker forgets producer ids; librdkafka then times out every message
    /// without always raising a fatal error). A fresh producer costs one connection
    /// and a producer-id round trip, so it is replaced at most once per message
    /// timeout, and at once when librdkafka reports a fatal error.
    fn replace_producer_after_failure(&self, failed: &Detached<FutureProducer>) {
        let fatal = failed.client().fatal_error().is_some();
        let mut last = lock(&self.producer_replaced);
        let due = last.is_none_or(|t| t.elapsed() >= self.config.message_timeout);
        if !fatal && !due {
            return;
        }
        let mut current = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if !std::ptr::eq(Arc::as_ptr(&current), failed) {
            return; // another request replaced it already
        }
        match create_producer(&self.config) {
            Ok(fresh) => {
                tracing::warn!(
                    fatal,
                    "replaced the Kafka producer after a delivery failure"
                );
                *current = Arc::new(Detached::new(fresh));
                *last = Some(Instant::now());
            }
            Err(e) => tracing::error!("could not replace the failed Kafka producer: {e}"),
        }
    }
}

/// When a call must have its answer, and the limit it was given (for its error).
#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    timeout: Duration,
}

struct Job {
    topic: Topic,
    shape: Shape,
    priority: Priority,
    receipt: Option<SendReceipt>,
    payload: Vec<u8>,
    auth: String,
    corr: String,
    /// The digest of the envelope sent, which a signed reply must carry.
    req: String,
    deadline: Instant,
    /// The call's own time limit, for the error it gets.
    timeout: Duration,
}

/// One chain request, from slot to reply. Runs in its own task so that a caller
/// going away never leaves the legacy slot or the pending map in a half state.
async fn execute(
    inner: &Arc<Inner>,
    job: Job,
    _in_flight: OwnedSemaphorePermit,
) -> Result<Exchange> {
    let timeout = job.timeout;
    let legacy = inner.matcher.uses_legacy();
    if legacy
        && job.priority == Priority::Operator
        && matches!(job.topic, Topic::PartnerAnswer | Topic::OrderAnswer)
        && inner
            .matcher
            .fenced_by_background(job.shape, &job.auth, std::time::Instant::now())
    {
        // Background work's reply is outstanding: rather than refuse the operator
        // until it comes, send the answer unmatched and let the caller confirm it
        // from the chain's state (docs/protocol.md §9, rule 6).
        if let Some(result) = send_unmatched(inner, &job).await {
            return result;
        }
    }
    let slot = if legacy {
        Some(acquire_legacy_slot(inner, &job).await?)
    } else {
        None
    };
    // The reply is awaited for the call's timeout from now (an operator's call may
    // have waited for the slot), never past the call's end.
    let reply_deadline = (Instant::now() + timeout).min(job.deadline);

    let mut reply_rx = inner.matcher.register_request(
        &job.corr,
        &job.auth,
        job.shape,
        legacy,
        Some(job.req.clone()),
        job.priority == Priority::Background,
    );
    let producer = inner.producer();
    let record = record_of(inner, &job);
    let started = Instant::now();
    let delivery = match producer.send_result(record) {
        Ok(delivery) => delivery,
        Err((e, _)) => {
            // Refused before it was queued: certainly not sent.
            inner.matcher.abandon(&job.corr);
            return Err(inner.broker_error(&producer, e.to_string()));
        }
    };
    if let Some(receipt) = &job.receipt {
        receipt.mark();
    }
    inner.metrics.sent(job.topic);
    // librdkafka's own message timeout should fire first; this bounds the wait for an
    // acknowledgement even when it does not (seen with an idempotent producer that
    // has no producer id because the broker is gone).
    let ack_deadline = started + inner.config.message_timeout + Duration::from_secs(1);
    let mut delivery = std::pin::pin!(delivery);
    let mut delivered = false;
    let failure = loop {
        tokio::select! {
            biased;
            reply = &mut reply_rx => {
                return match reply {
                    Ok(reply) => {
                        inner.metrics.answered(job.topic, started.elapsed());
                        inner.broker_up();
                        Ok(Exchange { corr: job.corr, reply })
                    }
                    Err(_) => Err(Error::Shutdown),
                };
            }
            outcome = &mut delivery, if !delivered => match outcome {
                Ok(Ok(_)) => {
                    delivered = true;
                    inner.broker_up();
                }
                Ok(Err((e, _))) => break inner.broker_error(&producer, e.to_string()),
                Err(_) => break inner.broker_error(&producer, "the producer was closed".into()),
            },
            () = tokio::time::sleep_until(ack_deadline), if !delivered && ack_deadline < reply_deadline => {
                break inner.broker_error(
                    &producer,
                    format!("no acknowledgement within {:?}", inner.config.message_timeout),
                );
            }
            () = tokio::time::sleep_until(reply_deadline) => break Error::Timeout(timeout),
        }
    };
    // Timed out, or the delivery failed after the message was queued: it may still
    // reach the chain and be answered. Remember it as late; if it held the legacy slot,
    // its shape is fenced until that reply comes, and the slot goes to the next caller.
    if inner
        .matcher
        .timed_out(&job.corr, std::time::Instant::now())
    {
        tracing::warn!(
            topic = job.topic.name(),
            shape = job.shape.label(),
            "a request ended without its reply; {} requests wait for it (at most {:?})",
            job.shape,
            inner.config.legacy_fence_max
        );
    }
    drop(slot);
    Err(failure)
}

/// Sends an operator's answer while background work's reply of its shape is
/// outstanding: no slot, no waiter; the matcher counts its reply as one more
/// outstanding reply of the fence. `None` if the fence lifted meanwhile (the caller
/// takes the usual way); else [`Error::Unconfirmed`] once the broker has it, or the
/// broker's error (with the receipt marked if it may have been sent).
async fn send_unmatched(inner: &Arc<Inner>, job: &Job) -> Option<Result<Exchange>> {
    let now = std::time::Instant::now();
    if !inner
        .matcher
        .add_unmatched(&job.corr, job.shape, &job.auth, now)
    {
        return None;
    }
    let producer = inner.producer();
    let record = record_of(inner, job);
    let delivery = match producer.send_result(record) {
        Ok(delivery) => delivery,
        Err((e, _)) => {
            inner.matcher.withdraw_unmatched(job.shape);
            return Some(Err(inner.broker_error(&producer, e.to_string())));
        }
    };
    if let Some(receipt) = &job.receipt {
        receipt.mark();
    }
    inner.metrics.sent(job.topic);
    let ack_wait = inner.config.message_timeout + Duration::from_secs(1);
    Some(match tokio::time::timeout(ack_wait, delivery).await {
        Ok(Ok(Ok(_))) => {
            inner.broker_up();
            tracing::info!(
                topic = job.topic.name(),
                "an answer went out while background work's reply is outstanding; \
                 its outcome is read from the chain's list"
            );
            Err(Error::Unconfirmed)
        }
        Ok(Ok(Err((e, _)))) => Err(inner.broker_error(&producer, e.to_string())),
        Ok(Err(_)) => Err(inner.broker_error(&producer, "the producer was closed".into())),
        Err(_) => Err(inner.broker_error(
            &producer,
            format!(
                "no acknowledgement within {:?}",
                inner.config.message_timeout
            ),
        )),
    })
}

/// The Kafka record of `job`'s request, on its topic, with the correlation header.
fn record_of<'a>(inner: &'a Inner, job: &'a Job) -> FutureRecord<'a, (), [u8]> {
    FutureRecord::to(inner.config.topics.request(job.topic))
        .payload(job.payload.as_slice())
        .headers(correlation_headers(&job.corr))
}

/// Least time left before a call's deadline for its request to be sent behind the
/// legacy slot (it waited for the slot until then).
const MIN_SEND_WINDOW: Duration = Duration::from_millis(100);

/// Waits for the legacy slot within the job's deadline, by its priority. A fenced
/// shape is refused at once ([`Error::ChainBehind`]), before and after the wait; while
/// the broker is known to be down, a caller that would have to wait gets
/// [`Error::BrokerUnavailable`] at once instead of a timeout.
async fn acquire_legacy_slot(inner: &Arc<Inner>, job: &Job) -> Result<SlotPermit> {
    inner.check_fence(job.shape)?;
    let slot = &inner.legacy_slot;
    let permit = match slot.try_acquire() {
        Ok(Some(permit)) => permit,
        Err(_) => return Err(Error::Shutdown),
        Ok(None) => {
            if let Some(error) = inner.broker_down() {
                return Err(Error::BrokerUnavailable(error));
            }
            slot.acquire(job.priority, job.deadline)
                .await
                .map_err(|e| match e {
                    AcquireError::Timeout => Error::Timeout(job.timeout),
                    AcquireError::Closed => Error::Shutdown,
                })?
        }
    };
    // A fence may have gone up while this call waited.
    inner.check_fence(job.shape)?;
    // Sent with no time left for a reply, a request would only time out at once and
    // fence its shape: give up unsent instead.
    if job.deadline.saturating_duration_since(Instant::now()) < MIN_SEND_WINDOW {
        return Err(Error::Timeout(job.timeout));
    }
    if let Some(until) = inner.matcher.legacy_blocked_until() {
        let until = Instant::from_std(until);
        if until > Instant::now() {
            if until > job.deadline {
                tokio::time::sleep_until(job.deadline).await;
                return Err(Error::Timeout(job.timeout));
            }
            tokio::time::sleep_until(until).await;
        }
    }
    Ok(permit)
}

impl Inner {
    /// [`Error::ChainBehind`] if `shape` is fenced (or [`Error::BrokerUnavailable`] if
    /// the broker is known to be down: that is the more useful thing to say).
    fn check_fence(&self, shape: Shape) -> Result<()> {
        let now = std::time::Instant::now();
        let Some(fence) = self.matcher.fence(shape, now) else {
            return Ok(());
        };
        if let Some(error) = self.broker_down() {
            return Err(Error::BrokerUnavailable(error));
        }
        self.metrics.chain_behind.inc();
        Err(Error::ChainBehind {
            shape,
            waited: now.saturating_duration_since(fence.since),
            retry_after: fence.until.saturating_duration_since(now),
        })
    }

    fn broker_up(&self) {
        let mut down = lock(&self.broker_down);
        if down.is_some() {
            tracing::info!("the Kafka broker is reachable again");
            *down = None;
        }
    }

    fn broker_down(&self) -> Option<String> {
        lock(&self.broker_down).clone()
    }

    fn broker_error(&self, producer: &Detached<FutureProducer>, message: String) -> Error {
        *lock(&self.broker_down) = Some(message.clone());
        self.metrics.broker_errors.inc();
        self.replace_producer_after_failure(producer);
        Error::BrokerUnavailable(message)
    }
}

/// The reply consumer: decodes, verifies and dispatches every record of `BLK_Res`
/// until shutdown. Nothing it reads can stop it.
async fn consume_replies(
    inner: std::sync::Weak<Inner>,
    consumer: Arc<Detached<StreamConsumer>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_error_log: Option<Instant> = None;
    loop {
        let received = tokio::select! {
            _ = shutdown.changed() => break,
            received = consumer.recv() => received,
        };
        let Some(inner) = inner.upgrade() else { break };
        match received {
            Ok(message) => {
                inner.on_record(message.payload().unwrap_or_default(), header_corr(&message));
            }
            Err(e) => {
                inner.metrics.consumer_errors.inc();
                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!("reply consumer: {e}");
                    last_error_log = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Inner {
    fn on_record(&self, payload: &[u8], header_corr: Option<String>) {
        let mut reply = match codec::decode_reply_with_limit(payload, self.config.max_reply_bytes) {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!("dropped an undecodable reply: {e}");
                self.metrics.dropped(DropReason::Undecodable);
                return;
            }
        };
        reply = match trust::admit(reply, header_corr, self.config.gateway_key.as_ref()) {
            Ok(reply) => reply,
            Err(refused) => {
                tracing::warn!(
                    reason = refused.reason.label(),
                    "dropped a reply: {}",
                    refused.why
                );
                self.metrics.dropped(refused.reason);
                return;
            }
        };
        // Whatever the chain wrote goes on to answers, decisions, events and logs:
        // never with the token in it (a gateway may echo it in an error).
        let token = reply.head.auth.clone();
        reply.body.redact(&token);
        match self.matcher.route(reply, std::time::Instant::now()) {
            Routed::Delivered => {
                self.metrics.delivered.inc();
            }
            Routed::Late(late) => {
                tracing::debug!(corr = %late.corr, "a reply came after its call ended");
                self.metrics.dropped(DropReason::Late);
                // Nobody subscribed is fine: nothing was waiting for it.
                let _ = self.late.send(*late);
            }
            Routed::Dropped(reason) => {
                tracing::debug!("dropped a reply: {}", reason.label());
                self.metrics.dropped(reason);
            }
        }
    }
}
