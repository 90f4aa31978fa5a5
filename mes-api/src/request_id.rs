//! Request ids: every HTTP request gets one, answered as `X-Request-Id` (errors too)
//! and written in the one log line each request leaves (`request_id`, with method,
//! route, path, status and duration), so that a client's report and the server's log
//! meet.
//!
//! The id is the request's own `X-Request-Id` when it is a sane token (1 to 64 of
//! `A-Z a-z 0-9 . _ -`: what a proxy or a client generates), else a new UUID v4: a
//! header that could forge log lines or fill them is never echoed.
//!
//! Rocket 0.5's fairings cannot wrap a handler's future in a span, so the id is kept in
//! the request's local cache ([`RequestId::of`]) for whoever logs about the request.
//!
//! Each request also gets a W3C trace ([`Trace`]): a child of its `traceparent` header
//! when that is valid, else a new trace. Its trace id is in the request's log line;
//! a handler whose work reaches Kafka (directly, or through an outbox row) runs that
//! work in [`Trace::scope`], so that the records it causes carry the same trace id.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

use mes_core::trace::{HEADER as TRACE_HEADER, TraceParent};
use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::Header;
use rocket::request::{self, FromRequest};
use rocket::{Data, Request, Response};

/// The header that carries the id, both ways.
pub const HEADER: &str = "X-Request-Id";

/// Longest id taken from a request.
pub const MAX_LEN: usize = 64;

/// The id of one HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The id `request` was given (by [`RequestIds`], or now if it was not: a request
    /// that skipped the fairing still gets one).
    pub fn of<'r>(request: &'r Request<'_>) -> &'r RequestId {
        &Stamp::of(request).id
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether an incoming id is taken as it is.
pub fn is_sane(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What the fairing keeps per request.
struct Stamp {
    id: RequestId,
    trace: TraceParent,
    started: Instant,
}

impl Stamp {
    fn new(incoming: Option<&str>, traceparent: Option<&str>) -> Stamp {
        let id = match incoming {
            Some(id) if is_sane(id) => id.to_owned(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        let trace = traceparent
            .and_then(TraceParent::parse)
            .map_or_else(TraceParent::new_root, |parent| parent.child());
        Stamp {
            id: RequestId(id),
            trace,
            started: Instant::now(),
        }
    }

    fn of<'r>(request: &'r Request<'_>) -> &'r Stamp {
        request.local_cache(|| Stamp::new(None, None))
    }
}

/// The W3C trace of one HTTP request (a request guard that never fails): the
/// request's own span, a child of its `traceparent` header if that was valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace(pub TraceParent);

impl Trace {
    /// Runs `work` as part of this request's trace: records the bridge sends and
    /// outbox rows written in it carry the trace id.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        kafka_bridge::trace::scope(Some(self.0), work).await
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Trace {
    type Error = Infallible;

    async fn from_request(request: &'r Request<'_>) -> request::Outcome<Self, Infallible> {
        request::Outcome::Success(Trace(Stamp::of(request).trace))
    }
}

/// The error code an [`ApiError`](crate::error::ApiError) answer carried, for the
/// request's log line.
#[derive(Default)]
struct Answered(Mutex<Option<&'static str>>);

/// Notes that `request` is answered with the error `code` (the error's responder
/// calls it), so that its log line says which.
pub fn note_error(request: &Request<'_>, code: &'static str) {
    if let Ok(mut slot) = request.local_cache(Answered::default).0.lock() {
        *slot = Some(code);
    }
}

/// The fairing: gives each request its id, answers it as `X-Request-Id` and logs one
/// line per request (`debug` for the probes, `/health/*` and `/metrics`; `info`
/// otherwise).
#[derive(Debug, Default)]
pub struct RequestIds;

#[rocket::async_trait]
impl Fairing for RequestIds {
    fn info(&self) -> Info {
        Info {
            name: "Request ids",
            kind: Kind::Request | Kind::Response,
        }
    }

    async fn on_request(&self, request: &mut Request<'_>, _: &mut Data<'_>) {
        let incoming = request.headers().get_one(HEADER).map(str::to_owned);
        let traceparent = request.headers().get_one(TRACE_HEADER).map(str::to_owned);
        request.local_cache(|| Stamp::new(incoming.as_deref(), traceparent.as_deref()));
        crate::error::mark_dispatched(request);
    }

    async fn on_response<'r>(&self, request: &'r Request<'_>, response: &mut Response<'r>) {
        let stamp = Stamp::of(request);
        response.set_header(Header::new(HEADER, stamp.id.0.clone()));
        let elapsed = stamp.started.elapsed();
        let path = request.uri().path();
        // The route's pattern, as in /metrics; the path (never the query, which may
        // hold what a client typed) says which resource.
        let route = request
            .route()
            .map_or_else(|| "unmatched".to_owned(), |r| r.uri.path().to_string());
        let status = response.status().code;
        let error = request
            .local_cache(Answered::default)
            .0
            .lock()
            .ok()
            .and_then(|slot| *slot);
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        let probe = path.starts_with("/health/") || path == "/metrics";
        macro_rules! log {
            ($level:ident) => {
                tracing::$level!(
                    request_id = %stamp.id,
                    trace_id = %stamp.trace.trace_id(),
                    method = request.method().as_str(),
                    route,
                    path = %path,
                    status,
                    duration_ms,
                    error,
                    "{} {} {status}",
                    request.method(),
                    path
                )
            };
        }
        if probe {
            log!(debug);
        } else {
            log!(info);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_short_plain_tokens() {
        assert!(is_sane("abc-DEF_012.x"));
        assert!(is_sane(&"a".repeat(MAX_LEN)));
        assert!(!is_sane(""));
        assert!(!is_sane(&"a".repeat(MAX_LEN + 1)));
        for bad in ["a b", "a\nb", "a\"b", "a/b", "é", "a;b", "a{b}"] {
            assert!(!is_sane(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_valid_traceparent_is_continued_and_any_other_starts_a_trace() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = Stamp::new(None, Some(parent)).trace;
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(trace.parent_id(), "00f067aa0ba902b7");
        for other in [None, Some("garbage"), Some(&parent.to_uppercase()[..])] {
            let trace = Stamp::new(None, other).trace;
            assert_ne!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(TraceParent::parse(&trace.to_string()), Some(trace));
        }
    }

    #[test]
    fn an_insane_or_missing_id_becomes_a_uuid() {
        let long = "x".repeat(MAX_LEN + 1);
        for incoming in [None, Some("a b"), Some(long.as_str())] {
            let id = Stamp::new(incoming, None).id;
            let parsed = uuid::Uuid::parse_str(id.as_str());
            assert!(parsed.is_ok_and(|u| u.get_version_num() == 4), "{id}");
        }
        assert_eq!(Stamp::new(Some("req-1"), None).id.as_str(), "req-1");
    }
}
