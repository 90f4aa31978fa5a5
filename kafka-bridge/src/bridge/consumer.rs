//! The reply consumer's task: every record of `BLK_Res` is decoded, admitted
//! (`trust`), redacted and handed to the matcher.

use std::sync::Arc;
use std::time::Duration;

use mes_core::codec;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::Message;
use tokio::sync::watch;
use tokio::time::Instant;

use super::matcher::{DropReason, Routed};
use super::{Inner, trust};
use crate::kafka::{Detached, header_corr};

/// The reply consumer: decodes, verifies and dispatches every record of `BLK_Res`
/// until shutdown. Nothing it reads can stop it.
pub(super) async fn consume_replies(
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
