//! What a bridge is configured with, and what each call may ask for.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use mes_core::codec::DEFAULT_MAX_REPLY_BYTES;
use mes_core::domain::AgentKey;
use mes_core::signing::SigningKey;

use super::Priority;
use crate::kafka::{KafkaConfig, TopicNames};
use crate::trace::TraceParent;
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

/// Everything a [`Bridge`](super::Bridge) needs; [`BridgeConfig::new`] gives defaults
/// that work on one machine.
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
    /// The trace this call continues: its record's `traceparent` is a child of it.
    /// `None`: the [current](crate::trace::current) task's trace, else a new one.
    /// The relay passes the trace stored with an outbox row.
    pub trace: Option<TraceParent>,
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

    pub(super) fn mark(&self) {
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
