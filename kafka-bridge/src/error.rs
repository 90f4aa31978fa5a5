//! The crate's error type.

use std::time::Duration;

/// Everything a bridge call can fail with, typed so the server can map each to an
/// HTTP status (504, 503, 502, …) without parsing text.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The chain did not answer within the deadline (waiting for a slot included).
    #[error("the chain did not answer within {0:?}")]
    Timeout(Duration),
    /// Too many requests in flight; try again later.
    #[error("too many requests in flight (limit {0})")]
    Overloaded(usize),
    /// The broker could not be reached or refused the message.
    #[error("Kafka broker unavailable: {0}")]
    BrokerUnavailable(String),
    /// The chain answered with an error.
    #[error("the chain answered with an error: {message}")]
    Chain {
        /// The chain's error text.
        message: String,
        /// Its machine-readable code (docs/protocol.md §6), if the gateway sent one.
        code: Option<String>,
    },
    /// The chain answered, but not with what this request expects (e.g. no `data`).
    #[error("unexpected answer from the chain: {0}")]
    UnexpectedReply(String),
    /// The configuration is invalid (bad librdkafka setting, bad topic name, …).
    #[error("invalid Kafka configuration: {0}")]
    Config(String),
    /// The database failed (the outbox relay claims and settles rows there).
    #[error("database error: {0}")]
    Database(String),
    /// Behind a gateway that echoes only the token, an earlier request of the same
    /// shape (list, or answer/record) ended without its reply, which may still come:
    /// until it does (or [`crate::bridge::BridgeConfig::legacy_fence_max`] passes), a
    /// new request of that shape could be handed that reply, so none is sent. Nothing
    /// was sent for this call; try again shortly.
    #[error(
        "the chain has not yet answered an earlier request; try again shortly \
         ({shape} requests wait for a reply outstanding for {waited:?})"
    )]
    ChainBehind {
        /// The shape that is fenced.
        shape: crate::bridge::Shape,
        /// How long the outstanding reply has been awaited.
        waited: Duration,
        /// How long until the fence lifts by itself at the latest.
        retry_after: Duration,
    },
    /// An operator's answer was sent, and the broker has it, while background work's
    /// reply of the same shape was outstanding behind a gateway that echoes only the
    /// token: the answer's reply could not be told from that one, so it was not
    /// waited for. Its outcome is to be read from the chain's state (the request list).
    #[error(
        "sent; its reply cannot be told from an earlier one behind this gateway: \
         confirm it from the chain's request list"
    )]
    Unconfirmed,
    /// The bridge is shutting down.
    #[error("the bridge is shutting down")]
    Shutdown,
}

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
