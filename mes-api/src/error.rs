//! The HTTP error type: one status and one stable machine-readable code per failure,
//! always answered as `{"error": {"code": "...", "message": "..."}}`.
//!
//! Request guards cannot hand a value to a catcher in Rocket 0.5, so a guard that
//! fails [`stash`]es its [`ApiError`] in the request's local cache and the catchers
//! ([`catchers()`]) answer with it; Rocket's own failures (no route, unparsable body)
//! get a generic error with the same shape.

use std::sync::Mutex;

use rocket::http::{ContentType, Status};
use rocket::response::{self, Responder};
use rocket::serde::json::Json;
use rocket::{Catcher, Request, Response, catch, catchers};
use serde::Serialize;
use utoipa::ToSchema;

/// Result of a route.
pub type ApiResult<T> = Result<T, ApiError>;

/// The stable codes of [`ApiError`]; clients match on these, never on messages.
pub mod code {
    /// A query parameter is missing.
    pub const MISSING_PARAMETER: &str = "missing_parameter";
    /// A parameter or path segment is malformed (e.g. a request id with a `/`).
    pub const INVALID_PARAMETER: &str = "invalid_parameter";
    /// The request body is not the JSON the route expects.
    pub const INVALID_BODY: &str = "invalid_body";
    /// Any other malformed request.
    pub const BAD_REQUEST: &str = "bad_request";
    /// No `Authorization: Bearer` key, or an unknown one.
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// The key is valid but its role may not do this.
    pub const FORBIDDEN: &str = "forbidden";
    /// No such route or resource.
    pub const NOT_FOUND: &str = "not_found";
    /// The route exists but not for this method.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// The body is larger than the route accepts.
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// No `Master` token is configured (`mes-api token put --instance-type Master …`).
    pub const NO_MASTER_TOKEN: &str = "no_master_token";
    /// The chain answered with an error; its text is the message.
    pub const CHAIN_ERROR: &str = "chain_error";
    /// The chain answered, but not with what the request expects.
    pub const UNEXPECTED_REPLY: &str = "unexpected_reply";
    /// Kafka cannot be reached.
    pub const BROKER_UNAVAILABLE: &str = "broker_unavailable";
    /// Too many requests in flight; retry later.
    pub const OVERLOADED: &str = "overloaded";
    /// The database cannot be reached.
    pub const DATABASE_UNAVAILABLE: &str = "database_unavailable";
    /// Too many calls with this key, or too many unknown keys from this address; the
    /// answer's `Retry-After` says when to try again.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The server is shutting down.
    pub const SHUTTING_DOWN: &str = "shutting_down";
    /// The chain did not answer in time.
    pub const CHAIN_TIMEOUT: &str = "chain_timeout";
    /// Behind a gateway that echoes only the token, the chain has not yet answered an
    /// earlier request of the same kind; nothing was sent, try again shortly.
    pub const CHAIN_BEHIND: &str = "chain_behind";
    /// The resource exists already (e.g. a production unit with this code).
    pub const CONFLICT: &str = "conflict";
    /// A bug: nothing a client did or the network caused.
    pub const INTERNAL: &str = "internal";
}

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} ({status}): {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: Status,
    /// One of [`code`].
    pub code: &'static str,
    /// Human-readable detail; never holds a secret.
    pub message: String,
    /// The chain's own error code (docs/protocol.md §6), for [`code::CHAIN_ERROR`].
    pub chain_code: Option<String>,
    /// Seconds to wait before trying again, sent as `Retry-After` (429s).
    pub retry_after: Option<u64>,
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// `error` of [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `no_master_token`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// For `chain_error`: the chain's code (`not_open`, `not_found`, …) when it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_code: Option<String>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: Status, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            chain_code: None,
            retry_after: None,
        }
    }

    /// The same error, telling the client to wait `wait` (rounded up to whole seconds,
    /// at least one) before it tries again.
    #[must_use]
    pub fn retry_after(mut self, wait: std::time::Duration) -> ApiError {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        self.retry_after = Some(secs.max(1));
        self
    }

    /// 400 for a missing query parameter.
    pub fn missing(name: &str) -> ApiError {
        ApiError::new(
            Status::BadRequest,
            code::MISSING_PARAMETER,
            format!("the query parameter {name} is required"),
        )
    }

    /// 400 for a malformed parameter.
    pub fn invalid(name: &str, why: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            Status::BadRequest,
            code::INVALID_PARAMETER,
            format!("{name}: {why}"),
        )
    }

    /// 409: no master token.
    pub fn no_master_token() -> ApiError {
        ApiError::new(
            Status::Conflict,
            code::NO_MASTER_TOKEN,
            "no Master token is configured: run `mes-api token put --instance-type Master --token …` \
             or POST /api/tokens",
        )
    }

    /// 503 because the database failed; details go to the log, not to the client.
    pub fn database(e: impl std::fmt::Display) -> ApiError {
        tracing::warn!("database error: {e}");
        ApiError::new(
            Status::ServiceUnavailable,
            code::DATABASE_UNAVAILABLE,
            "the database is not available",
        )
    }

    /// 500 for a bug; details go to the log.
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!("internal error: {e}");
        ApiError::new(
            Status::InternalServerError,
            code::INTERNAL,
            "internal error (see the server log)",
        )
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
                chain_code: self.chain_code.clone(),
            },
        }
    }
}

impl From<kafka_bridge::Error> for ApiError {
    fn from(e: kafka_bridge::Error) -> ApiError {
        use kafka_bridge::Error as E;
        match e {
            E::Timeout(_) => {
                ApiError::new(Status::GatewayTimeout, code::CHAIN_TIMEOUT, e.to_string())
            }
            E::Overloaded(_) => {
                ApiError::new(Status::ServiceUnavailable, code::OVERLOADED, e.to_string())
            }
            E::BrokerUnavailable(_) => ApiError::new(
                Status::ServiceUnavailable,
                code::BROKER_UNAVAILABLE,
                e.to_string(),
            ),
            E::Chain { message, code } => ApiError {
                status: Status::BadGateway,
                code: code::CHAIN_ERROR,
                message,
                chain_code: code,
                retry_after: None,
            },
            E::UnexpectedReply(_) => {
                ApiError::new(Status::BadGateway, code::UNEXPECTED_REPLY, e.to_string())
            }
            E::ChainBehind { .. } => ApiError::new(
                Status::ServiceUnavailable,
                code::CHAIN_BEHIND,
                "the chain has not yet answered an earlier request; try again shortly",
            ),
            E::Shutdown => ApiError::new(
                Status::ServiceUnavailable,
                code::SHUTTING_DOWN,
                e.to_string(),
            ),
            // The answer service confirms these from the chain's list; anywhere else
            // the outcome is simply not known yet.
            E::Unconfirmed => {
                ApiError::new(Status::GatewayTimeout, code::CHAIN_TIMEOUT, e.to_string())
            }
            // Config errors are caught at start-up; later ones are bugs.
            other => ApiError::internal(other),
        }
    }
}

impl From<crate::service::requests::RequestError> for ApiError {
    fn from(e: crate::service::requests::RequestError) -> ApiError {
        use crate::service::requests::RequestError as E;
        match e {
            E::NoMasterToken => ApiError::no_master_token(),
            E::Chain(e) => e.into(),
            E::Database(e) => e.into(),
        }
    }
}

impl<'r> Responder<'r, 'static> for ApiError {
    fn respond_to(self, request: &'r Request<'_>) -> response::Result<'static> {
        let status = self.status;
        let mut response = Response::build_from(Json(self.body()).respond_to(request)?);
        response.status(status).header(ContentType::JSON);
        if let Some(secs) = self.retry_after {
            response.raw_header("Retry-After", secs.to_string());
        }
        response.ok()
    }
}

/// Where a failing guard leaves its error for the catcher.
#[derive(Default)]
struct Stashed(Mutex<Option<ApiError>>);

/// Leaves `error` for the catcher of this request and returns its status, for
/// `Outcome::Error((status, …))`.
pub fn stash(request: &Request<'_>, error: ApiError) -> Status {
    let status = error.status;
    let slot = request.local_cache(Stashed::default);
    if let Ok(mut slot) = slot.0.lock() {
        *slot = Some(error);
    }
    status
}

fn stashed(request: &Request<'_>) -> Option<ApiError> {
    request
        .local_cache(Stashed::default)
        .0
        .lock()
        .ok()
        .and_then(|mut slot| slot.take())
}

#[catch(default)]
fn default_catcher(status: Status, request: &Request<'_>) -> ApiError {
    if let Some(error) = stashed(request) {
        return error;
    }
    let (code, message) = match status.code {
        400 => (code::BAD_REQUEST, "the request is malformed".to_owned()),
        401 => (
            code::UNAUTHENTICATED,
            "an `Authorization: Bearer <key>` header is required".to_owned(),
        ),
        403 => (code::FORBIDDEN, "this key may not do that".to_owned()),
        404 => (
            code::NOT_FOUND,
            format!("no route for {} {}", request.method(), request.uri().path()),
        ),
        405 => (
            code::METHOD_NOT_ALLOWED,
            format!("{} is not allowed here", request.method()),
        ),
        413 => (code::PAYLOAD_TOO_LARGE, "the body is too large".to_owned()),
        // Rocket's JSON guard: well-formed JSON of the wrong shape.
        422 => (
            code::INVALID_BODY,
            "the body is not the JSON this route expects".to_owned(),
        ),
        500..=599 => (
            code::INTERNAL,
            "internal error (see the server log)".to_owned(),
        ),
        _ => (code::BAD_REQUEST, status.reason_lossy().to_owned()),
    };
    // A 422 is a bad request to clients: one status for every malformed input.
    let status = if status.code == 422 {
        Status::BadRequest
    } else {
        status
    };
    ApiError::new(status, code, message)
}

/// The catchers that answer every error, Rocket's own included, as JSON.
pub fn catchers() -> Vec<Catcher> {
    catchers![default_catcher]
}
