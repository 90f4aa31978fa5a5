//! One row's way: decoded, sent as its topic and [`RecordReplies`] call for (asking
//! the topic's breaker first), and settled by the answer, then its ordering key's
//! next rows, each claimed as the one before is settled for good.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use diesel::result::Error as DieselError;
use mes_core::codec::{ReplyBody, Request, Topic};
use mes_core::db::outbox::{self, OutboxRow};
use mes_core::redact::redact;
use tokio::time::Instant;

use super::breaker::{Admission, Outcome};
use super::record_topics::RECORD_TOPICS;
use super::{Batch, Inner, RecordReplies, blocking, lock};
use crate::bridge::{CallOptions, Exchange, Priority, Published};
use crate::trace::TraceParent;
use crate::{Error, Result};

/// Longest error text stored in a row or kept in the status: a chain or librdkafka
/// message is short, but nothing should let one row's error grow without bound.
const MAX_ERROR_CHARS: usize = 1000;

/// What a row delivered without a reply is settled with.
pub const PUBLISHED_TEXT: &str = "published (no reply awaited)";

/// How one row ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Delivered: the chain's message (or its "already exists").
    Done(String),
    /// The chain refused it, or it is no request: never retried.
    Failed(String),
    /// Never answered, and past a cap (attempts or age): failed, with the reason.
    Capped(String),
    /// No answer: try again after a backoff.
    Retry(String),
    /// Not sent, through no fault of the row (relay stopping, lease over): due again now.
    Release(String),
    /// Not sent because its topic is on hold: pending, no attempt spent.
    Held(String),
}

impl Inner {
    /// Delivers `row`, claimed at `claimed_at`, then its ordering key's next rows one
    /// after the other, each as soon as the one before is settled for good (done or
    /// failed), up to `most` rows: a backlog on few keys goes out at the chain's pace,
    /// not at one row per key per batch. Order within the key holds (the next row is
    /// claimed only once the previous is settled), and each row has a lease of its own.
    /// The result's `claimed` counts the follow-on rows only (the first was counted
    /// when the batch claimed it).
    pub(super) async fn deliver_key(
        &self,
        row: OutboxRow,
        token: &str,
        claimed_at: Instant,
        most: usize,
    ) -> Batch {
        let mut tally = Batch::default();
        let mut next = Some((row, claimed_at));
        let mut delivered = 0;
        while let Some((row, claimed_at)) = next.take() {
            let deadline = claimed_at + self.config.lease - self.config.lease_margin();
            delivered += 1;
            // Published rows (`RecordReplies::None`) are settled on the broker's
            // acknowledgement, which says nothing of the order in which the chain reads
            // them: Kafka orders a key's rows only within one partition of one topic,
            // and a unit's record type and records travel on two topics. Those keys keep
            // the poll's pace between rows, as before there was a back-to-back path.
            let then = delivered < most
                && self.config.record_replies != RecordReplies::None
                && !self.stopping.load(Ordering::Relaxed);
            let (verdict, claimed) = self.deliver(row, token, deadline, then).await;
            tally.count(verdict.as_ref());
            next = match claimed {
                Some(Ok(Some(row))) => {
                    tally.claimed += 1;
                    Some((row, Instant::now()))
                }
                Some(Ok(None)) | None => None,
                Some(Err(e)) => {
                    // The row stays pending; the next batch claims it.
                    self.count_database_error(&e);
                    None
                }
            };
        }
        tally
    }

    /// Sends one row and settles it; `None` if it could not be settled (the database
    /// failed: the row comes back when its lease ends). With `then`, a row settled for
    /// good (done or failed) is followed by its key's next due row, claimed in the
    /// settlement's transaction (the second value; `None` when none was asked for).
    async fn deliver(
        &self,
        row: OutboxRow,
        token: &str,
        deadline: Instant,
        then: bool,
    ) -> (Option<Verdict>, Option<Result<Option<OutboxRow>>>) {
        let verdict = match self.decode(&row) {
            Err(why) => Verdict::Failed(why),
            Ok(_) if self.stopping.load(Ordering::Relaxed) => {
                Verdict::Release("not sent: the relay was stopping".to_owned())
            }
            Ok(request) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left < Duration::from_millis(100) {
                    Verdict::Release("not sent: its lease ran out while it waited".to_owned())
                } else {
                    let options = CallOptions {
                        corr: None,
                        idem: Some(row.idem_key().to_owned()),
                        timeout: Some(self.config.send_timeout.min(left)),
                        // Operators go first for the legacy slot.
                        priority: Priority::Background,
                        receipt: None,
                        // The record continues the trace of the work that enqueued
                        // the row (an operator's click), not the relay's own.
                        trace: stored_trace(&row),
                    };
                    self.send(request, token, options).await
                }
            }
        };
        self.settle(&row, verdict, token, then).await
    }

    /// Sends one request the way its topic and [`RecordReplies`] call for, asking the
    /// topic's breaker first.
    async fn send(&self, request: Request, token: &str, options: CallOptions) -> Verdict {
        let topic = request.topic();
        let record = RECORD_TOPICS.contains(&topic);
        if record && self.config.record_replies == RecordReplies::None {
            self.stats.sent.inc();
            return published_verdict(self.bridge.publish(token, request, options).await);
        }
        let admission = if record {
            self.admit(topic)
        } else {
            Admission::Send
        };
        if admission == Admission::Hold {
            return Verdict::Held(self.hold_note(topic));
        }
        self.stats.sent.inc();
        let result = self.bridge.request(token, request, options).await;
        if record {
            let outcome = match &result {
                Ok(_) => Outcome::Answered,
                // Also when the call timed out waiting for the legacy slot: the bridge
                // does not tell the two apart. Operators holding the slot that long
                // is a reason to back off too.
                Err(Error::Timeout(_)) => Outcome::TimedOut,
                Err(_) => Outcome::Inconclusive,
            };
            self.record(topic, outcome, admission == Admission::Probe);
        }
        verdict(result)
    }

    /// The request a row stands for, or why it is none.
    fn decode(&self, row: &OutboxRow) -> std::result::Result<Request, String> {
        let topic = Topic::from_name(&row.topic)
            .or_else(|| self.bridge.config().topics.topic_of(&row.topic))
            .ok_or_else(|| {
                format!(
                    "not a request: {:?} is not a request topic",
                    truncate(&row.topic, 100)
                )
            })?;
        if matches!(topic, Topic::PartnerList | Topic::OrderList) {
            return Err(format!(
                "not a request: {} is a list (a read), which has no place in the outbox",
                topic.name()
            ));
        }
        let body = serde_json::from_str(&row.payload)
            .map_err(|e| format!("not a request: the payload is not JSON ({e})"))?;
        Request::from_body(topic, body).map_err(|e| {
            format!(
                "not a request: the payload does not fit {}: {e}",
                topic.name()
            )
        })
    }

    async fn settle(
        &self,
        row: &OutboxRow,
        verdict: Verdict,
        token: &str,
        then: bool,
    ) -> (Option<Verdict>, Option<Result<Option<OutboxRow>>>) {
        let id = row.id;
        let verdict = match verdict {
            Verdict::Done(text) => Verdict::Done(truncate(&redact(&text, token), MAX_ERROR_CHARS)),
            Verdict::Failed(text) => {
                Verdict::Failed(truncate(&redact(&text, token), MAX_ERROR_CHARS))
            }
            Verdict::Retry(text) => {
                let text = truncate(&redact(&text, token), MAX_ERROR_CHARS);
                match self.cap_reached(row) {
                    Some(why) => Verdict::Capped(format!("{why}; last error: {text}")),
                    None => Verdict::Retry(text),
                }
            }
            Verdict::Capped(text) => Verdict::Capped(text),
            Verdict::Release(text) => Verdict::Release(text),
            Verdict::Held(text) => Verdict::Held(text),
        };
        let next_attempt = match &verdict {
            Verdict::Retry(_) => {
                let wait = backoff(
                    row.attempts,
                    self.config.backoff_base,
                    self.config.backoff_max,
                    random_fraction(),
                );
                let now = mes_core::db::now();
                chrono::Duration::from_std(wait)
                    .ok()
                    .and_then(|wait| now.checked_add_signed(wait))
                    .unwrap_or(chrono::NaiveDateTime::MAX)
            }
            _ => mes_core::db::now(),
        };
        // The key's next row, claimed in the same transaction, once this one is settled
        // for good.
        let then = match (&verdict, chrono::Duration::from_std(self.config.lease)) {
            (Verdict::Done(_) | Verdict::Failed(_) | Verdict::Capped(_), Ok(lease)) if then => {
                Some((
                    row.ordering_key.clone(),
                    lease,
                    self.held_topics(Utc::now()),
                ))
            }
            _ => None,
        };
        let pool = self.pool.clone();
        let write = verdict.clone();
        let written = blocking(move || {
            let mut conn = pool.get().map_err(|e| Error::Database(e.to_string()))?;
            let settle = |conn: &mut mes_core::db::DbConnection| match &write {
                Verdict::Done(message) => outbox::mark_done(conn, id, Some(message)),
                Verdict::Failed(error) => outbox::mark_failed(conn, id, error),
                Verdict::Capped(reason) => outbox::give_up(conn, id, reason),
                Verdict::Retry(error) | Verdict::Release(error) => {
                    outbox::retry_later(conn, id, next_attempt, error)
                }
                Verdict::Held(note) => outbox::release_unsent(conn, id, next_attempt, note),
            };
            let result = match &then {
                None => settle(&mut conn).map(|_| None),
                Some((key, lease, held)) => {
                    let next = outbox::NextOfKey {
                        ordering_key: key,
                        now: mes_core::db::now(),
                        lease: *lease,
                        held,
                    };
                    outbox::settle_then_claim_next(&mut conn, settle, next).map(|(_, claimed)| {
                        Some(claimed.map_err(|e| {
                            Error::Database(format!("claiming the next row of {key}: {e}"))
                        }))
                    })
                }
            };
            match result {
                Ok(claimed) => Ok(Some(claimed)),
                // Its lease ran out and another relay settled it meanwhile.
                Err(DieselError::NotFound) => Ok(None),
                Err(e) => Err(Error::Database(format!("settling outbox row {id}: {e}"))),
            }
        })
        .await;
        let name = &self.config.name;
        let claimed = match written {
            Ok(Some(claimed)) => claimed,
            Ok(None) => {
                tracing::info!(relay = %name, id, trace_id = trace_id(row), "outbox row was settled by another relay");
                return (None, None);
            }
            Err(e) => {
                // The row stays in flight and comes back when its lease ends.
                tracing::warn!(relay = %name, id, "{e}");
                self.count_database_error(&e);
                return (None, None);
            }
        };
        let stats = &self.stats;
        match &verdict {
            Verdict::Done(_) => {
                stats.done.inc();
                stats.delivery(&row.topic, "delivered");
                tracing::debug!(relay = %name, id, trace_id = trace_id(row), "outbox row delivered");
            }
            Verdict::Failed(error) | Verdict::Capped(error) => {
                stats.failed.inc();
                let capped = matches!(verdict, Verdict::Capped(_));
                stats.delivery(&row.topic, if capped { "capped" } else { "failed" });
                tracing::warn!(relay = %name, id, trace_id = trace_id(row), dedup_key = %row.dedup_key, "outbox row failed: {error}");
                self.last_error("refused", error);
            }
            Verdict::Retry(error) => {
                stats.retried.inc();
                stats.delivery(&row.topic, "retried");
                tracing::info!(relay = %name, id, trace_id = trace_id(row), attempts = row.attempts, "outbox row retried later: {error}");
                self.last_error("no_answer", error);
            }
            Verdict::Release(_) => {
                stats.retried.inc();
                stats.delivery(&row.topic, "released");
            }
            Verdict::Held(_) => {
                stats.held.inc();
                stats.delivery(&row.topic, "held");
            }
        }
        (Some(verdict), claimed)
    }

    /// Why `row`, whose attempt got no answer, is not tried again: it reached
    /// [`RelayConfig::max_attempts`] or [`RelayConfig::max_age`] (counted from an
    /// operator's retry, if any). `None` while it may.
    ///
    /// [`RelayConfig::max_attempts`]: super::RelayConfig::max_attempts
    /// [`RelayConfig::max_age`]: super::RelayConfig::max_age
    fn cap_reached(&self, row: &OutboxRow) -> Option<String> {
        if let Some(max) = self.config.max_attempts
            && i64::from(row.attempts) >= i64::from(max)
        {
            return Some(format!(
                "given up: not delivered after {} attempts (MES_OUTBOX_MAX_ATTEMPTS)",
                row.attempts
            ));
        }
        let age = self.config.max_age?;
        let since = row.retried_at.unwrap_or(row.created_at);
        let limit = chrono::Duration::from_std(age).ok()?;
        (mes_core::db::now() - since >= limit).then(|| age_reason(age))
    }

    fn last_error(&self, kind: &'static str, error: &str) {
        *lock(&self.stats.last_error) = Some((kind, error.to_owned()));
    }

    pub(super) fn count_database_error(&self, error: &Error) {
        self.stats.database_errors.inc();
        self.last_error("database", &error.to_string());
    }
}

/// Why a row older than `age` is failed.
pub(super) fn age_reason(age: Duration) -> String {
    format!(
        "given up: not delivered within {} (MES_OUTBOX_MAX_AGE)",
        humantime_like(age)
    )
}

/// `age` in the largest whole unit that fits it: `7d`, `36h`, `90s`.
fn humantime_like(age: Duration) -> String {
    let secs = age.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= size && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    if age.subsec_nanos() == 0 {
        format!("{secs}s")
    } else {
        format!("{}ms", age.as_millis())
    }
}

/// The verdict on a row from the bridge's answer.
fn verdict(result: Result<Exchange>) -> Verdict {
    match result {
        Ok(exchange) => {
            let body = exchange.reply.body;
            if body.is_already_exists() {
                return Verdict::Done(body.text());
            }
            match body {
                ReplyBody::Message(_) => Verdict::Done(body.text()),
                ReplyBody::Error { .. } => Verdict::Failed(body.text()),
                ReplyBody::Data(_) => Verdict::Failed(format!(
                    "unexpected answer from the chain: {} instead of a message",
                    body.text()
                )),
            }
        }
        Err(Error::Shutdown) => Verdict::Release("not answered: the bridge shut down".to_owned()),
        // Not sent: an earlier request's reply is outstanding behind a legacy gateway
        // (docs/protocol.md §9). Pending again, no attempt spent.
        Err(e @ Error::ChainBehind { .. }) => Verdict::Held(format!("not sent: {e}")),
        // Timeout, BrokerUnavailable, Overloaded, and anything else that is not the
        // chain's answer: the row may or may not have arrived, so it is sent again (the
        // idempotency key makes that harmless).
        Err(e) => Verdict::Retry(e.to_string()),
    }
}

/// The verdict on a row published without awaiting a reply: done once the broker has
/// it.
fn published_verdict(result: Result<Published>) -> Verdict {
    match result {
        Ok(published) => Verdict::Done(format!(
            "{PUBLISHED_TEXT}: {} partition {} offset {}",
            published.topic, published.partition, published.offset
        )),
        Err(Error::Shutdown) => Verdict::Release("not sent: the bridge shut down".to_owned()),
        Err(e) => Verdict::Retry(e.to_string()),
    }
}

/// The wait before the attempt after attempt number `attempts` (1 for the first):
/// `base · 2^(attempts-1)`, at most `max`, of which the upper half is kept and the
/// lower half scaled by `fraction` (0..1, random): "equal jitter".
fn backoff(attempts: i32, base: Duration, max: Duration, fraction: f64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(31);
    let full = base.saturating_mul(1u32 << doublings).min(max);
    let half = full / 2;
    half + half.mul_f64(fraction.clamp(0.0, 1.0))
}

/// A random number in `0..1` from the UUID generator's randomness (no extra crate).
fn random_fraction() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() >> 75; // 53 random bits
    bits as f64 / (1u64 << 53) as f64
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// The trace stored with `row` (`None`: a row from before traces were kept, or a value
/// that is not a `traceparent`; its record starts a trace of its own).
fn stored_trace(row: &OutboxRow) -> Option<TraceParent> {
    row.traceparent.as_deref().and_then(TraceParent::parse)
}

/// `row`'s trace id for its log lines (empty when it has none).
fn trace_id(row: &OutboxRow) -> String {
    stored_trace(row).map(|t| t.trace_id()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use mes_core::codec::{Reply, ReplyBody};
    use serde_json::json;

    use super::*;

    fn answered(body: ReplyBody) -> Result<Exchange> {
        Ok(Exchange {
            corr: "c".into(),
            reply: Reply::new("T", Some("c"), body),
        })
    }

    fn error(text: &str, code: Option<&str>) -> ReplyBody {
        ReplyBody::Error {
            error: json!(text),
            code: code.map(str::to_owned),
        }
    }

    #[test]
    fn the_chains_answer_decides_the_rows_fate() {
        assert_eq!(
            verdict(answered(ReplyBody::Message(json!(
                "Record PT10 updated: status"
            )))),
            Verdict::Done("Record PT10 updated: status".into())
        );
        assert_eq!(
            verdict(answered(error(
                "Record PT10 already exists",
                Some("already_exists")
            ))),
            Verdict::Done("Record PT10 already exists".into())
        );
        // A legacy gateway says it only in words.
        assert_eq!(
            verdict(answered(error("Day report X Already Exists", None))),
            Verdict::Done("Day report X Already Exists".into())
        );
        assert_eq!(
            verdict(answered(error(
                "record PT10 does not exist",
                Some("unknown_record")
            ))),
            Verdict::Failed("record PT10 does not exist".into())
        );
        assert!(matches!(
            verdict(answered(ReplyBody::Data(vec![json!(1)]))),
            Verdict::Failed(why) if why.contains("1 items")
        ));
    }

    #[test]
    fn no_answer_means_later_and_shutdown_means_now() {
        for e in [
            Error::Timeout(Duration::from_secs(10)),
            Error::BrokerUnavailable("Local: Message timed out".into()),
            Error::Overloaded(1024),
        ] {
            let text = e.to_string();
            assert_eq!(verdict(Err(e)), Verdict::Retry(text));
        }
        assert!(matches!(verdict(Err(Error::Shutdown)), Verdict::Release(_)));
        let behind = Error::ChainBehind {
            shape: crate::bridge::Shape::Message,
            waited: Duration::from_secs(1),
            retry_after: Duration::from_secs(1),
        };
        assert!(matches!(verdict(Err(behind)), Verdict::Held(_)));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        let at = |attempts, fraction| backoff(attempts, base, max, fraction);
        assert_eq!(at(1, 0.0), Duration::from_millis(500));
        assert_eq!(at(1, 1.0), Duration::from_secs(1));
        assert_eq!(at(2, 1.0), Duration::from_secs(2));
        assert_eq!(at(4, 0.5), Duration::from_secs(6));
        assert_eq!(at(7, 1.0), max);
        assert_eq!(at(i32::MAX, 1.0), max);
        assert_eq!(at(0, 1.0), base);
        assert_eq!(at(-3, 1.0), base);
        for _ in 0..1000 {
            let f = random_fraction();
            assert!((0.0..1.0).contains(&f), "{f}");
        }
        // Two draws are (almost surely) different: jitter spreads rows out.
        let draws: std::collections::BTreeSet<u64> =
            (0..20).map(|_| random_fraction().to_bits()).collect();
        assert!(draws.len() > 1);
    }

    #[test]
    fn errors_never_carry_the_token_nor_grow_without_bound() {
        assert_eq!(
            redact("unknown token s3cr3t", "s3cr3t"),
            "unknown token <redacted>"
        );
        assert_eq!(truncate("ação", 2), "aç…");
        assert_eq!(truncate("ação", 4), "ação");
        assert_eq!(
            truncate(&"x".repeat(5000), MAX_ERROR_CHARS).chars().count(),
            MAX_ERROR_CHARS + 1
        );
    }

    #[test]
    fn a_published_row_is_done_on_the_brokers_word_and_retried_without_it() {
        let published = Published {
            corr: "c".into(),
            topic: "BLK_Rec".into(),
            partition: 0,
            offset: 41,
        };
        assert_eq!(
            published_verdict(Ok(published)),
            Verdict::Done("published (no reply awaited): BLK_Rec partition 0 offset 41".into())
        );
        let down = Error::BrokerUnavailable("Local: Message timed out".into());
        assert_eq!(
            published_verdict(Err(down.clone())),
            Verdict::Retry(down.to_string())
        );
        assert!(matches!(
            published_verdict(Err(Error::Shutdown)),
            Verdict::Release(_)
        ));
    }
}
