//! The operator console: its page and assets (compiled into the binary from
//! `mes-api/console/`, nothing fetched at run time), who the caller is, the session
//! cookie of the event stream, and the event stream itself (docs/console.md).

use rocket::http::{ContentType, Cookie, CookieJar, Header, SameSite};
use rocket::response::stream::{Event, EventStream};
use rocket::response::{self, Responder};
use rocket::serde::json::Json;
use rocket::tokio::sync::broadcast::error::RecvError;
use rocket::{Request, Response, Shutdown, State, delete, get, post};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::app::App;
use crate::auth::{KeyedReader, Reader, SESSION_COOKIE, StreamReader};
use crate::error::{ApiError, ErrorBody};

/// The console's files: name, content type, text.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../console/style.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../../console/favicon.svg"),
    ),
];

const INDEX: &str = include_str!("../../console/index.html");

/// Everything the page loads is its own: no inline script, nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A compiled-in file, with the headers that keep the page safe and fresh.
#[derive(Debug)]
pub struct Asset {
    content_type: &'static str,
    body: &'static str,
}

impl<'r> Responder<'r, 'static> for Asset {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let content_type =
            ContentType::parse_flexible(self.content_type).unwrap_or(ContentType::Plain);
        Response::build()
            .header(content_type)
            .header(Header::new("Content-Security-Policy", CSP))
            .header(Header::new("Referrer-Policy", "no-referrer"))
            // Small files: always revalidated, so an upgrade shows at the next load.
            .header(Header::new("Cache-Control", "no-cache"))
            .sized_body(self.body.len(), std::io::Cursor::new(self.body))
            .ok()
    }
}

/// `GET /`: the console.
#[utoipa::path(get, path = "/", tag = "console",
    responses((status = 200, description = "The operator console (HTML)", body = String, content_type = "text/html")))]
#[get("/")]
pub fn index() -> Asset {
    Asset {
        content_type: "text/html; charset=utf-8",
        body: INDEX,
    }
}

/// `GET /assets/<name>`: the console's script, style sheet and icon.
#[utoipa::path(get, path = "/assets/{name}", tag = "console",
    params(("name" = String, Path, description = "app.js, style.css or favicon.svg")),
    responses(
        (status = 200, description = "The file", body = String),
        (status = 404, description = "No such file", body = ErrorBody),
    ))]
#[get("/assets/<name>")]
pub fn asset(name: &str) -> Result<Asset, ApiError> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, content_type, body)| Asset { content_type, body })
        .ok_or_else(|| {
            ApiError::new(
                rocket::http::Status::NotFound,
                crate::error::code::NOT_FOUND,
                format!("no console file {name:?}"),
            )
        })
}

/// Who is calling, for the console to show the name and offer only what the role
/// may do.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The operator's name.
    pub name: String,
    /// `operator` (may answer and edit) or `viewer` (may only read).
    pub role: String,
}

/// `GET /api/me`: the caller's name and role.
#[utoipa::path(get, path = "/api/me", tag = "console",
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "No or unknown key", body = ErrorBody),
    ),
    security(("bearer" = [])))]
#[get("/api/me")]
pub fn me(caller: Reader) -> Json<Me> {
    Json(Me {
        name: caller.0.name,
        role: caller.0.role.as_str().to_owned(),
    })
}

/// `POST /api/session`: checks the key and gives the browser the HttpOnly cookie
/// that opens the event stream (an `EventSource` cannot send the header).
#[utoipa::path(post, path = "/api/session", tag = "console",
    responses(
        (status = 200, description = "Signed in; the stream cookie is set", body = Me),
        (status = 401, description = "No or unknown key", body = ErrorBody),
    ),
    security(("bearer" = [])))]
#[post("/api/session")]
pub fn session_open(caller: KeyedReader, cookies: &CookieJar<'_>) -> Json<Me> {
    cookies.add(
        Cookie::build((SESSION_COOKIE, caller.key))
            .http_only(true)
            .same_site(SameSite::Strict)
            .path("/api/events"),
    );
    Json(Me {
        name: caller.caller.name,
        role: caller.caller.role.as_str().to_owned(),
    })
}

/// `DELETE /api/session`: signs out (removes the stream cookie).
#[utoipa::path(delete, path = "/api/session", tag = "console",
    responses((status = 204, description = "The stream cookie is removed")))]
#[delete("/api/session")]
pub fn session_close(cookies: &CookieJar<'_>) -> rocket::http::Status {
    cookies.remove(Cookie::build(SESSION_COOKIE).path("/api/events"));
    rocket::http::Status::NoContent
}

/// `GET /api/events`: server-sent events for the console. Events: `hello` (at once:
/// who you are and whether the poller watches yet), `watching`, `request`, `status`,
/// `decision`, `outbox`, `poll_error`, `lagged` (docs/console.md).
#[utoipa::path(get, path = "/api/events", tag = "console",
    responses(
        (status = 200, description = "An event stream", body = String, content_type = "text/event-stream"),
        (status = 401, description = "No or unknown key (header or cookie)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
#[get("/api/events")]
pub fn events(app: &State<App>, caller: StreamReader, mut shutdown: Shutdown) -> EventStream![] {
    let mut rx = app.events.subscribe();
    let hello = json!({
        "name": caller.0.name,
        "role": caller.0.role.as_str(),
        "watching": app.events.is_watching(),
    });
    EventStream! {
        yield Event::json(&hello).event("hello");
        loop {
            let event = rocket::tokio::select! {
                event = rx.recv() => event,
                _ = &mut shutdown => break,
            };
            match event {
                Ok(event) => yield Event::json(&event.data).event(event.name),
                Err(RecvError::Lagged(missed)) => {
                    yield Event::json(&json!({"missed": missed})).event("lagged");
                }
                Err(RecvError::Closed) => break,
            }
        }
    }
    .heartbeat(std::time::Duration::from_secs(15))
}
