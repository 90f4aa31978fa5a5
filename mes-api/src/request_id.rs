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

use std::sync::Mutex;
use std::time::Instant;

use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::Header;
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
        &request.local_cache(|| Stamp::new(None)).id
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
    started: Instant,
}

impl Stamp {
    fn new(incoming: Option<&str>) -> Stamp {
        let id = match incoming {
            Some(id) if is_sane(id) => id.to_owned(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        Stamp {
            id: RequestId(id),
            started: Instant::now(),
        }
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
        request.local_cache(|| Stamp::new(incoming.as_deref()));
    }

    async fn on_response<'r>(&self, request: &'r Request<'_>, response: &mut Response<'r>) {
        let stamp = request.local_cache(|| Stamp::new(None));
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
    fn an_insane_or_missing_id_becomes_a_uuid() {
        let long = "x".repeat(MAX_LEN + 1);
        for incoming in [None, Some("a b"), Some(long.as_str())] {
            let id = Stamp::new(incoming).id;
            let parsed = uuid::Uuid::parse_str(id.as_str());
            assert!(parsed.is_ok_and(|u| u.get_version_num() == 4), "{id}");
        }
        assert_eq!(Stamp::new(Some("req-1")).id.as_str(), "req-1");
    }
}
