//! Who is calling: `Authorization: Bearer <key>` checked against `operators`.
//!
//! Two guards: [`Reader`] (a viewer or an operator: lists and reads) and [`Writer`]
//! (an operator: answers and changes). A missing or unknown key is 401, a viewer
//! where an operator is needed 403, both as JSON errors. Verified keys are cached
//! for a few seconds so that a busy list endpoint does not hit the database on every
//! call; removing an operator takes effect within that time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mes_core::db::operators::{self, ROLE_OPERATOR, ROLE_VIEWER};
use rocket::State;
use rocket::http::Status;
use rocket::request::{FromRequest, Outcome, Request};

use crate::app::App;
use crate::error::{ApiError, code, stash};

/// How long a verified key is trusted without asking the database again.
const CACHE_TTL: Duration = Duration::from_secs(10);
/// Most keys cached; the cache is cleared when full (it refills from the database).
const CACHE_MAX: usize = 10_000;

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Lists and reads.
    Viewer,
    /// Also answers requests and changes settings.
    Operator,
}

impl Role {
    /// Parses the stored role.
    pub fn parse(role: &str) -> Option<Role> {
        match role {
            ROLE_OPERATOR => Some(Role::Operator),
            ROLE_VIEWER => Some(Role::Viewer),
            _ => None,
        }
    }

    /// The stored name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => ROLE_VIEWER,
            Role::Operator => ROLE_OPERATOR,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The operator's name, recorded with each decision.
    pub name: String,
    /// The operator's role.
    pub role: Role,
}

/// Verified keys by hash, with when they were verified.
#[derive(Debug, Default)]
pub struct AuthCache {
    entries: Mutex<HashMap<String, (Caller, Instant)>>,
}

impl AuthCache {
    fn get(&self, hash: &str) -> Option<Caller> {
        let entries = self.entries.lock().ok()?;
        let (caller, at) = entries.get(hash)?;
        (at.elapsed() < CACHE_TTL).then(|| caller.clone())
    }

    fn put(&self, hash: String, caller: Caller) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_MAX {
                entries.clear();
            }
            entries.insert(hash, (caller, Instant::now()));
        }
    }

    /// Forgets every verified key (after operators change).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

/// The key of an `Authorization: Bearer <key>` header, if well-formed.
fn bearer<'a>(request: &'a Request<'_>) -> Option<&'a str> {
    let value = request.headers().get_one("Authorization")?.trim();
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// Cookie that carries the operator key to `GET /api/events` only (an `EventSource`
/// cannot send headers; a key in the query string would land in access logs). Set by
/// `POST /api/session`: HttpOnly, SameSite=Strict, path `/api/events`, ends with the
/// browser session.
pub const SESSION_COOKIE: &str = "mes_session";

async fn authenticate(request: &Request<'_>) -> Result<Caller, ApiError> {
    let Some(key) = bearer(request) else {
        return Err(ApiError::new(
            Status::Unauthorized,
            code::UNAUTHENTICATED,
            "an `Authorization: Bearer <key>` header is required (`mes-api operator add`)",
        ));
    };
    verify(request, key).await
}

async fn verify(request: &Request<'_>, key: &str) -> Result<Caller, ApiError> {
    let app = request
        .guard::<&State<App>>()
        .await
        .success_or_else(|| ApiError::internal("the application state is missing"))?;
    let hash = operators::hash_key(key);
    if let Some(caller) = app.auth.get(&hash) {
        return Ok(caller);
    }
    let lookup = hash.clone();
    let found = app
        .db
        .run(move |conn| Ok(operators::by_key_hash(conn, &lookup)?))
        .await?;
    let caller = found
        .and_then(|op| {
            Role::parse(&op.role).map(|role| Caller {
                name: op.name,
                role,
            })
        })
        .ok_or_else(|| ApiError::new(Status::Unauthorized, code::UNAUTHENTICATED, "unknown key"))?;
    app.auth.put(hash, caller.clone());
    Ok(caller)
}

/// Any authenticated caller of the event stream: the key comes from the
/// `Authorization` header or from the [`SESSION_COOKIE`].
#[derive(Debug, Clone)]
pub struct StreamReader(pub Caller);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for StreamReader {
    type Error = ApiError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, ApiError> {
        let result = match bearer(request) {
            Some(key) => verify(request, key).await,
            None => match request.cookies().get(SESSION_COOKIE) {
                Some(cookie) if !cookie.value().trim().is_empty() => {
                    verify(request, cookie.value().trim()).await
                }
                _ => Err(ApiError::new(
                    Status::Unauthorized,
                    code::UNAUTHENTICATED,
                    "sign in first (POST /api/session sets the stream's cookie) or send `Authorization: Bearer <key>`",
                )),
            },
        };
        match result {
            Ok(caller) => Outcome::Success(StreamReader(caller)),
            Err(e) => Outcome::Error((stash(request, e.clone()), e)),
        }
    }
}

/// Any authenticated caller: may list and read.
#[derive(Debug, Clone)]
pub struct Reader(pub Caller);

/// An operator: may also answer requests and change settings.
#[derive(Debug, Clone)]
pub struct Writer(pub Caller);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Reader {
    type Error = ApiError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, ApiError> {
        match authenticate(request).await {
            Ok(caller) => Outcome::Success(Reader(caller)),
            Err(e) => Outcome::Error((stash(request, e.clone()), e)),
        }
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Writer {
    type Error = ApiError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, ApiError> {
        match authenticate(request).await {
            Ok(caller) if caller.role == Role::Operator => Outcome::Success(Writer(caller)),
            Ok(caller) => {
                let e = ApiError::new(
                    Status::Forbidden,
                    code::FORBIDDEN,
                    format!(
                        "{} is a {}: only operators may do this",
                        caller.name,
                        caller.role.as_str()
                    ),
                );
                Outcome::Error((stash(request, e.clone()), e))
            }
            Err(e) => Outcome::Error((stash(request, e.clone()), e)),
        }
    }
}

/// The verified caller and the key it presented, for `POST /api/session`, which
/// hands the key to the browser's event-stream cookie.
pub struct KeyedReader {
    /// Who it is.
    pub caller: Caller,
    /// The key (a secret: never log it).
    pub key: String,
}

impl std::fmt::Debug for KeyedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedReader")
            .field("caller", &self.caller)
            .field("key", &"<redacted>")
            .finish()
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for KeyedReader {
    type Error = ApiError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, ApiError> {
        match authenticate(request).await {
            Ok(caller) => Outcome::Success(KeyedReader {
                caller,
                key: bearer(request).unwrap_or_default().to_owned(),
            }),
            Err(e) => Outcome::Error((stash(request, e.clone()), e)),
        }
    }
}
