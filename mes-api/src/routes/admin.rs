//! Administration over HTTP: the MES's chain identity (`kafka_tokens`), the same as
//! `mes-api token put|list`. Secrets (token, password) never leave the server.

use mes_core::db::tokens::{self, KafkaToken};
use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{State, delete, get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::App;
use crate::auth::Writer;
use crate::error::{ApiError, ApiResult, ErrorBody, code};

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
        (status = 401, description = "No or unknown key", body = ErrorBody),
        (status = 403, description = "Operators only", body = ErrorBody),
    ),
    security(("bearer" = [])))]
#[get("/api/tokens")]
pub async fn token_list(app: &State<App>, _caller: Writer) -> ApiResult<Json<Vec<TokenView>>> {
    let rows = app.db.run(|conn| Ok(tokens::list(conn)?)).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// `POST /api/tokens`: stores a token (a `Master` token replaces the existing one).
#[utoipa::path(post, path = "/api/tokens", tag = "admin",
    request_body = TokenPut,
    responses(
        (status = 200, description = "The stored token, secrets redacted", body = TokenView),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No or unknown key", body = ErrorBody),
        (status = 403, description = "Operators only", body = ErrorBody),
    ),
    security(("bearer" = [])))]
#[post("/api/tokens", data = "<body>")]
pub async fn token_put(
    app: &State<App>,
    caller: Writer,
    body: Result<Json<TokenPut>, rocket::serde::json::Error<'_>>,
) -> ApiResult<Json<TokenView>> {
    let body = body.map_err(|e| {
        let detail = match e {
            rocket::serde::json::Error::Io(_) => "the body could not be read".to_owned(),
            rocket::serde::json::Error::Parse(_, e) => e.to_string(),
        };
        ApiError::new(Status::BadRequest, code::INVALID_BODY, detail)
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
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No or unknown key", body = ErrorBody),
        (status = 403, description = "Operators only", body = ErrorBody),
        (status = 404, description = "No such token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
#[delete("/api/tokens/<id>")]
pub async fn token_delete(app: &State<App>, _caller: Writer, id: &str) -> ApiResult<Status> {
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
        Err(ApiError::new(
            Status::NotFound,
            code::NOT_FOUND,
            format!("no token {id}"),
        ))
    }
}
