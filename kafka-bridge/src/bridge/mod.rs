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
//!
//! By part: `config` (the bridge's settings and each call's options), `send` (one
//! call from [`Bridge::request`] to its reply: slot, fences, producer), `calls` (the
//! typed calls over it), `consumer` (the reply consumer's task), `matcher` (which
//! request a reply answers), `trust` (which replies are admitted), `slot`,
//! `publish` and `metrics`.

mod calls;
mod config;
mod consumer;
mod matcher;
mod metrics;
mod publish;
mod send;
mod slot;
mod trust;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use futures::future::{BoxFuture, Shared};
use mes_core::codec::{Page, Topic};
use rdkafka::producer::{FutureProducer, Producer};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use calls::{Answered, Created, Listing};
pub use config::{BridgeConfig, CallOptions, CorrelationMode, SendReceipt};
pub use matcher::{DropReason, Echo, FALLBACK_EVIDENCE, Fence, FenceCounts, LateReply, Shape};
pub use metrics::MetricsSnapshot;
pub use publish::Published;
pub use send::Exchange;
pub use slot::Priority;

use self::consumer::consume_replies;
use self::matcher::Matcher;
use self::metrics::Metrics;
use self::send::create_producer;
use self::slot::LegacySlot;
use crate::kafka::{Detached, ensure_topics, reply_reader};
use crate::{Error, Result};

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

    /// Replies that come after their call ended without them (a timeout, a lost
    /// delivery report), each with the `corr` its call was sent with: what the call
    /// was for can still be settled from them (an operator's answer). In `legacy`
    /// mode this is the reply that lifts a fence. A subscriber sees those that come
    /// after it subscribed.
    pub fn late_replies(&self) -> broadcast::Receiver<LateReply> {
        self.inner.late.subscribe()
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
