//! How a relay is set up: [`RelayConfig`] (checked by
//! [`Relay::new`](super::Relay::new)), whether record rows wait for the chain's reply
//! ([`RecordReplies`]), and where the master token comes from ([`TokenSource`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::breaker::BreakerConfig;
use crate::{Error, Result};

/// How a [`Relay`](super::Relay) works; [`RelayConfig::default`] suits one server on
/// one machine.
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
    /// How often the relay looks for due rows when nobody calls
    /// [`Relay::notify`](super::Relay::notify) (default 1 s).
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
    /// does): see [`breaker`](super::breaker).
    pub breaker_threshold: u32,
    /// Wait before the first probe of a topic on hold (default 30 s); doubled after
    /// every unanswered probe.
    pub breaker_backoff: Duration,
    /// Longest wait between two probes (default 5 min).
    pub breaker_backoff_max: Duration,
    /// Whether record rows wait for the chain's answer (default) or are done once the
    /// broker has them (`MES_RECORD_REPLIES`).
    pub record_replies: RecordReplies,
    /// Attempts after which a row the chain never answered is failed for good, with the
    /// reason (`MES_OUTBOX_MAX_ATTEMPTS`; default `None`, no limit).
    pub max_attempts: Option<u32>,
    /// Age after which an undelivered row is failed for good, with the reason
    /// (`MES_OUTBOX_MAX_AGE`; default 7 days, `None` no limit). A row an operator
    /// retried counts its age from the retry.
    pub max_age: Option<Duration>,
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
            max_attempts: None,
            max_age: Some(DEFAULT_MAX_AGE),
        }
    }
}

impl RelayConfig {
    pub(super) fn validate(&self) -> Result<()> {
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
        if self.max_attempts == Some(0) || self.max_age.is_some_and(|age| age.is_zero()) {
            return fail("max_attempts and max_age must be positive (None: no limit)");
        }
        if self.breaker_backoff.is_zero() || self.breaker_backoff_max < self.breaker_backoff {
            return fail("breaker_backoff must be positive and breaker_backoff_max not below it");
        }
        Ok(())
    }

    pub(super) fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            threshold: self.breaker_threshold,
            backoff: self.breaker_backoff,
            backoff_max: self.breaker_backoff_max,
        }
    }

    /// Time kept free at the end of a lease for settling the row.
    pub(super) fn lease_margin(&self) -> Duration {
        (self.lease / 10).max(LEASE_MARGIN_MIN)
    }
}

/// Default of [`RelayConfig::max_age`]: a week.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

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

    pub(super) fn get(&self) -> std::result::Result<Option<String>, String> {
        (self.0)().map(|token| token.filter(|t| !t.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

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
