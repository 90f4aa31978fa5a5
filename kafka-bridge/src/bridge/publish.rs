//! Fire-and-acknowledge: a request published without waiting for the chain's reply.
//!
//! For gateways that never answer record topics (`MES_RECORD_REPLIES=none`): waiting
//! for a reply that never comes would hold the legacy slot for the whole timeout. A
//! published request takes no slot and registers no pending reply; it is done when the
//! broker acknowledges it (`acks=all` on the bridge's idempotent producer).

use std::sync::Arc;
use std::time::Duration;

use mes_core::codec::Request;
use rdkafka::producer::FutureRecord;
use tokio::time::Instant;

use super::send::record_trace;
use super::{Bridge, CallOptions};
use crate::kafka::request_headers;
use crate::{Error, Result};

/// Where the broker stored a request published by [`Bridge::publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The correlation id the request carries (head `corr` and header), for a reply
    /// that may come after all.
    pub corr: String,
    /// The Kafka topic it went to.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
}

impl Bridge {
    /// Publishes `request` with the envelope [`Bridge::request`] would send (`corr`,
    /// `idem` from `options`, signature) and returns once the broker has acknowledged
    /// it, without waiting for a reply: no legacy slot, no pending reply.
    ///
    /// Waits at most the message timeout (and `options.timeout`, if shorter: then
    /// [`Error::Timeout`]). Broker failures are [`Error::BrokerUnavailable`] and count
    /// towards the broker's health like any request's.
    pub async fn publish(
        &self,
        auth: &str,
        request: Request,
        options: CallOptions,
    ) -> Result<Published> {
        let inner = &self.inner;
        if *inner.shutdown.borrow() {
            return Err(Error::Shutdown);
        }
        let _permit = Arc::clone(&inner.in_flight)
            .try_acquire_owned()
            .map_err(|_| {
                inner.metrics.overloaded.inc();
                Error::Overloaded(inner.config.max_in_flight)
            })?;
        let (corr, payload, _) =
            inner.envelope(auth, &request, options.corr, options.idem.as_deref());
        let topic = request.topic();
        let topic_name = inner.config.topics.request(topic);
        let trace = record_trace(options.trace);
        let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic_name)
            .payload(payload.as_slice())
            .headers(request_headers(&corr, &trace));

        let producer = inner.producer();
        let started = Instant::now();
        let delivery = match producer.send_result(record) {
            Ok(delivery) => delivery,
            Err((e, _)) => return Err(inner.broker_error(&producer, e.to_string())),
        };
        inner.metrics.sent(topic);
        // As in `execute`: librdkafka's message timeout should fire first; this bounds
        // the wait should it not.
        let ack_bound = inner.config.message_timeout + Duration::from_secs(1);
        let (limit, caller) = match options.timeout {
            Some(timeout) if timeout < ack_bound => (timeout, true),
            _ => (ack_bound, false),
        };
        match tokio::time::timeout_at(started + limit, delivery).await {
            Ok(Ok(Ok(delivered))) => {
                inner.broker_up();
                Ok(Published {
                    corr,
                    topic: topic_name.to_owned(),
                    partition: delivered.partition,
                    offset: delivered.offset,
                })
            }
            Ok(Ok(Err((e, _)))) => Err(inner.broker_error(&producer, e.to_string())),
            Ok(Err(_)) => Err(inner.broker_error(&producer, "the producer was closed".into())),
            Err(_) if caller => {
                inner.metrics.timeouts.inc();
                Err(Error::Timeout(limit))
            }
            Err(_) => Err(inner.broker_error(
                &producer,
                format!(
                    "no acknowledgement within {:?}",
                    inner.config.message_timeout
                ),
            )),
        }
    }
}
