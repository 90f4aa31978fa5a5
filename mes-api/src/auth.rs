//! Who is calling: `Authorization: Bearer <key>` checked against `operators`, or the
//! console's session cookie checked against `sessions`.
//!
//! Roles are ordered, viewer < operator < admin, and each guard asks for the least
//! role that may pass: [`Reader`] (anyone signed in: lists and reads), [`Writer`] (an
//! operator or admin: answers and changes) and [`Admin`] (the chain identity and the
//! operators themselves). A missing or unknown key is 401, a role too low 403, both as
//! JSON errors.
//!
//! What the database says of a credential is cached for [`CACHE_TTL`] (1 s), known
//! or unknown, so that a burst of calls does not hit the database on every one. That is also the longest a removed or
//! rotated key keeps working on an instance that did not make the change (the one
//! that did forgets its cache at once): every instance reads the same database, so
//! removal takes effect everywhere within 2 s with a query in flight counted.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use mes_core::db::operators::{self, ROLE_ADMIN, ROLE_OPERATOR, ROLE_VIEWER};
use mes_core::db::sessions;
use rocket::State;
use rocket::request::{FromRequest, Outcome, Request};

use crate::app::App;
use crate::db::Db;
use crate::error::{ApiError, ErrorCode, ErrorSet, stash};

/// How long a verified key or session is trusted without asking the database again.
/// At most 2 s, so that a removed or rotated key fails on every instance within 2 s.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// Most credentials cached (known and unknown); the least used go first.
const CACHE_MAX: u64 = 10_000;

/// What an operator may do; ordered, so `role >= Role::Operator` asks "may write".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Lists and reads.
    Viewer,
    /// Also answers requests, changes units, stores and runs reports, acts on the
    /// outbox.
    Operator,
    /// Also manages the chain identity (tokens) and the operators.
    Admin,
}

impl Role {
    /// Parses the stored role.
    pub fn parse(role: &str) -> Option<Role> {
        match role {
            ROLE_ADMIN => Some(Role::Admin),
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
            Role::Admin => ROLE_ADMIN,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The operator's database id (sessions refer to it).
    pub id: i64,
    /// The operator's name, recorded with each decision.
    pub name: String,
    /// The operator's role.
    pub role: Role,
}

/// What a caller presented, as stored (a SHA-256, never the secret itself), so that a
/// long-lived event stream can ask again later whether it still holds.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// An operator key (`Authorization: Bearer`), by [`operators::hash_key`].
    Key(String),
    /// A console session (the [`SESSION_COOKIE`]), by [`sessions::hash_id`].
    Session(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Key(_) => "Key(<redacted>)",
            Credential::Session(_) => "Session(<redacted>)",
        })
    }
}

impl Credential {
    fn cache_key(&self) -> String {
        match self {
            Credential::Key(hash) => format!("k:{hash}"),
            Credential::Session(hash) => format!("s:{hash}"),
        }
    }
}

/// What the database said of each credential lately: who it is, or `None` for an
/// unknown key or ended session (a negative answer is cached too, so repeating an
/// unknown key costs no query). Bounded (10,000 entries, the least used dropped
/// first) and short-lived ([`CACHE_TTL`]); concurrent misses for one credential share
/// one query.
pub struct AuthCache {
    entries: moka::future::Cache<String, Option<Caller>>,
}

impl Default for AuthCache {
    fn default() -> Self {
        AuthCache {
            entries: moka::future::Cache::builder()
                .max_capacity(CACHE_MAX)
                .time_to_live(CACHE_TTL)
                .build(),
        }
    }
}

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl AuthCache {
    /// What is cached for `key`: `Some(None)` for a credential known to be unknown.
    async fn get(&self, key: &str) -> Option<Option<Caller>> {
        self.entries.get(key).await
    }

    /// What the database says of `credential`, through the cache.
    async fn resolve(&self, db: &Db, credential: &Credential) -> Result<Option<Caller>, ApiError> {
        self.entries
            .try_get_with(credential.cache_key(), lookup(db, credential))
            .await
            .map_err(|e| (*e).clone())
    }

    /// Forgets every verified credential (after operators change), so that this
    /// instance refuses a removed key at once.
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }
}

/// Asks the database who `credential` belongs to, now (no cache): an operator key, or
/// a session that has not ended. Records the operator's last use (at most once a
/// minute). `None`: unknown, removed, rotated or ended.
pub async fn lookup(db: &Db, credential: &Credential) -> Result<Option<Caller>, ApiError> {
    let credential = credential.clone();
    let found = db
        .run(move |conn| {
            let now = mes_core::db::now();
            let found = match &credential {
                Credential::Key(hash) => operators::by_key_hash(conn, hash)?,
                Credential::Session(hash) => sessions::operator_of(conn, hash, now)?,
            };
            if let Some(op) = &found
                && operators::needs_touch(op, now)
                && let Err(e) = operators::touch(conn, op.id, now)
            {
                // Bookkeeping only: the caller is let in all the same.
                tracing::warn!(operator = %op.name, "recording the last use of a key: {e}");
            }
            Ok(found)
        })
        .await?;
    Ok(found.and_then(|op| {
        Role::parse(&op.role).map(|role| Caller {
            id: op.id,
            name: op.name,
            role,
        })
    }))
}

/// The key of an `Authorization: Bearer <key>` header, if well-formed.
fn bearer<'a>(request: &'a Request<'_>) -> Option<&'a str> {
    let value = request.headers().get_one("Authorization")?.trim();
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// Cookie that opens `GET /api/events` (an `EventSource` cannot send headers; a key
/// in the query string would land in access logs). Set by `POST /api/session`: it
/// holds an opaque session id, never the key (only the id's SHA-256 is stored, in
/// `sessions`); HttpOnly, SameSite=Strict, path `/api/events`, `Secure` when
/// `MES_COOKIE_SECURE` says so; the session ends server-side after `MES_SESSION_TTL`.
pub const SESSION_COOKIE: &str = "mes_session";

/// The same session id for `DELETE /api/session` only (path `/api/session`), so that
/// signing out ends the session on the server: the browser does not send
/// [`SESSION_COOKIE`] outside `/api/events`.
pub const SIGN_OUT_COOKIE: &str = "mes_session_end";

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, message)
}

async fn authenticate(request: &Request<'_>) -> Result<Caller, ApiError> {
    let Some(key) = bearer(request) else {
        return Err(unauthenticated(
            "an `Authorization: Bearer <key>` header is required (`mes-api operator add`)",
        ));
    };
    verify(request, &Credential::Key(operators::hash_key(key))).await
}

/// Who `credential` belongs to, from the cache or the database. An unknown one
/// counts against the caller's address ([`crate::limits`]): past the limit the answer
/// is 429, and until the address may try again only cached keys are let in.
async fn verify(request: &Request<'_>, credential: &Credential) -> Result<Caller, ApiError> {
    let app = request
        .guard::<&State<App>>()
        .await
        .success_or_else(|| ApiError::internal("the application state is missing"))?;
    let cached = app.auth.get(&credential.cache_key()).await;
    if let Some(Some(caller)) = cached {
        return Ok(caller);
    }
    let address = client_address(request, app.settings.client_ip_header.as_deref());
    let found = match cached {
        Some(known) => known,
        None => {
            if let Some(wait) = app.limits.blocked(address) {
                return Err(crate::limits::too_many_failures(wait));
            }
            app.auth.resolve(&app.db, credential).await?
        }
    };
    found.ok_or_else(|| match app.limits.failed_sign_in(address) {
        Some(wait) => crate::limits::too_many_failures(wait),
        None => unauthenticated(match credential {
            Credential::Key(_) => "unknown key",
            Credential::Session(_) => "the session has ended: sign in again",
        }),
    })
}

/// The caller's address: the connection's, or behind a reverse proxy the one its
/// `header` (`MES_CLIENT_IP_HEADER`) names. A missing or malformed header falls back
/// to the connection's address.
fn client_address(request: &Request<'_>, header: Option<&str>) -> IpAddr {
    header
        .and_then(|name| request.headers().get_one(name.trim()))
        .and_then(|value| value.trim().parse::<IpAddr>().ok())
        .or_else(|| request.remote().map(|remote| remote.ip()))
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Any authenticated caller of the event stream: the key comes from the
/// `Authorization` header, or the session from the [`SESSION_COOKIE`]. The stream
/// asks again every `MES_SESSION_RECHECK_SECS` whether `credential` still holds.
#[derive(Debug, Clone)]
pub struct StreamReader {
    /// Who it is.
    pub caller: Caller,
    /// What it presented.
    pub credential: Credential,
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for StreamReader {
    type Error = ApiError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, ApiError> {
        let credential = match bearer(request) {
            Some(key) => Some(Credential::Key(operators::hash_key(key))),
            None => request
                .cookies()
                .get(SESSION_COOKIE)
                .map(|cookie| cookie.value().trim())
                .filter(|id| !id.is_empty())
                .map(|id| Credential::Session(sessions::hash_id(id))),
        };
        let result = match credential {
            Some(credential) => verify(request, &credential)
                .await
                .map(|caller| StreamReader { caller, credential }),
            None => Err(unauthenticated(
                "sign in first (POST /api/session sets the stream's cookie) or send `Authorization: Bearer <key>`",
            )),
        };
        match result {
            Ok(reader) => Outcome::Success(reader),
            Err(e) => Outcome::Error((stash(request, e.clone()), e)),
        }
    }
}

/// Authenticates by bearer key and requires at least `least`: 401 without a known
/// key, 403 below the role.
async fn require(request: &Request<'_>, least: Role) -> Outcome<Caller, ApiError> {
    let result = authenticate(request).await.and_then(|caller| {
        if caller.role >= least {
            Ok(caller)
        } else {
            let who = match least {
                Role::Admin => "admins",
                Role::Operator | Role::Viewer => "operators and admins",
            };
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "{} is a {}: only {who} may do this",
                    caller.name,
                    caller.role.as_str()
                ),
            ))
        }
    });
    match result {
        Ok(caller) => Outcome::Success(caller),
        Err(e) => Outcome::Error((stash(request, e.clone()), e)),
    }
}

/// Any authenticated caller (viewer and up): may list and read.
#[derive(Debug, Clone)]
pub struct Reader(pub Caller);

/// An operator or admin: may also answer requests, change units, store and run
/// reports, act on the outbox.
#[derive(Debug, Clone)]
pub struct Writer(pub Caller);

/// An admin: may also manage the chain identity (tokens) and the operators.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Reader {
    type Error = ApiError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, ApiError> {
        require(request, Role::Viewer).await.map(Reader)
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Writer {
    type Error = ApiError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, ApiError> {
        require(request, Role::Operator).await.map(Writer)
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Admin {
    type Error = ApiError;

    async fn from_request(request: &'r Request<'_>) -> Outcome<Self, ApiError> {
        require(request, Role::Admin).await.map(Admin)
    }
}

/// What every guard may answer: 401 without a known key, 429 once its address
/// presented too many unknown ones, 503 when the database cannot say.
const SIGNED_IN: &[ErrorCode] = &[
    ErrorCode::Unauthenticated,
    ErrorCode::RateLimited,
    ErrorCode::DatabaseUnavailable,
];

/// The same, and 403 for a role too low.
const PRIVILEGED: &[ErrorCode] = &[
    ErrorCode::Unauthenticated,
    ErrorCode::Forbidden,
    ErrorCode::RateLimited,
    ErrorCode::DatabaseUnavailable,
];

impl ErrorSet for Reader {
    const CODES: &'static [ErrorCode] = SIGNED_IN;
}

impl ErrorSet for StreamReader {
    const CODES: &'static [ErrorCode] = SIGNED_IN;
}

impl ErrorSet for Writer {
    const CODES: &'static [ErrorCode] = PRIVILEGED;
}

impl ErrorSet for Admin {
    const CODES: &'static [ErrorCode] = PRIVILEGED;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_round_trip() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn credentials_never_show_their_hash() {
        let shown = format!("{:?}", Credential::Session("abc123".to_owned()));
        assert!(!shown.contains("abc123"), "{shown}");
    }
}
