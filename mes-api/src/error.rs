//! The HTTP error type: [`ApiError`], whose [`ErrorCode`] is a stable machine-readable
//! code that carries its status, always answered as
//! `{"error": {"code": "...", "message": "..."}}`. The services' typed errors convert
//! into it (`From`), so routes use `?`; [`Errors`] lists a route's error answers in the
//! OpenAPI document from the [`ErrorSet`]s it may answer.
//!
//! Request guards cannot hand a value to a catcher in Rocket 0.5, so a guard that
//! fails [`stash`]es its [`ApiError`] in the request's local cache and the catchers
//! ([`catchers()`]) answer with it; Rocket's own failures (no route, unparsable body)
//! get a generic error with the same shape, and a method a known path does not take is
//! a 405 with `Allow` (the methods of the mounted routes at that path).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Mutex;

use rocket::http::{ContentType, Status};
use rocket::response::{self, Responder};
use rocket::serde::json::Json;
use rocket::{Catcher, Request, catch, catchers};
use serde::Serialize;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, response::Response};
use utoipa::{IntoResponses, ToSchema};

use crate::service::reports::ReportError;
use crate::service::requests::RequestError;
use crate::service::schedule::ScheduleError;
use crate::service::units::{ChainHook, UnitError};

/// Result of a route.
pub type ApiResult<T> = Result<T, ApiError>;

/// Declares [`ErrorCode`]: each code with its wire spelling (the variant's name in
/// snake_case, as serde writes it), its HTTP status and what it means (the variant's
/// doc, and its text in the OpenAPI document).
macro_rules! error_codes {
    ($($variant:ident = $code:literal, $status:ident, $meaning:literal;)*) => {
        /// The stable codes of [`ApiError`], each with its HTTP status; clients match on
        /// these, never on messages. Serialised as the snake_case strings.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $(#[doc = $meaning] $variant,)*
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code as clients see it, e.g. `no_master_token`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The HTTP status answered with this code.
            pub fn status(self) -> Status {
                match self {
                    $(ErrorCode::$variant => Status::$status,)*
                }
            }

            /// What the code means, for the OpenAPI document.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $meaning,)*
                }
            }
        }
    };
}

error_codes! {
    MissingParameter = "missing_parameter", BadRequest, "A query parameter is missing.";
    InvalidParameter = "invalid_parameter", BadRequest,
        "A parameter or path segment is malformed (e.g. a request id with a `/`).";
    InvalidBody = "invalid_body", BadRequest, "The request body is not the JSON the route expects.";
    BadRequest = "bad_request", BadRequest, "Any other malformed request.";
    Unauthenticated = "unauthenticated", Unauthorized,
        "No `Authorization: Bearer` key (or session), or an unknown one.";
    Forbidden = "forbidden", Forbidden, "The key is valid but its role may not do this.";
    NotFound = "not_found", NotFound, "No such route or resource.";
    MethodNotAllowed = "method_not_allowed", MethodNotAllowed,
        "The route exists but not for this method.";
    PayloadTooLarge = "payload_too_large", PayloadTooLarge,
        "The body is larger than the route accepts.";
    NoMasterToken = "no_master_token", Conflict,
        "No `Master` token is configured (`mes-api token put --instance-type Master …`).";
    Conflict = "conflict", Conflict,
        "The resource exists already (e.g. a production unit with this code), or the \
         request cannot be done yet (a daily run of a day that is not over).";
    RateLimited = "rate_limited", TooManyRequests,
        "Too many chain calls with this key (`MES_RATE_LIMIT_PER_SEC`), or too many unknown \
         keys from this address; `Retry-After` says when to try again. Nothing was sent.";
    Internal = "internal", InternalServerError,
        "A bug: nothing a client did or the network caused.";
    ChainError = "chain_error", BadGateway,
        "The chain answered with an error; its text is the message, its code `chain_code`.";
    UnexpectedReply = "unexpected_reply", BadGateway,
        "The chain answered, but not with what the request expects.";
    BrokerUnavailable = "broker_unavailable", ServiceUnavailable, "Kafka cannot be reached.";
    Overloaded = "overloaded", ServiceUnavailable, "Too many requests in flight; retry later.";
    DatabaseUnavailable = "database_unavailable", ServiceUnavailable,
        "The database cannot be reached.";
    ShuttingDown = "shutting_down", ServiceUnavailable, "The server is shutting down.";
    ChainBehind = "chain_behind", ServiceUnavailable,
        "Behind a gateway that echoes only the token, the chain has not yet answered an \
         earlier request of the same kind; nothing was sent, try again shortly.";
    ChainTimeout = "chain_timeout", GatewayTimeout, "The chain did not answer in time.";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} ({status}): {message}")]
pub struct ApiError {
    /// HTTP status: the code's, but for Rocket's own failures the catcher answers.
    pub status: Status,
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// Human-readable detail; never holds a secret.
    pub message: String,
    /// The chain's own error code (docs/protocol.md §6), for [`ErrorCode::ChainError`].
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
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// For `chain_error`: the chain's code (`not_open`, `not_found`, …) when it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_code: Option<String>,
}

impl ApiError {
    /// An error with `code`, answered with its status, and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: code.status(),
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
            ErrorCode::MissingParameter,
            format!("the query parameter {name} is required"),
        )
    }

    /// 400 for a malformed parameter.
    pub fn invalid(name: &str, why: impl std::fmt::Display) -> ApiError {
        ApiError::new(ErrorCode::InvalidParameter, format!("{name}: {why}"))
    }

    /// 409: no master token.
    pub fn no_master_token() -> ApiError {
        ApiError::new(
            ErrorCode::NoMasterToken,
            "no Master token is configured: run `mes-api token put --instance-type Master --token …` \
             or POST /api/tokens",
        )
    }

    /// 503 because the database failed; details go to the log, not to the client.
    pub fn database(e: impl std::fmt::Display) -> ApiError {
        tracing::warn!("database error: {e}");
        ApiError::new(
            ErrorCode::DatabaseUnavailable,
            "the database is not available",
        )
    }

    /// 500 for a bug; details go to the log.
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!("internal error: {e}");
        ApiError::new(ErrorCode::Internal, "internal error (see the server log)")
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
                chain_code: self.chain_code.clone(),
            },
        }
    }
}

impl From<kafka_bridge::Error> for ApiError {
    fn from(e: kafka_bridge::Error) -> ApiError {
        use kafka_bridge::Error as E;
        let code = match e {
            // The answer service confirms `Unconfirmed` from the chain's list; anywhere
            // else the outcome is simply not known yet.
            E::Timeout(_) | E::Unconfirmed => ErrorCode::ChainTimeout,
            E::Overloaded(_) => ErrorCode::Overloaded,
            E::BrokerUnavailable(_) => ErrorCode::BrokerUnavailable,
            E::Chain { message, code } => {
                return ApiError {
                    chain_code: code,
                    ..ApiError::new(ErrorCode::ChainError, message)
                };
            }
            E::UnexpectedReply(_) => ErrorCode::UnexpectedReply,
            E::ChainBehind { .. } => {
                return ApiError::new(
                    ErrorCode::ChainBehind,
                    "the chain has not yet answered an earlier request; try again shortly",
                );
            }
            E::Shutdown => ErrorCode::ShuttingDown,
            // Config errors are caught at start-up; later ones are bugs.
            other => return ApiError::internal(other),
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> ApiError {
        match e {
            RequestError::NoMasterToken => ApiError::no_master_token(),
            RequestError::Chain(e) => e.into(),
            RequestError::Database(e) => e.into(),
        }
    }
}

impl From<UnitError> for ApiError {
    fn from(e: UnitError) -> ApiError {
        match e {
            UnitError::NotFound(_) => ApiError::new(ErrorCode::NotFound, e.to_string()),
            UnitError::AlreadyExists(_) => ApiError::new(ErrorCode::Conflict, e.to_string()),
            UnitError::Invalid { .. } => ApiError::new(ErrorCode::InvalidBody, e.to_string()),
            // The chain hook only writes to the outbox: its failures are the database's.
            UnitError::Hook(hook) if hook.hook == ChainHook::NAME => ApiError::database(hook),
            UnitError::Hook(hook) => ApiError::new(ErrorCode::Conflict, hook.to_string()),
            UnitError::Database(e) => ApiError::database(e),
        }
    }
}

/// A report's date and values come in the body (`POST /api/DayReport`); the routes
/// that take a date in the query parse it themselves.
impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> ApiError {
        match e {
            ReportError::UnknownUnit(_) => ApiError::new(ErrorCode::NotFound, e.to_string()),
            ReportError::BadDate { .. }
            | ReportError::OutOfRange { .. }
            | ReportError::Invalid(_) => ApiError::new(ErrorCode::InvalidBody, e.to_string()),
            ReportError::AlreadySent { .. } => ApiError::new(ErrorCode::Conflict, e.to_string()),
            ReportError::LookbackTooLong { .. } => {
                ApiError::new(ErrorCode::InvalidParameter, e.to_string())
            }
            ReportError::Database(e) => ApiError::database(e),
        }
    }
}

/// The daily job's failures, should a route ever run it.
impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> ApiError {
        match e {
            ScheduleError::Report(e) => e.into(),
            ScheduleError::Pool(e) => ApiError::database(e),
            ScheduleError::Scheduler(_) => ApiError::internal(e),
            ScheduleError::InvalidCron { .. }
            | ScheduleError::NeverRuns(_)
            | ScheduleError::LookbackTooLong { .. } => {
                ApiError::new(ErrorCode::InvalidParameter, e.to_string())
            }
        }
    }
}

/// The error codes a route, or a guard it takes, may answer: its OpenAPI document lists
/// them with [`Errors`]. The guards' sets are theirs (`auth`); the routes' are below.
pub trait ErrorSet {
    /// The codes.
    const CODES: &'static [ErrorCode];
}

impl ErrorSet for () {
    const CODES: &'static [ErrorCode] = &[];
}

/// Declares marker types that are [`ErrorSet`]s.
macro_rules! error_sets {
    ($($(#[$meta:meta])* $name:ident = [$($code:ident),*];)*) => {
        $(
            $(#[$meta])*
            #[derive(Debug)]
            pub struct $name;

            impl ErrorSet for $name {
                const CODES: &'static [ErrorCode] = &[$(ErrorCode::$code),*];
            }
        )*
    };
}

error_sets! {
    /// Reads query or path parameters.
    Params = [InvalidParameter, MissingParameter];
    /// Reads a JSON body.
    Body = [InvalidBody];
    /// Looks up a resource that may not exist.
    Lookup = [NotFound];
    /// Creates a resource whose name may be taken.
    Unique = [Conflict];
    /// Works on the database without a guard that would have reached it first.
    Storage = [DatabaseUnavailable];
    /// Says whether the server is ready (`/health/ready`).
    NotReady = [DatabaseUnavailable, BrokerUnavailable];
    /// Calls the chain: with the master token, one key's rate, through the broker.
    ChainCall = [
        NoMasterToken, RateLimited, ChainError, UnexpectedReply, BrokerUnavailable, Overloaded,
        ChainBehind, ShuttingDown, ChainTimeout
    ];
}

/// The error answers of a route, for `responses(...)` in its `#[utoipa::path]`: the
/// codes of up to five [`ErrorSet`]s (`Errors<Writer, Params, ChainCall>`), grouped by
/// status, each status described by its codes, with body [`ErrorBody`]. Written once
/// here rather than as a list of statuses on every route.
#[derive(Debug)]
pub struct Errors<A, B = (), C = (), D = (), E = ()>(PhantomData<(A, B, C, D, E)>);

impl<A: ErrorSet, B: ErrorSet, C: ErrorSet, D: ErrorSet, E: ErrorSet> IntoResponses
    for Errors<A, B, C, D, E>
{
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
        for code in [A::CODES, B::CODES, C::CODES, D::CODES, E::CODES].concat() {
            let codes = by_status.entry(code.status().code).or_default();
            if !codes.contains(&code) {
                codes.push(code);
            }
        }
        by_status
            .into_iter()
            .map(|(status, codes)| {
                let description = codes
                    .iter()
                    .map(|code| format!("- `{code}`: {}", code.meaning()))
                    .collect::<Vec<_>>()
                    .join("\n");
                let body = ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                    .build();
                let response = ResponseBuilder::new()
                    .description(description)
                    .content("application/json", body)
                    .build();
                (status.to_string(), response.into())
            })
            .collect()
    }
}

impl<'r> Responder<'r, 'static> for ApiError {
    fn respond_to(self, request: &'r Request<'_>) -> response::Result<'static> {
        let status = self.status;
        crate::request_id::note_error(request, self.code.as_str());
        let mut response = rocket::Response::build_from(Json(self.body()).respond_to(request)?);
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

/// Marks a request that Rocket dispatched (its fairings ran): one that did not is a
/// request Rocket could not read (an unknown method, a malformed URI), salvaged for the
/// catchers with the method `GET`.
#[derive(Default)]
struct Dispatched(std::sync::atomic::AtomicBool);

/// Marks `request` as dispatched; the request fairing (`request_id::RequestIds`) calls
/// it for every request. The catcher answers 405 to a request with a method Rocket does
/// not know (`QUERY`) only if it can tell that the method was unknown: such a request
/// reaches the catcher undispatched, as a `GET`.
pub fn mark_dispatched(request: &Request<'_>) {
    request
        .local_cache(Dispatched::default)
        .0
        .store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The methods that the mounted routes accept at `request`'s path, by name, for a 405's
/// `Allow`; empty if no route has this path. `HEAD` is not listed: Rocket answers it for
/// every `GET` route, but the OpenAPI document declares the methods routes have.
fn allowed_methods(request: &Request<'_>) -> Vec<&'static str> {
    let path: Vec<&str> = request.uri().path().segments().collect();
    let mut methods: Vec<&'static str> = request
        .rocket()
        .routes()
        .filter(|route| path_matches(route.uri.path(), &path))
        .map(|route| route.method.as_str())
        .collect();
    methods.sort_unstable();
    methods.dedup();
    methods
}

/// Whether a route's path pattern (`/api/ProductionUnit/<id>`, `/assets/<path..>`)
/// matches the request path's decoded, non-empty `segments`.
fn path_matches(pattern: &str, segments: &[&str]) -> bool {
    let mut segments = segments.iter();
    for part in pattern.split('/').filter(|p| !p.is_empty()) {
        if part.starts_with('<') && part.ends_with("..>") {
            return true;
        }
        match segments.next() {
            Some(segment) if part.starts_with('<') || part == *segment => {}
            _ => return false,
        }
    }
    segments.next().is_none()
}

/// What a catcher answers: the error, and for a 405 the `Allow` header naming the
/// methods the path accepts.
struct Caught {
    error: ApiError,
    allow: Option<String>,
}

impl<'r> Responder<'r, 'static> for Caught {
    fn respond_to(self, request: &'r Request<'_>) -> response::Result<'static> {
        let mut response = self.error.respond_to(request)?;
        if let Some(allow) = self.allow {
            response.set_raw_header("Allow", allow);
        }
        Ok(response)
    }
}

#[catch(default)]
fn default_catcher(status: Status, request: &Request<'_>) -> Caught {
    if let Some(error) = stashed(request) {
        return Caught { error, allow: None };
    }
    // No route for this method at a path that routes have (Rocket says 404), or a
    // method Rocket does not know (it says 400 before dispatching): 405, with `Allow`.
    let dispatched = request
        .local_cache(Dispatched::default)
        .0
        .load(std::sync::atomic::Ordering::Relaxed);
    let unknown_method = status.code == 400 && !dispatched;
    if status.code == 404 || unknown_method {
        let allowed = allowed_methods(request);
        if !allowed.is_empty() && (unknown_method || !allowed.contains(&request.method().as_str()))
        {
            let method = if unknown_method {
                "this method".to_owned()
            } else {
                request.method().to_string()
            };
            let error = ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!(
                    "{method} is not allowed here; allowed: {}",
                    allowed.join(", ")
                ),
            );
            return Caught {
                error,
                allow: Some(allowed.join(", ")),
            };
        }
    }
    Caught {
        error: rocket_error(status, request),
        allow: None,
    }
}

/// The answer to a failure of Rocket's own (no route, unreadable body, …).
fn rocket_error(status: Status, request: &Request<'_>) -> ApiError {
    let (code, message) = match status.code {
        400 => (ErrorCode::BadRequest, "the request is malformed".to_owned()),
        401 => (
            ErrorCode::Unauthenticated,
            "an `Authorization: Bearer <key>` header is required".to_owned(),
        ),
        403 => (ErrorCode::Forbidden, "this key may not do that".to_owned()),
        404 => (
            ErrorCode::NotFound,
            format!("no route for {} {}", request.method(), request.uri().path()),
        ),
        405 => (
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed here", request.method()),
        ),
        413 => (
            ErrorCode::PayloadTooLarge,
            "the body is too large".to_owned(),
        ),
        // Rocket's JSON guard: well-formed JSON of the wrong shape.
        422 => (
            ErrorCode::InvalidBody,
            "the body is not the JSON this route expects".to_owned(),
        ),
        500..=599 => (
            ErrorCode::Internal,
            "internal error (see the server log)".to_owned(),
        ),
        _ => (ErrorCode::BadRequest, status.reason_lossy().to_owned()),
    };
    ApiError {
        // A 422 is a bad request to clients: one status for every malformed input.
        // Other statuses stay Rocket's, whatever their code's own.
        status: if status.code == 422 {
            code.status()
        } else {
            status
        },
        ..ApiError::new(code, message)
    }
}

/// The catchers that answer every error, Rocket's own included, as JSON.
pub fn catchers() -> Vec<Catcher> {
    catchers![default_catcher]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn codes_serialise_as_their_stable_strings() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
        assert_eq!(ErrorCode::NoMasterToken.as_str(), "no_master_token");
        assert_eq!(ErrorCode::RateLimited.status(), Status::TooManyRequests);
        let body = serde_json::to_value(ApiError::new(ErrorCode::ChainTimeout, "late").body());
        assert_eq!(
            body.unwrap(),
            serde_json::json!({"error": {"code": "chain_timeout", "message": "late"}})
        );
    }

    #[test]
    fn a_route_pattern_matches_the_paths_it_would_route() {
        assert!(path_matches(
            "/api/ProductionUnit/<id>",
            &["api", "ProductionUnit", "PT10"]
        ));
        assert!(path_matches("/api/decisions", &["api", "decisions"]));
        assert!(path_matches("/assets/<path..>", &["assets", "a", "b.js"]));
        assert!(path_matches("/", &[]));
        assert!(!path_matches(
            "/api/ProductionUnit/<id>",
            &["api", "ProductionUnit"]
        ));
        assert!(!path_matches(
            "/api/ProductionUnit",
            &["api", "ProductionUnit", "PT10"]
        ));
        assert!(!path_matches("/api/decisions", &["api", "Decisions"]));
    }

    #[test]
    fn the_readme_lists_every_code_with_its_status() {
        let readme = include_str!("../../README.md")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for code in ErrorCode::ALL {
            let status = code.status().code;
            let listed = readme.split(&format!("{status} ")).skip(1).any(|rest| {
                rest.split(", ")
                    .next()
                    .is_some_and(|l| l.contains(&format!("`{code}`")))
            });
            assert!(listed, "README.md does not list `{code}` under {status}");
        }
    }
}
