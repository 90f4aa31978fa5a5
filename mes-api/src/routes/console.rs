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

/// `[name, …]` → `&[(name, text), …]`, each file read from `mes-api/console/` at
/// compile time: the list is written once, below.
macro_rules! console_files {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../console/", $name)))),*]
    };
}

/// The console's files under `/assets/`: name and text. `index.html` loads `app.js`,
/// which imports the other modules by relative URL (`./api.js` is `/assets/api.js`);
/// a module missing here would be a 404 and the page would not start, so a test
/// checks this list against the folder and the modules' imports.
const ASSETS: &[(&str, &str)] = console_files![
    "app.js",
    "api.js",
    "dom.js",
    "tabs.js",
    "requests.js",
    "units.js",
    "targets.js",
    "performance.js",
    "chart.js",
    "dayreport.js",
    "production.js",
    "outbox.js",
    "decisions.js",
    "notifications.js",
    "delivery.js",
    "live.js",
    "style.css",
    "favicon.svg",
];

/// The content type of a console file, by its extension: browsers run a module script
/// only when it is served as JavaScript.
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("html") => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

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
        content_type: content_type("index.html"),
        body: INDEX,
    }
}

/// `GET /assets/<name>`: the console's script modules, style sheet and icon.
#[utoipa::path(get, path = "/assets/{name}", tag = "console",
    params(("name" = String, Path, description = "app.js (the entry module; it imports the others, e.g. api.js), style.css or favicon.svg")),
    responses(
        (status = 200, description = "The file", body = String),
        Errors<Lookup>,
    ))]
#[get("/assets/<name>")]
pub fn asset(name: &str) -> Result<Asset, ApiError> {
    ASSETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(name, body)| Asset {
            content_type: content_type(name),
            body,
        })
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
    ))]
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
    ))]
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

/// One event of `GET /api/events` as a client's SSE parser reads it, for the OpenAPI
/// document: a `text/event-stream` answer is a sequence of these, not one string.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ServerSentEvent {
    /// The event's name: `hello`, `watching`, `request`, `status`, `decision`,
    /// `outbox`, `poll_error`, `chain`, `day_report`, `target`, `lagged` or
    /// `signed_out`.
    event: String,
    /// The event's JSON object, as text.
    data: String,
}

/// `GET /api/events`: server-sent events for the console. Events: `hello` (at once:
/// who you are and whether the poller watches yet), `watching`, `request`, `status`,
/// `decision`, `outbox`, `poll_error`, `chain`, `day_report`, `target`, `lagged`, and
/// `signed_out` (the key was removed
/// or rotated, or the session ended: the stream closes after it). The stream checks
/// its key or session every `MES_SESSION_RECHECK_SECS` (default 60) (docs/console.md).
#[utoipa::path(get, path = "/api/events", tag = "console",
    responses(
        (status = 200, description = "An event stream: one event per `event:`/`data:` block, and a comment line every 15 s", body = ServerSentEvent, content_type = "text/event-stream"),
        Errors<StreamReader>,
    ))]
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;

    use rocket::http::Status;
    use rocket::local::blocking::Client;

    use super::*;

    fn client() -> Client {
        Client::tracked(rocket::build().mount("/", rocket::routes![index, asset])).unwrap()
    }

    /// The files in `mes-api/console/` besides the page itself.
    fn files_on_disk() -> BTreeSet<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name != "index.html")
            .collect()
    }

    /// What a module imports: `./x.js` in `import … from "./x.js";`.
    fn imports(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|line| line.starts_with("import "))
            .filter_map(|line| line.split_once(" from \"./"))
            .map(|(_, rest)| rest.trim_end_matches(['"', ';']))
            .collect()
    }

    #[test]
    fn every_console_file_is_served_and_every_import_resolves() {
        let served: BTreeSet<String> = ASSETS.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(
            served,
            files_on_disk(),
            "ASSETS and mes-api/console/ differ"
        );
        assert!(INDEX.contains(r#"<script type="module" src="/assets/app.js"></script>"#));
        let mut imported = BTreeSet::from(["app.js"]);
        for (name, text) in ASSETS.iter().filter(|(n, _)| n.ends_with(".js")) {
            for module in imports(text) {
                assert!(
                    served.contains(module),
                    "{name} imports {module}, not served"
                );
                imported.insert(module);
            }
        }
        let modules: BTreeSet<&str> = ASSETS
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| n.ends_with(".js"))
            .collect();
        assert_eq!(imported, modules, "a module nothing imports");
    }

    #[test]
    fn each_file_is_answered_with_its_type_and_the_page_policy() {
        let client = client();
        for (name, text) in ASSETS {
            let response = client.get(format!("/assets/{name}")).dispatch();
            assert_eq!(response.status(), Status::Ok, "{name}");
            let expected = [
                (".js", "text/javascript; charset=utf-8"),
                (".css", "text/css; charset=utf-8"),
                (".svg", "image/svg+xml"),
            ]
            .into_iter()
            .find(|(ext, _)| name.ends_with(ext))
            .map(|(_, content_type)| content_type);
            assert_eq!(
                response.headers().get_one("Content-Type"),
                expected,
                "{name}"
            );
            assert_eq!(
                response.headers().get_one("Content-Security-Policy"),
                Some(CSP)
            );
            assert_eq!(response.into_string().unwrap(), *text);
        }
        let page = client.get("/").dispatch();
        assert_eq!(
            page.headers().get_one("Content-Type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(page.headers().get_one("Content-Security-Policy"), Some(CSP));
    }

    #[test]
    fn an_unknown_file_is_not_found() {
        let client = client();
        for name in ["nope.js", "index.html", "app.js.map", "..%2FCargo.toml"] {
            let response = client.get(format!("/assets/{name}")).dispatch();
            assert_eq!(response.status(), Status::NotFound, "{name}");
        }
    }
}
