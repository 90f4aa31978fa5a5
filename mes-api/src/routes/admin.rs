//! Administration over HTTP, for admins only: the MES's chain identity
//! (`kafka_tokens`, the same as `mes-api token put|list`) and the operators (the same
//! as `mes-api operator add|remove|rotate|list`). Secrets (token, password) never
//! leave the server; an operator's key is shown once, in the answer that made it.

use chrono::NaiveDateTime;
use mes_core::db::operators::{self, Operator};
use mes_core::db::tokens::{self, KafkaToken};
use rocket::http::{Header, Status};
use rocket::serde::json::Json;
use rocket::{Responder, State, delete, get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::App;
use crate::auth::{Admin, Role};
use crate::error::{ApiError, ApiResult, Body, ErrorCode, Errors, Lookup, Params, Unique};
use crate::routes::units::{ObjectBody, object_body};

/// Shown instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// A token row as the API shows it: secrets replaced by [`REDACTED`].
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// Id.
    pub id: i64,
    /// `Master`, or another instance type.
    pub instance_type: String,
    /// Always `<redacted>`.
    pub token: String,
    /// The MES's public key on the chain.
    pub public_key: Option<String>,
    /// `<redacted>` when a password is set.
    pub password: Option<String>,
    /// The chain record standing for this MES.
    pub record_id: Option<String>,
    /// Topic of the identity.
    pub topic: Option<String>,
    /// Display name.
    pub name: Option<String>,
}

impl From<KafkaToken> for TokenView {
    fn from(t: KafkaToken) -> Self {
        TokenView {
            id: t.id,
            instance_type: t.instance_type,
            token: REDACTED.to_owned(),
            public_key: t.public_key,
            password: t.password.map(|_| REDACTED.to_owned()),
            record_id: t.record_id,
            topic: t.topic,
            name: t.name,
        }
    }
}

/// Body of `POST /api/tokens`: the fields of `mes-api token put`.
#[derive(Deserialize, ToSchema)]
pub struct TokenPut {
    /// `Master` for the token every request carries.
    pub instance_type: String,
    /// The token.
    pub token: String,
    /// The MES's public key.
    pub public_key: Option<String>,
    /// A password that goes with the identity.
    pub password: Option<String>,
    /// The chain record standing for this MES.
    pub record_id: Option<String>,
    /// Topic of the identity.
    pub topic: Option<String>,
    /// Display name.
    pub name: Option<String>,
}

/// `GET /api/tokens`: the stored tokens, secrets redacted.
#[utoipa::path(get, path = "/api/tokens", tag = "admin",
    responses(
        (status = 200, description = "Tokens, secrets redacted", body = Vec<TokenView>),
        Errors<Admin>,
    ))]
#[get("/api/tokens")]
pub async fn token_list(app: &State<App>, _caller: Admin) -> ApiResult<Json<Vec<TokenView>>> {
    let rows = app.db.run(|conn| Ok(tokens::list(conn)?)).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// `POST /api/tokens`: stores a token (a `Master` token replaces the existing one).
#[utoipa::path(post, path = "/api/tokens", tag = "admin",
    request_body = TokenPut,
    responses(
        (status = 200, description = "The stored token, secrets redacted", body = TokenView),
        Errors<Admin, Body, Params>,
    ))]
#[post("/api/tokens", data = "<body>")]
pub async fn token_put(
    app: &State<App>,
    caller: Admin,
    body: Result<Json<TokenPut>, rocket::serde::json::Error<'_>>,
) -> ApiResult<Json<TokenView>> {
    let body = body.map_err(|e| {
        let detail = match e {
            rocket::serde::json::Error::Io(_) => "the body could not be read".to_owned(),
            rocket::serde::json::Error::Parse(_, e) => e.to_string(),
        };
        ApiError::new(ErrorCode::InvalidBody, detail)
    })?;
    if body.instance_type.trim().is_empty() || body.token.trim().is_empty() {
        return Err(ApiError::invalid(
            "instance_type/token",
            "must not be empty",
        ));
    }
    let stored = app
        .db
        .run(move |conn| {
            Ok(tokens::put(
                conn,
                &tokens::NewKafkaToken {
                    instance_type: &body.instance_type,
                    token: &body.token,
                    public_key: body.public_key.as_deref(),
                    password: body.password.as_deref(),
                    record_id: body.record_id.as_deref(),
                    topic: body.topic.as_deref(),
                    name: body.name.as_deref(),
                },
            )?)
        })
        .await?;
    app.tokens.forget();
    tracing::info!(operator = %caller.0.name, instance_type = %stored.instance_type, "token stored");
    Ok(Json(stored.into()))
}

/// `DELETE /api/tokens/<id>`: removes a token.
#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "admin",
    params(("id" = i64, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Removed"),
        Errors<Admin, Params, Lookup>,
    ))]
#[delete("/api/tokens/<id>")]
pub async fn token_delete(app: &State<App>, _caller: Admin, id: &str) -> ApiResult<Status> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid("id", "must be a whole number"))?;
    let existed = app
        .db
        .run(move |conn| Ok(tokens::delete(conn, id)?))
        .await?;
    app.tokens.forget();
    if existed {
        Ok(Status::NoContent)
    } else {
        Err(ApiError::new(ErrorCode::NotFound, format!("no token {id}")))
    }
}

/// An operator as the API shows it: never its key nor the key's hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorView {
    /// Unique name, recorded with each decision.
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    /// When it was added (UTC).
    #[schema(value_type = String, example = "2026-12-01T10:42:00")]
    pub created_at: NaiveDateTime,
    /// When its key or one of its sessions was last accepted (UTC, to the minute);
    /// `null` if never.
    #[schema(value_type = Option<String>)]
    pub last_used_at: Option<NaiveDateTime>,
}

impl From<Operator> for OperatorView {
    fn from(op: Operator) -> Self {
        OperatorView {
            name: op.name,
            role: op.role,
            created_at: op.created_at,
            last_used_at: op.last_used_at,
        }
    }
}

/// An operator with its new key: the one time the key is shown.
#[derive(Serialize, ToSchema)]
pub struct OperatorKey {
    /// The operator.
    #[serde(flatten)]
    pub operator: OperatorView,
    /// The key (`mesk_…`): shown only in this answer; only its hash is stored.
    pub key: String,
}

impl std::fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorKey")
            .field("operator", &self.operator)
            .field("key", &REDACTED)
            .finish()
    }
}

/// An answer that carries a new key: never stored by a cache or proxy.
#[derive(Debug, Responder)]
pub struct KeyAnswer {
    inner: (Status, Json<OperatorKey>),
    cache: Header<'static>,
}

impl KeyAnswer {
    fn new(status: Status, key: OperatorKey) -> KeyAnswer {
        KeyAnswer {
            inner: (status, Json(key)),
            cache: Header::new("Cache-Control", "no-store"),
        }
    }
}

/// Body of `POST /api/operators`: the arguments of `mes-api operator add`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorAdd {
    /// Unique name, 1–100 characters, no control characters (spaces around it are
    /// dropped).
    #[schema(
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$",
        max_length = 100
    )]
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    #[schema(pattern = "^(viewer|operator|admin)$")]
    pub role: String,
}

fn operator_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "must have 1 to 100 characters, none of them a control character",
        ));
    }
    Ok(name.to_owned())
}

fn no_operator(name: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no operator called {name:?}"))
}

/// `GET /api/operators`: every operator with role, when added and when last used.
#[utoipa::path(get, path = "/api/operators", tag = "admin",
    responses(
        (status = 200, description = "Operators, in the order they were added", body = Vec<OperatorView>),
        Errors<Admin>,
    ))]
#[get("/api/operators")]
pub async fn operator_list(app: &State<App>, _caller: Admin) -> ApiResult<Json<Vec<OperatorView>>> {
    let rows = app.db.run(|conn| Ok(operators::list(conn)?)).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// `POST /api/operators`: adds an operator and answers its key, once.
#[utoipa::path(post, path = "/api/operators", tag = "admin",
    request_body = OperatorAdd,
    responses(
        (status = 201, description = "Added; the key is in this answer only", body = OperatorKey),
        Errors<Admin, Body, Params, Unique>,
    ))]
#[post("/api/operators", data = "<body>")]
pub async fn operator_add(
    app: &State<App>,
    caller: Admin,
    body: ObjectBody<'_>,
) -> ApiResult<KeyAnswer> {
    let body: OperatorAdd = object_body(body, "{\"name\", \"role\"}")?;
    let name = operator_name(&body.name)?;
    let role = Role::parse(body.role.trim())
        .ok_or_else(|| ApiError::invalid("role", "must be viewer, operator or admin"))?;
    let key = operators::new_key();
    let key_hash = operators::hash_key(&key);
    let lookup = name.clone();
    let stored = app
        .db
        .run(move |conn| {
            if operators::by_name(conn, &lookup)?.is_some() {
                return Ok(None);
            }
            Ok(Some(operators::create(
                conn,
                &operators::NewOperator {
                    name: &lookup,
                    role: role.as_str(),
                    key_hash: &key_hash,
                },
            )?))
        })
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Conflict,
                format!("an operator called {name:?} exists already"),
            )
        })?;
    tracing::info!(admin = %caller.0.name, operator = %stored.name, role = %stored.role, "operator added");
    Ok(KeyAnswer::new(
        Status::Created,
        OperatorKey {
            operator: stored.into(),
            key,
        },
    ))
}

/// `DELETE /api/operators/<name>`: removes an operator; its key and sessions stop
/// working on every instance within 2 s, and its open event streams close at their
/// next check (`MES_SESSION_RECHECK_SECS`).
#[utoipa::path(delete, path = "/api/operators/{name}", tag = "admin",
    params(("name" = String, Path, description = "The operator's name")),
    responses(
        (status = 204, description = "Removed"),
        Errors<Admin, Lookup>,
    ))]
#[delete("/api/operators/<name>")]
pub async fn operator_remove(app: &State<App>, caller: Admin, name: &str) -> ApiResult<Status> {
    let name = name.trim().to_owned();
    let target = name.clone();
    let existed = app
        .db
        .run(move |conn| Ok(operators::remove(conn, &target)?))
        .await?;
    app.auth.clear();
    if !existed {
        return Err(no_operator(&name));
    }
    tracing::info!(admin = %caller.0.name, operator = %name, "operator removed");
    Ok(Status::NoContent)
}

/// `POST /api/operators/<name>/rotate`: gives an operator a new key and answers it,
/// once; the old key and its sessions stop working on every instance within 2 s.
#[utoipa::path(post, path = "/api/operators/{name}/rotate", tag = "admin",
    params(("name" = String, Path, description = "The operator's name")),
    responses(
        (status = 200, description = "The new key, in this answer only", body = OperatorKey),
        Errors<Admin, Lookup>,
    ))]
#[post("/api/operators/<name>/rotate")]
pub async fn operator_rotate(app: &State<App>, caller: Admin, name: &str) -> ApiResult<KeyAnswer> {
    let name = name.trim().to_owned();
    let key = operators::new_key();
    let key_hash = operators::hash_key(&key);
    let target = name.clone();
    let rotated = app
        .db
        .run(move |conn| Ok(operators::rotate(conn, &target, &key_hash)?))
        .await?;
    app.auth.clear();
    let stored = rotated.ok_or_else(|| no_operator(&name))?;
    tracing::info!(admin = %caller.0.name, operator = %stored.name, "operator key rotated");
    Ok(KeyAnswer::new(
        Status::Ok,
        OperatorKey {
            operator: stored.into(),
            key,
        },
    ))
}
