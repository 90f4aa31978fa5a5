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
//!   acknowledges them. Nothing then says when the chain read a row, and Kafka orders
//!   rows only within one partition of one topic (a unit's record type and records
//!   travel on two), so these keys keep the poll's pace between rows instead of going
//!   back to back.
//!
//! Database calls are blocking diesel calls and run on tokio's blocking pool.

pub mod breaker;
mod config;
mod deliver;
mod metrics;
mod record_topics;

use self::metrics::Stats;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use futures::StreamExt;
use mes_core::codec::Topic;
use mes_core::db::Pool;
use mes_core::db::outbox;
use tokio::sync::Notify;
use tokio::time::Instant;

pub use self::config::{DEFAULT_MAX_AGE, RecordReplies, RelayConfig, TokenSource};
pub use self::deliver::PUBLISHED_TEXT;
pub use self::record_topics::RecordTopicStatus;

use self::breaker::Breaker;
use self::deliver::Verdict;
use self::record_topics::RECORD_TOPICS;
use crate::bridge::{Bridge, CorrelationMode, Echo};
use crate::{Error, Result};

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
                    // Published rows (`RecordReplies::None`) keep the poll's pace
                    // within a key (see `deliver_key`): only a full batch goes on at once.
                    let settled = batch.done + batch.failed > 0;
                    let full = batch.claimed >= batch_size(config);
                    if settled && (config.record_replies != RecordReplies::None || full) {
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

        let overdue = inner.fail_overdue().await;
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
            failed: overdue,
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

/// Most overdue rows failed per pass.
const OVERDUE_BATCH: i64 = 500;

fn batch_size(config: &RelayConfig) -> usize {
    usize::try_from(config.batch_size).unwrap_or(usize::MAX)
}

impl Batch {
    fn count(&mut self, verdict: Option<&Verdict>) {
        match verdict {
            Some(Verdict::Done(_)) => self.done += 1,
            Some(Verdict::Failed(_) | Verdict::Capped(_)) => self.failed += 1,
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
    /// Fails the pending rows older than [`RelayConfig::max_age`] (rows no attempt
    /// settles: their topic on hold, or behind a stuck row of their key); how many. A
    /// database error is counted and left for the next pass.
    async fn fail_overdue(&self) -> usize {
        let Some(age) = self.config.max_age else {
            return 0;
        };
        let Some(cutoff) = chrono::Duration::from_std(age)
            .ok()
            .and_then(|age| mes_core::db::now().checked_sub_signed(age))
        else {
            return 0;
        };
        let why = deliver::age_reason(age);
        let pool = self.pool.clone();
        let failed = blocking(move || {
            let mut conn = pool.get().map_err(|e| Error::Database(e.to_string()))?;
            outbox::fail_overdue(&mut conn, cutoff, &why, OVERDUE_BATCH)
                .map_err(|e| Error::Database(format!("failing overdue rows: {e}")))
        })
        .await;
        match failed {
            Ok(rows) => {
                for row in &rows {
                    self.stats.failed.inc();
                    self.stats.delivery(&row.topic, "capped");
                    tracing::warn!(relay = %self.config.name, id = row.id, dedup_key = %row.dedup_key, "outbox row failed: {}", row.last_error.as_deref().unwrap_or_default());
                }
                rows.len()
            }
            Err(e) => {
                self.count_database_error(&e);
                0
            }
        }
    }

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
