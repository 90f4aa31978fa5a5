//! One call's way from [`Bridge::request`] to its reply: list requests shared while
//! in flight, the in-flight bound, the envelope, the legacy slot and the fences, the
//! producer (replaced after a failure that may have broken it), and the wait for the
//! reply or the broker's acknowledgement, whichever decides.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use mes_core::codec::{Page, Reply, ReplyBody, Request, Topic};
use mes_core::signing::request_digest;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::slot::{AcquireError, SlotPermit};
use super::{
    Bridge, BridgeConfig, CallOptions, Inner, ListKey, Priority, SendReceipt, Shape, SharedReply,
    lock,
};
use crate::kafka::{Detached, request_headers};
use crate::trace::TraceParent;
use crate::{Error, Result};

/// A reply with the correlation id its request carried.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The request's correlation id.
    pub corr: String,
    /// The chain's reply.
    pub reply: Reply,
}

pub(super) fn create_producer(config: &BridgeConfig) -> Result<FutureProducer> {
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
            trace,
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
            trace: record_trace(trace),
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
}

/// The `traceparent` of a record sent for a call that continues `given` (else the
/// current task's trace, else a new one): a child, so that each record is a step of
/// its own in the trace.
pub(super) fn record_trace(given: Option<TraceParent>) -> TraceParent {
    given
        .or_else(crate::trace::current)
        .map_or_else(TraceParent::new_root, |trace| trace.child())
}

fn flatten_join(joined: Result<Result<Exchange>, tokio::task::JoinError>) -> Result<Exchange> {
    joined.unwrap_or(Err(Error::Shutdown))
}

impl Inner {
    /// The bytes of `request`'s envelope as every call sends it: head `corr` (a new
    /// UUID v4 unless given), `idem` if given, signed when a key is configured; with
    /// the `corr` and the envelope's digest (`req`, docs/protocol.md §5).
    pub(super) fn envelope(
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

    pub(super) fn producer(&self) -> Arc<Detached<FutureProducer>> {
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
    /// The record's `traceparent`.
    trace: TraceParent,
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
            trace_id = %job.trace.trace_id(),
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
                trace_id = %job.trace.trace_id(),
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
        .headers(request_headers(&job.corr, &job.trace))
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

    pub(super) fn broker_up(&self) {
        let mut down = lock(&self.broker_down);
        if down.is_some() {
            tracing::info!("the Kafka broker is reachable again");
            *down = None;
        }
    }

    fn broker_down(&self) -> Option<String> {
        lock(&self.broker_down).clone()
    }

    pub(super) fn broker_error(
        &self,
        producer: &Detached<FutureProducer>,
        message: String,
    ) -> Error {
        *lock(&self.broker_down) = Some(message.clone());
        self.metrics.broker_errors.inc();
        self.replace_producer_after_failure(producer);
        Error::BrokerUnavailable(message)
    }
}
