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
use crate::auth::{self, Reader, SESSION_COOKIE, SIGN_OUT_COOKIE, StreamReader};
use crate::error::{ApiError, ApiResult, ErrorCode, Errors, Lookup, Storage};

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
        Errors<Lookup>,
    ))]
#[get("/assets/<name>")]
pub fn asset(name: &str) -> Result<Asset, ApiError> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, content_type, body)| Asset { content_type, body })
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no console file {name:?}")))
}

/// Who is calling, for the console to show the name and offer only what the role
/// may do.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The operator's name.
    pub name: String,
    /// `viewer` (may only read), `operator` (may also answer and edit) or `admin`
    /// (may also manage tokens and operators).
    pub role: String,
}

/// `GET /api/me`: the caller's name and role.
#[utoipa::path(get, path = "/api/me", tag = "console",
    responses(
        (status = 200, description = "The caller", body = Me),
        Errors<Reader>,
    ),
    security(("bearer" = [])))]
#[get("/api/me")]
pub fn me(caller: Reader) -> Json<Me> {
    Json(Me {
        name: caller.0.name,
        role: caller.0.role.as_str().to_owned(),
    })
}

/// A session cookie: HttpOnly, SameSite=Strict, on `path` only, `Secure` when the site
/// is served over TLS (`MES_COOKIE_SECURE`). It ends with the browser session; the
/// server ends the session itself after `MES_SESSION_TTL`.
fn session_cookie(
    name: &'static str,
    id: String,
    path: &'static str,
    secure: bool,
) -> Cookie<'static> {
    Cookie::build((name, id))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .path(path)
        .build()
}

/// `POST /api/session`: checks the key and opens a console session: the browser gets
/// an HttpOnly cookie with an opaque session id (never the key) that opens the event
/// stream (an `EventSource` cannot send the header). The session ends after
/// `MES_SESSION_TTL`, at sign-out, or when the operator is removed or its key rotated.
#[utoipa::path(post, path = "/api/session", tag = "console",
    responses(
        (status = 200, description = "Signed in; the stream cookie is set", body = Me),
        Errors<Reader>,
    ),
    security(("bearer" = [])))]
#[post("/api/session")]
pub async fn session_open(
    app: &State<App>,
    caller: Reader,
    cookies: &CookieJar<'_>,
) -> ApiResult<Json<Me>> {
    let ttl = chrono::TimeDelta::from_std(app.settings.session_ttl).map_err(ApiError::internal)?;
    let id = mes_core::db::sessions::new_id();
    let id_hash = mes_core::db::sessions::hash_id(&id);
    let operator_id = caller.0.id;
    app.db
        .run(move |conn| {
            let now = mes_core::db::now();
            Ok(mes_core::db::sessions::create(
                conn,
                &id_hash,
                operator_id,
                now,
                now + ttl,
            )?)
        })
        .await?;
    let secure = app.cookie_secure();
    cookies.add(session_cookie(
        SESSION_COOKIE,
        id.clone(),
        "/api/events",
        secure,
    ));
    cookies.add(session_cookie(SIGN_OUT_COOKIE, id, "/api/session", secure));
    Ok(Json(Me {
        name: caller.0.name,
        role: caller.0.role.as_str().to_owned(),
    }))
}

/// `DELETE /api/session`: signs out: ends the session on the server (when the
/// browser sends its sign-out cookie) and removes both cookies.
#[utoipa::path(delete, path = "/api/session", tag = "console",
    responses(
        (status = 204, description = "The session is ended and its cookies removed"),
        Errors<Storage>,
    ))]
#[delete("/api/session")]
pub async fn session_close(
    app: &State<App>,
    cookies: &CookieJar<'_>,
) -> ApiResult<rocket::http::Status> {
    let id = cookies
        .get(SIGN_OUT_COOKIE)
        .map(|c| c.value().trim().to_owned())
        .filter(|id| !id.is_empty());
    if let Some(id) = id {
        let id_hash = mes_core::db::sessions::hash_id(&id);
        app.db
            .run(move |conn| Ok(mes_core::db::sessions::delete(conn, &id_hash)?))
            .await?;
        app.auth.clear();
    }
    cookies.remove(Cookie::build(SESSION_COOKIE).path("/api/events"));
    cookies.remove(Cookie::build(SIGN_OUT_COOKIE).path("/api/session"));
    Ok(rocket::http::Status::NoContent)
}

/// What woke an event stream up.
enum Next {
    /// An event, or news that some were missed or that the hub is gone.
    Event(Result<crate::events::LiveEvent, RecvError>),
    /// Time to check that the stream's key or session still holds.
    Recheck,
    /// The server is shutting down.
    Stop,
}

/// `GET /api/events`: server-sent events for the console. Events: `hello` (at once:
/// who you are and whether the poller watches yet), `watching`, `request`, `status`,
/// `decision`, `outbox`, `poll_error`, `lagged`, and `signed_out` (the key was removed
/// or rotated, or the session ended: the stream closes after it). The stream checks
/// its key or session every `MES_SESSION_RECHECK_SECS` (default 60) (docs/console.md).
#[utoipa::path(get, path = "/api/events", tag = "console",
    responses(
        (status = 200, description = "An event stream", body = String, content_type = "text/event-stream"),
        Errors<StreamReader>,
    ),
    security(("bearer" = [])))]
#[get("/api/events")]
pub fn events(app: &State<App>, reader: StreamReader, mut shutdown: Shutdown) -> EventStream![] {
    let mut rx = app.events.subscribe();
    let hello = json!({
        "name": reader.caller.name,
        "role": reader.caller.role.as_str(),
        "watching": app.events.is_watching(),
    });
    let db = app.db.clone();
    let period = app.settings.session_recheck();
    let credential = reader.credential;
    let mut recheck =
        rocket::tokio::time::interval_at(rocket::tokio::time::Instant::now() + period, period);
    recheck.set_missed_tick_behavior(rocket::tokio::time::MissedTickBehavior::Delay);
    EventStream! {
        yield Event::json(&hello).event("hello");
        loop {
            let next = rocket::tokio::select! {
                event = rx.recv() => Next::Event(event),
                _ = recheck.tick() => Next::Recheck,
                _ = &mut shutdown => Next::Stop,
            };
            match next {
                Next::Event(Ok(event)) => yield Event::json(&event.data).event(event.name),
                Next::Event(Err(RecvError::Lagged(missed))) => {
                    yield Event::json(&json!({"missed": missed})).event("lagged");
                }
                Next::Event(Err(RecvError::Closed)) | Next::Stop => break,
                Next::Recheck => match auth::lookup(&db, &credential).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        yield Event::json(&json!({
                            "reason": "the key was removed or rotated, or the session ended",
                        }))
                        .event("signed_out");
                        break;
                    }
                    // A database blip signs nobody out: the next check decides.
                    Err(e) => tracing::warn!("re-checking an event stream's key: {}", e.message),
                },
            }
        }
    }
    .heartbeat(std::time::Duration::from_secs(15))
}
