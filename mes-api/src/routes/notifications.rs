//! The webhook notifications (`MES_WEBHOOKS`), for the console's Notifications tab:
//! what is waiting, what was delivered, what failed and why. A webhook is shown by
//! its display name (scheme, host, port), never its URL (it may hold a bot token).

use mes_core::db::notifications::{self, NotificationRow};
use rocket::serde::json::Json;
use rocket::{FromForm, State, get};
use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::app::App;
use crate::auth::Reader;
use crate::error::{ApiError, ApiResult, Errors, Params};
use crate::routes::paging::{Paged, Strict};
use crate::routes::rfc3339;

/// One webhook notification, for the console.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    /// Id (rows of one webhook are sent in id order).
    pub id: i64,
    /// What happened (`new_request:<kind>:<id>`, `outbox_failed:<row id>:<attempts>`),
    /// sent as the `Idempotency-Key` header.
    pub event_id: String,
    /// `new_request` or `outbox_failed`.
    pub kind: String,
    /// The webhook: scheme, host and port of its URL (never the URL itself).
    pub webhook: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// POSTs tried so far.
    pub attempts: i32,
    /// The body POSTed, in the webhook's format.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Why the last attempt did not deliver it (for a failed row: why it failed).
    pub last_error: Option<String>,
    /// When a pending row is due (RFC 3339, UTC).
    pub next_attempt_at: String,
    /// When the event was recorded.
    pub created_at: String,
    /// When the row last changed.
    pub updated_at: String,
    /// When the receiver accepted it.
    pub delivered_at: Option<String>,
}

impl From<NotificationRow> for NotificationView {
    fn from(r: NotificationRow) -> Self {
        NotificationView {
            id: r.id,
            payload: serde_json::from_str(&r.payload).unwrap_or(Value::String(r.payload)),
            event_id: r.event_id,
            kind: r.kind,
            webhook: r.target,
            status: r.status,
            attempts: r.attempts,
            last_error: r.last_error,
            next_attempt_at: rfc3339(r.next_attempt_at),
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
            delivered_at: r.delivered_at.map(rfc3339),
        }
    }
}

/// Filter of `GET /api/notifications`, whose page comes beside it in [`Paged`].
#[derive(Debug, FromForm, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    /// Only rows in this status: pending, delivered, failed
    #[param(value_type = Option<String>, pattern = "^(pending|delivered|failed)$")]
    status: Option<String>,
}

/// `GET /api/notifications`: webhook notifications pending, delivered or failed,
/// newest first.
#[utoipa::path(get, path = "/api/notifications", tag = "notifications",
    params(Strict<Paged<NotificationQuery>>),
    responses(
        (status = 200, description = "Notifications, newest first", body = Vec<NotificationView>),
        Errors<Reader, Params>,
    ))]
#[get("/api/notifications?<query..>")]
pub async fn notification_list(
    app: &State<App>,
    _caller: Reader,
    query: Strict<Paged<NotificationQuery>>,
) -> ApiResult<Json<Vec<NotificationView>>> {
    let query = query.checked()?;
    let status = match query.filter.status.as_deref() {
        None => None,
        Some(s @ (notifications::PENDING | notifications::DELIVERED | notifications::FAILED)) => {
            Some(s.to_owned())
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "status",
                "must be pending, delivered or failed",
            ));
        }
    };
    let (limit, offset) = query.page.parse()?;
    let rows = app
        .db
        .run(move |conn| Ok(notifications::list(conn, status.as_deref(), limit, offset)?))
        .await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde_json::json;
    use utoipa::OpenApi;

    #[test]
    fn the_openapi_document_declares_status_limit_and_offset_with_their_bounds() {
        let doc = serde_json::to_value(crate::routes::ApiDoc::openapi()).unwrap();
        let get = &doc["paths"]["/api/notifications"]["get"];
        let params = get["parameters"].as_array().unwrap();
        let param = |name: &str| {
            params
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{name} is not declared: {params:?}"))
        };
        assert_eq!(param("status")["in"], "query");
        assert_eq!(
            param("status")["schema"]["pattern"],
            "^(pending|delivered|failed)$"
        );
        assert_eq!(param("limit")["schema"]["minimum"], json!(1));
        assert_eq!(param("limit")["schema"]["maximum"], json!(500));
        assert_eq!(param("offset")["schema"]["minimum"], json!(0));
        assert!(get["responses"]["401"].is_object(), "viewer key required");
        let view = &doc["components"]["schemas"]["NotificationView"]["properties"];
        assert!(view["webhook"].is_object());
        assert!(
            view.get("url").is_none(),
            "the URL is never part of the answer"
        );
    }
}
