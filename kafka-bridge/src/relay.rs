//! The outbox relay: delivers `chain_outbox` rows to the chain through a [`Bridge`].
//!
//! A change and the message announcing it are committed together
//! ([`mes_core::db::outbox::enqueue`] inside the caller's transaction). The relay
//! claims due rows for a lease, sends each with its dedup key as the idempotency key
//! (`idem`, docs/protocol.md §2), and settles it by the chain's answer:
//!
//! | answer | row |
//! |---|---|
//! | `message`, or an `already_exists` error | done, with the chain's text |
//! | any other `error` | failed for good, with the chain's text |
//! | no answer: timeout, broker down, overloaded | pending again after an exponential backoff with jitter |
//! | not a request (unknown topic, bad payload) | failed, nothing sent |
//!
//! Sends are at least once (a relay that dies after sending and before settling leaves
//! the row in flight; it is claimed again when its lease ends) and the chain applies a
//! key once, answering a repeat with its first answer: together, each row takes effect
//! on the chain once. `docs/ARCHITECTURE.md` walks through every crash point.
//!
//! Ordering: the store hands out only the oldest unsettled row of each ordering key, so
//! one key has at most one row in flight; rows of different keys are sent
//! concurrently (at most [`RelayConfig::concurrency`], one at a time while the gateway
//! needs legacy matching, where the bridge serialises requests anyway). Once a row is
//! settled its key's next row is claimed and sent at once, within the batch (up to the
//! batch's size shared among its keys), and a batch that settled anything is followed
//! by the next at once: a backlog drains at the chain's pace, and the poll interval
//! only paces an idle relay.
//!
//! A gateway that never answers a record topic would make every row of it wait the
//! full send timeout, holding the bridge's legacy slot that operators need. Two remedies,
//! both here:
//!
//! - a circuit breaker per record topic ([`breaker`]): after
//!   [`RelayConfig::breaker_threshold`] consecutive timeouts the topic's rows stay
//!   pending (neither claimed nor charged an attempt) and one row is sent as a probe once
//!   per backoff period; any answer closes the breaker. [`RelayStatus::topics`] says how
//!   each topic stands.
//! - [`RecordReplies::None`] (`MES_RECORD_REPLIES=none`): record rows are published
//!   without waiting for a reply ([`Bridge::publish`]) and done once the broker
//!   acknowledges them.
//!
//! Database calls are blocking diesel calls and run on tokio's blocking pool.

pub mod breaker;
mod metrics;

use self::metrics::Stats;

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::result::Error as DieselError;
use futures::StreamExt;
use mes_core::codec::{ReplyBody, Request, Topic};
use mes_core::db::Pool;
use mes_core::db::outbox::{self, OutboxRow};
use mes_core::redact::redact;
use tokio::sync::Notify;
use tokio::time::Instant;

use self::breaker::{Admission, Breaker, BreakerConfig, BreakerState, Outcome};
use crate::bridge::{Bridge, CallOptions, CorrelationMode, Echo, Exchange, Priority, Published};
use crate::{Error, Result};

/// Longest error text stored in a row or kept in the status: a chain or librdkafka
/// message is short, but nothing should let one row's error grow without bound.
const MAX_ERROR_CHARS: usize = 1000;

/// How a [`Relay`] works; [`RelayConfig::default`] suits one server on one machine.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Name in the logs, e.g. to tell two relays of one process apart.
    pub name: String,
    /// Most rows claimed at once (default 32).
    pub batch_size: u32,
    /// Most rows of one batch sent at the same time (default 8). Rows of one ordering
    /// key never are: a batch holds at most one of them.
    pub concurrency: usize,
    /// How long claimed rows belong to this relay (default 60 s). A row not settled by
    /// then is claimed again by whichever relay comes first: this is how the rows of a
    /// crashed relay come back. Must exceed [`RelayConfig::send_timeout`].
    pub lease: Duration,
    /// How often the relay looks for due rows when nobody calls [`Relay::notify`]
    /// (default 1 s).
    pub poll_interval: Duration,
    /// Wait before the second attempt of a row the chain did not answer (default 1 s);
    /// doubled after every further attempt, up to [`RelayConfig::backoff_max`], each
    /// wait drawn at random from its upper half so that rows failed together do not
    /// come back together.
    pub backoff_base: Duration,
    /// Longest wait between attempts (default 5 min).
    pub backoff_max: Duration,
    /// Deadline of one send, from publishing to the chain's answer (default 10 s).
    pub send_timeout: Duration,
    /// Consecutive timeouts on a record topic that put it on hold (default 3; 0 never
    /// does): see [`breaker`].
    pub breaker_threshold: u32,
    /// Wait before the first probe of a topic on hold (default 30 s); doubled after
    /// every unanswered probe.
    pub breaker_backoff: Duration,
    /// Longest wait between two probes (default 5 min).
    pub breaker_backoff_max: Duration,
    /// Whether record rows wait for the chain's answer (default) or are done once the
    /// broker has them (`MES_RECORD_REPLIES`).
    pub record_replies: RecordReplies,
}

/// Whether the relay waits for the chain's reply to `BLK_Rty`/`BLK_Rec` messages.
///
/// Some gateways (the original's among them) never answer record topics: waiting for
/// them only costs each row the send timeout. `None` trades the chain's confirmation
/// for the broker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordReplies {
    /// Wait for the chain's answer; a row is done when the chain confirms it.
    #[default]
    Wait,
    /// Publish and await only the broker's acknowledgement (`acks=all`, idempotent
    /// producer): no legacy slot, no pending reply. Chain errors are not seen.
    None,
}

impl FromStr for RecordReplies {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "wait" => Ok(RecordReplies::Wait),
            "none" => Ok(RecordReplies::None),
            _ => Err(Error::Config(format!(
                "record replies must be wait or none, got {s:?}"
            ))),
        }
    }
}

impl fmt::Display for RecordReplies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordReplies::Wait => "wait",
            RecordReplies::None => "none",
        })
    }
}

/// What a row delivered without a reply is settled with.
pub const PUBLISHED_TEXT: &str = "published (no reply awaited)";

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            name: "outbox-relay".to_owned(),
            batch_size: 32,
            concurrency: 8,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            send_timeout: Duration::from_secs(10),
            breaker_threshold: 3,
            breaker_backoff: Duration::from_secs(30),
            breaker_backoff_max: Duration::from_secs(300),
            record_replies: RecordReplies::Wait,
        }
    }
}

impl RelayConfig {
    fn validate(&self) -> Result<()> {
        let fail = |why: &str| Err(Error::Config(format!("relay {}: {why}", self.name)));
        if self.batch_size == 0 || self.concurrency == 0 {
            return fail("batch_size and concurrency must be at least 1");
        }
        if self.lease <= self.send_timeout + LEASE_MARGIN_MIN {
            return fail("the lease must exceed the send timeout by at least one second");
        }
        if self.lease > MAX_LEASE || self.send_timeout.is_zero() {
            return fail("the lease must be at most a day and the send timeout positive");
        }
        if self.poll_interval.is_zero() || self.backoff_base.is_zero() {
            return fail("poll_interval and backoff_base must be positive");
        }
        if self.backoff_max < self.backoff_base {
            return fail("backoff_max must not be below backoff_base");
        }
        if self.breaker_backoff.is_zero() || self.breaker_backoff_max < self.breaker_backoff {
            return fail("breaker_backoff must be positive and breaker_backoff_max not below it");
        }
        Ok(())
    }

    fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            threshold: self.breaker_threshold,
            backoff: self.breaker_backoff,
            backoff_max: self.breaker_backoff_max,
        }
    }

    /// Time kept free at the end of a lease for settling the row.
    fn lease_margin(&self) -> Duration {
        (self.lease / 10).max(LEASE_MARGIN_MIN)
    }
}

/// The longest lease accepted: a crashed relay's rows would wait that long.
const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);

/// The least time kept free at the end of a lease to settle a row.
const LEASE_MARGIN_MIN: Duration = Duration::from_secs(1);

type TokenFn = dyn Fn() -> std::result::Result<Option<String>, String> + Send + Sync;

/// Where the relay gets the master token (docs/protocol.md §2 `auth`), asked before
/// every batch so that a token set or changed at runtime is used at once.
///
/// It is called on the blocking pool, so it may read the database. Its value is never
/// logged.
#[derive(Clone)]
pub struct TokenSource(Arc<TokenFn>);

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSource(..)")
    }
}

impl TokenSource {
    /// Always this token.
    pub fn fixed(token: impl Into<String>) -> TokenSource {
        let token = token.into();
        TokenSource(Arc::new(move || Ok(Some(token.clone()))))
    }

    /// Whatever `token` returns; `None` (or an empty string) means "not configured yet".
    pub fn from_fn(token: impl Fn() -> Option<String> + Send + Sync + 'static) -> TokenSource {
        TokenSource(Arc::new(move || Ok(token())))
    }

    /// Whatever `token` returns, where reading it may fail (the error text is logged,
    /// so it must not hold the token); `Ok(None)` means "not configured yet".
    pub fn try_from_fn(
        token: impl Fn() -> std::result::Result<Option<String>, String> + Send + Sync + 'static,
    ) -> TokenSource {
        TokenSource(Arc::new(token))
    }

    fn get(&self) -> std::result::Result<Option<String>, String> {
        (self.0)().map(|token| token.filter(|t| !t.is_empty()))
    }
}

/// A copy of a relay's counters and its last error, read from the same metrics as
/// `/metrics`, for `/health/ready`, the console and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStatus {
    /// Rows handed to the bridge (every attempt counts).
    pub sent: u64,
    /// Rows marked done.
    pub done: u64,
    /// Rows marked failed (chain error or not a request).
    pub failed: u64,
    /// Rows put back for a later attempt (no answer, or the relay stopping).
    pub retried: u64,
    /// Database errors (claiming, settling, reading the token).
    pub database_errors: u64,
    /// Batches run, empty ones included: a relay whose count stands still is stuck.
    pub passes: u64,
    /// The last thing that went wrong: an unanswered send, a chain error, a database
    /// error. Never contains the token.
    pub last_error: Option<String>,
    /// What kind of thing [`RelayStatus::last_error`] is, without its text (which may
    /// be the chain's): `refused` (the chain refused a row), `no_answer` (a send got
    /// no answer: timeout, broker), `database`. For surfaces that need no key
    /// (`/health/ready`), which show states, not chain texts.
    pub last_error_kind: Option<&'static str>,
    /// No master token is configured: the relay claims nothing until there is one.
    pub waiting_for_token: bool,
    /// Rows put back unsent because their topic is on hold (no attempt spent).
    pub held: u64,
    /// Each record topic's breaker, `BLK_Rty` then `BLK_Rec`.
    pub topics: Vec<RecordTopicStatus>,
}

/// How the relay stands with one record topic, for `/health/ready`, `/metrics` and the
/// console ("the chain has not answered BLK_Rec since 10:42; next try 10:52").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordTopicStatus {
    /// The topic.
    pub topic: Topic,
    /// The Kafka topic its rows are sent to (the configured name).
    pub name: String,
    /// Its breaker's state.
    pub state: BreakerState,
    /// Sends in a row that got no answer.
    pub consecutive_timeouts: u32,
}

impl RecordTopicStatus {
    /// Since when the chain has not answered, while the topic is on hold.
    pub fn since(&self) -> Option<DateTime<Utc>> {
        match self.state {
            BreakerState::Closed => None,
            BreakerState::Open { since, .. } | BreakerState::HalfOpen { since, .. } => Some(since),
        }
    }

    /// When the next probe goes (open), or went (half-open: being sent now).
    pub fn next_try(&self) -> Option<DateTime<Utc>> {
        match self.state {
            BreakerState::Closed => None,
            BreakerState::Open { next_probe, .. } => Some(next_probe),
            BreakerState::HalfOpen { probing_since, .. } => Some(probing_since),
        }
    }
}

/// What one [`Relay::run_once`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Batch {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows marked done.
    pub done: usize,
    /// Rows marked failed.
    pub failed: usize,
    /// Rows put back for a later attempt.
    pub retried: usize,
    /// Nothing was claimed because there is no master token.
    pub waiting_for_token: bool,
    /// Rows put back unsent because their topic is on hold.
    pub held: usize,
}

/// The topics with a breaker: those the chain may leave unanswered.
const RECORD_TOPICS: [Topic; 2] = [Topic::RecordType, Topic::Record];

struct Inner {
    pool: Pool,
    bridge: Bridge,
    token: TokenSource,
    config: RelayConfig,
    wake: Notify,
    stopping: AtomicBool,
    stats: Stats,
    breakers: Mutex<Vec<(Topic, Breaker)>>,
}

/// Delivers the outbox to the chain; see the module documentation.
///
/// Cheap to clone (an `Arc`): keep a clone to call [`Relay::notify`] after enqueuing
/// and [`Relay::status`] for metrics while another runs [`Relay::run`]. Several relays,
/// in one process or many, may share a database: a row is claimed by one at a time.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// How one row ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Delivered: the chain's message (or its "already exists").
    Done(String),
    /// The chain refused it, or it is no request: never retried.
    Failed(String),
    /// No answer: try again after a backoff.
    Retry(String),
    /// Not sent, through no fault of the row (relay stopping, lease over): due again now.
    Release(String),
    /// Not sent because its topic is on hold: pending, no attempt spent.
    Held(String),
}

impl Relay {
    /// A relay delivering the outbox of `pool` through `bridge`, authenticating with
    /// `token`. Nothing runs until [`Relay::run`] or [`Relay::run_once`].
    pub fn new(
        pool: Pool,
        bridge: Bridge,
        token: TokenSource,
        config: RelayConfig,
    ) -> Result<Relay> {
        config.validate()?;
        let breakers = RECORD_TOPICS
            .iter()
            .map(|t| (*t, Breaker::new(config.breaker())))
            .collect();
        Ok(Relay {
            inner: Arc::new(Inner {
                pool,
                bridge,
                token,
                config,
                wake: Notify::new(),
                stopping: AtomicBool::new(false),
                stats: Stats::default(),
                breakers: Mutex::new(breakers),
            }),
        })
    }

    /// Wakes the relay now instead of at its next poll, e.g. right after enqueuing. A
    /// wake-up while a batch is running starts the next batch at once.
    pub fn notify(&self) {
        self.inner.wake.notify_one();
    }

    /// A copy of the counters.
    pub fn status(&self) -> RelayStatus {
        let s = &self.inner.stats;
        let (last_error_kind, last_error) = lock(&s.last_error)
            .clone()
            .map_or((None, None), |(kind, text)| (Some(kind), Some(text)));
        RelayStatus {
            sent: s.sent.get(),
            done: s.done.get(),
            failed: s.failed.get(),
            retried: s.retried.get(),
            database_errors: s.database_errors.get(),
            passes: s.passes.get(),
            last_error,
            last_error_kind,
            waiting_for_token: s.waiting_for_token.get() == 1,
            held: s.held.get(),
            topics: lock(&self.inner.breakers)
                .iter()
                .map(|(topic, breaker)| RecordTopicStatus {
                    topic: *topic,
                    name: self.inner.bridge.config().topics.request(*topic).to_owned(),
                    state: breaker.state(),
                    consecutive_timeouts: breaker.consecutive_timeouts(),
                })
                .collect(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &RelayConfig {
        &self.inner.config
    }

    /// Runs until `shutdown` completes: a batch whenever rows may be due (at once after
    /// a batch that settled a row, else at the next poll or [`Relay::notify`]).
    ///
    /// On shutdown the batch in progress stops sending; rows it has not sent go back to
    /// pending at once, rows being sent are settled when their answer comes (within the
    /// send timeout). Database errors are logged and retried after a growing pause;
    /// nothing ends the loop but `shutdown`.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let config = &self.inner.config;
        tracing::info!(relay = %config.name, "outbox relay started");
        let mut shutdown = std::pin::pin!(shutdown);
        let mut stopping = false;
        let mut failures: u32 = 0;
        while !stopping {
            let pass = {
                let mut batch = std::pin::pin!(self.run_once());
                tokio::select! {
                    pass = &mut batch => pass,
                    () = &mut shutdown => {
                        stopping = true;
                        self.inner.stopping.store(true, Ordering::Relaxed);
                        batch.await
                    }
                }
            };
            if stopping {
                break;
            }
            let pause = match pass {
                Ok(batch) => {
                    failures = 0;
                    // A settled row may have made its key's next row due (and a full
                    // batch left rows behind): claim again at once. A batch that only
                    // put rows back (broker down, topic on hold) waits, or the relay
                    // would spin on rows it cannot deliver.
                    if batch.done + batch.failed > 0 {
                        continue;
                    }
                    config.poll_interval
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    // Logged at the first failure, then less and less often.
                    if failures.is_power_of_two() {
                        tracing::error!(relay = %config.name, failures, "outbox relay: {e}");
                    }
                    (config.poll_interval * failures).min(config.backoff_max)
                }
            };
            tokio::select! {
                () = &mut shutdown => stopping = true,
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
        self.inner.stopping.store(false, Ordering::Relaxed);
        tracing::info!(relay = %config.name, "outbox relay stopped");
    }

    /// One batch: reads the token, claims due rows, sends them and settles each.
    ///
    /// Without a token it claims nothing (and logs that once). An error means the batch
    /// could not be claimed (database down); errors of single rows are settled on the
    /// rows and counted in [`Relay::status`].
    pub async fn run_once(&self) -> Result<Batch> {
        let inner = &self.inner;
        inner.stats.passes.inc();
        let token_source = inner.token.clone();
        let token = blocking(move || token_source.get().map_err(Error::Database)).await;
        let token = match token {
            Ok(token) => token,
            Err(e) => {
                inner.count_database_error(&e);
                return Err(e);
            }
        };
        let Some(token) = token else {
            if inner.stats.waiting_for_token.set(1) == 0 {
                tracing::warn!(
                    relay = %inner.config.name,
                    "no master token is configured: the outbox waits until there is one"
                );
            }
            return Ok(Batch {
                waiting_for_token: true,
                ..Batch::default()
            });
        };
        if inner.stats.waiting_for_token.set(0) == 1 {
            tracing::info!(relay = %inner.config.name, "master token found: delivering the outbox");
        }

        let claimed_at = Instant::now();
        let pool = inner.pool.clone();
        let limit = i64::from(inner.config.batch_size);
        let lease = chrono::Duration::from_std(inner.config.lease)
            .map_err(|e| Error::Config(format!("lease: {e}")))?;
        let held = inner.held_topics(Utc::now());
        let rows = blocking(move || {
            let mut conn = pool.get().map_err(|e| Error::Database(e.to_string()))?;
            outbox::claim_due_except(&mut conn, mes_core::db::now(), limit, lease, &held)
                .map_err(|e| Error::Database(format!("claiming due rows: {e}")))
        })
        .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                inner.count_database_error(&e);
                return Err(e);
            }
        };
        let mut batch = Batch {
            claimed: rows.len(),
            ..Batch::default()
        };
        if rows.is_empty() {
            return Ok(batch);
        }
        let parallel = inner.parallel_sends();
        // Each key's rows in this batch, its first included: the batch's size shared
        // among the keys it claimed, so a batch stays about `batch_size` rows long.
        let per_key = (batch_size(&inner.config) / rows.len()).max(1);
        tracing::debug!(relay = %inner.config.name, rows = rows.len(), parallel, per_key, "claimed");
        let token = Arc::new(token);
        let mut settled = futures::stream::iter(rows)
            .map(|row| {
                let token = Arc::clone(&token);
                async move { inner.deliver_key(row, &token, claimed_at, per_key).await }
            })
            .buffer_unordered(parallel);
        while let Some(key_batch) = settled.next().await {
            batch.add(&key_batch);
        }
        Ok(batch)
    }
}

fn batch_size(config: &RelayConfig) -> usize {
    usize::try_from(config.batch_size).unwrap_or(usize::MAX)
}

impl Batch {
    fn count(&mut self, verdict: Option<&Verdict>) {
        match verdict {
            Some(Verdict::Done(_)) => self.done += 1,
            Some(Verdict::Failed(_)) => self.failed += 1,
            Some(Verdict::Retry(_) | Verdict::Release(_)) => self.retried += 1,
            Some(Verdict::Held(_)) => self.held += 1,
            None => {}
        }
    }

    fn add(&mut self, other: &Batch) {
        self.claimed += other.claimed;
        self.done += other.done;
        self.failed += other.failed;
        self.retried += other.retried;
        self.held += other.held;
    }
}

impl Inner {
    /// How many rows of a batch may be sent at once: one while replies are matched by
    /// token (the bridge sends one request at a time then, and the others would spend
    /// their deadline waiting for the slot).
    fn parallel_sends(&self) -> usize {
        // Published rows wait for no reply, hence for no slot (the outbox holds only
        // record rows).
        if self.config.record_replies == RecordReplies::None {
            return self.config.concurrency;
        }
        let serial = match self.bridge.config().correlation {
            CorrelationMode::Legacy => true,
            CorrelationMode::Id => false,
            CorrelationMode::Auto => self.bridge.echo() != Echo::Echoes,
        };
        if serial { 1 } else { self.config.concurrency }
    }

    /// Delivers `row`, claimed at `claimed_at`, then its ordering key's next rows one
    /// after the other, each as soon as the one before is settled for good (done or
    /// failed), up to `most` rows: a backlog on few keys goes out at the chain's pace,
    /// not at one row per key per batch. Order within the key holds (the next row is
    /// claimed only once the previous is settled), and each row has a lease of its own.
    /// The result's `claimed` counts the follow-on rows only (the first was counted
    /// when the batch claimed it).
    async fn deliver_key(
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
            let then = delivered < most && !self.stopping.load(Ordering::Relaxed);
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
                        idem: Some(row.dedup_key.clone()),
                        timeout: Some(self.config.send_timeout.min(left)),
                        // Operators go first for the legacy slot.
                        priority: Priority::Background,
                        receipt: None,
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

    /// Names (default and configured) of the topics on hold at `now`, for the claim.
    fn held_topics(&self, now: DateTime<Utc>) -> Vec<String> {
        let topics = &self.bridge.config().topics;
        let mut names = Vec::new();
        for (topic, breaker) in lock(&self.breakers).iter() {
            if breaker.holds(now) {
                names.push(topic.name().to_owned());
                let configured = topics.request(*topic);
                if configured != topic.name() {
                    names.push(configured.to_owned());
                }
            }
        }
        names
    }

    fn admit(&self, topic: Topic) -> Admission {
        let now = Utc::now();
        let mut breakers = lock(&self.breakers);
        let Some((_, breaker)) = breakers.iter_mut().find(|(t, _)| *t == topic) else {
            return Admission::Send;
        };
        let admission = breaker.admit(now);
        if admission == Admission::Probe {
            tracing::info!(relay = %self.config.name, topic = topic.name(), "probing a topic on hold with one row");
        }
        admission
    }

    fn record(&self, topic: Topic, outcome: Outcome, probe: bool) {
        let now = Utc::now();
        let mut breakers = lock(&self.breakers);
        let Some((_, breaker)) = breakers.iter_mut().find(|(t, _)| *t == topic) else {
            return;
        };
        let before = breaker.state();
        breaker.record(outcome, probe, now);
        let name = &self.config.name;
        match (before, breaker.state()) {
            (
                BreakerState::Closed,
                BreakerState::Open {
                    since, next_probe, ..
                },
            ) => {
                tracing::warn!(
                    relay = %name,
                    topic = topic.name(),
                    %since,
                    %next_probe,
                    "the chain does not answer this topic: its rows are on hold, probed once per backoff period"
                );
            }
            (BreakerState::Open { .. } | BreakerState::HalfOpen { .. }, BreakerState::Closed) => {
                tracing::info!(relay = %name, topic = topic.name(), "the chain answers this topic again: its rows go out");
            }
            _ => {}
        }
    }

    /// Why a held row waits, as stored in the row (times in UTC).
    fn hold_note(&self, topic: Topic) -> String {
        let status = lock(&self.breakers)
            .iter()
            .find(|(t, _)| *t == topic)
            .map(|(_, b)| b.state());
        let (since, next) = match status {
            Some(BreakerState::Open {
                since, next_probe, ..
            }) => (since, next_probe),
            Some(BreakerState::HalfOpen {
                since,
                probing_since,
                ..
            }) => (since, probing_since),
            _ => return format!("on hold: {} is being probed", topic.name()),
        };
        format!(
            "on hold: the chain has not answered {} since {} UTC; next try {} UTC",
            topic.name(),
            since.format("%H:%M:%S"),
            next.format("%H:%M:%S"),
        )
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
                Verdict::Retry(truncate(&redact(&text, token), MAX_ERROR_CHARS))
            }
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
            (Verdict::Done(_) | Verdict::Failed(_), Ok(lease)) if then => Some((
                row.ordering_key.clone(),
                lease,
                self.held_topics(Utc::now()),
            )),
            _ => None,
        };
        let pool = self.pool.clone();
        let write = verdict.clone();
        let written = blocking(move || {
            let mut conn = pool.get().map_err(|e| Error::Database(e.to_string()))?;
            let settle = |conn: &mut mes_core::db::DbConnection| match &write {
                Verdict::Done(message) => outbox::mark_done(conn, id, Some(message)),
                Verdict::Failed(error) => outbox::mark_failed(conn, id, error),
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
                tracing::info!(relay = %name, id, "outbox row was settled by another relay");
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
                tracing::debug!(relay = %name, id, "outbox row delivered");
            }
            Verdict::Failed(error) => {
                stats.failed.inc();
                tracing::warn!(relay = %name, id, dedup_key = %row.dedup_key, "outbox row failed: {error}");
                self.last_error("refused", error);
            }
            Verdict::Retry(error) => {
                stats.retried.inc();
                tracing::info!(relay = %name, id, attempts = row.attempts, "outbox row retried later: {error}");
                self.last_error("no_answer", error);
            }
            Verdict::Release(_) => {
                stats.retried.inc();
            }
            Verdict::Held(_) => {
                stats.held.inc();
            }
        }
        (Some(verdict), claimed)
    }

    fn last_error(&self, kind: &'static str, error: &str) {
        *lock(&self.stats.last_error) = Some((kind, error.to_owned()));
    }

    fn count_database_error(&self, error: &Error) {
        self.stats.database_errors.inc();
        self.last_error("database", &error.to_string());
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs blocking `f` (diesel, r2d2) on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::Database(format!("database task failed: {e}"))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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
    fn configs_that_cannot_work_are_refused() {
        assert!(RelayConfig::default().validate().is_ok());
        let bad = [
            RelayConfig {
                batch_size: 0,
                ..RelayConfig::default()
            },
            RelayConfig {
                concurrency: 0,
                ..RelayConfig::default()
            },
            RelayConfig {
                lease: Duration::from_secs(10),
                send_timeout: Duration::from_secs(10),
                ..RelayConfig::default()
            },
            RelayConfig {
                poll_interval: Duration::ZERO,
                ..RelayConfig::default()
            },
            RelayConfig {
                backoff_max: Duration::from_millis(10),
                ..RelayConfig::default()
            },
            RelayConfig {
                breaker_backoff: Duration::ZERO,
                ..RelayConfig::default()
            },
            RelayConfig {
                breaker_backoff_max: Duration::from_secs(1),
                ..RelayConfig::default()
            },
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(Error::Config(_))),
                "{config:?}"
            );
        }
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

    #[test]
    fn record_replies_read_wait_or_none() {
        assert_eq!(
            "wait".parse::<RecordReplies>().unwrap(),
            RecordReplies::Wait
        );
        assert_eq!(
            " None ".parse::<RecordReplies>().unwrap(),
            RecordReplies::None
        );
        assert!(matches!(
            "never".parse::<RecordReplies>(),
            Err(Error::Config(_))
        ));
        assert_eq!(RecordReplies::default().to_string(), "wait");
        assert_eq!(RecordReplies::None.to_string(), "none");
    }

    #[test]
    fn token_sources_treat_empty_as_missing() {
        assert_eq!(TokenSource::fixed("T").get(), Ok(Some("T".into())));
        assert_eq!(TokenSource::fixed("").get(), Ok(None));
        assert_eq!(TokenSource::from_fn(|| None).get(), Ok(None));
        assert_eq!(
            format!("{:?}", TokenSource::fixed("secret")),
            "TokenSource(..)"
        );
    }
}
