//! The operator inbox: partner and order requests read from the mirror of the chain
//! (`chain_requests`), so that filters and counts cover *every* request, not one chain
//! page, and reading costs the chain nothing. `as_of` says how fresh the mirror is:
//! when the poller last read the whole list.

use std::collections::BTreeMap;

use mes_core::db::chain_requests::{self as mirror, ChainRequest, RequestFilter, ScanState};
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

/// Longest `status` filter accepted.
const MAX_STATUS_LEN: usize = 32;
/// Longest search text accepted.
const MAX_Q_LEN: usize = 200;

/// Filters of `GET /api/requests`, whose page comes beside them in [`Paged`]; every
/// field optional, checked by hand so that each problem gets its own 400.
#[derive(Debug, FromForm, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboxQuery {
    /// partner or order (default: both)
    #[param(value_type = Option<String>, pattern = "^(partner|order)$")]
    kind: Option<String>,
    /// Only this status, e.g. OPEN (case-insensitive); empty: every status
    #[param(value_type = Option<String>, pattern = "^[A-Za-z0-9_]{0,32}$")]
    status: Option<String>,
    /// Only requests whose id, issuing agent or description contain this (case-insensitive)
    #[param(value_type = Option<String>, max_length = 200)]
    q: Option<String>,
}

/// An [`InboxQuery`] and its page, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checked {
    kind: Option<&'static str>,
    status: Option<String>,
    q: Option<String>,
    limit: i64,
    offset: i64,
}

impl Paged<InboxQuery> {
    fn parse(&self) -> ApiResult<Checked> {
        let filter = &self.filter;
        let kind = match filter.kind.as_deref() {
            None => None,
            Some(mirror::KIND_PARTNER) => Some(mirror::KIND_PARTNER),
            Some(mirror::KIND_ORDER) => Some(mirror::KIND_ORDER),
            Some(_) => return Err(ApiError::invalid("kind", "must be partner or order")),
        };
        let status = match filter.status.as_deref() {
            None | Some("") => None,
            Some(s)
                if s.len() <= MAX_STATUS_LEN
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                Some(s.to_ascii_uppercase())
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "status",
                    "must be a status such as OPEN, ACCEPTED or REJECTED",
                ));
            }
        };
        let q = match filter.q.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(q) if q.chars().count() <= MAX_Q_LEN => Some(q.to_owned()),
            Some(_) => {
                return Err(ApiError::invalid(
                    "q",
                    format!("must be at most {MAX_Q_LEN} characters"),
                ));
            }
        };
        let (limit, offset) = self.page.parse()?;
        Ok(Checked {
            kind,
            status,
            q,
            limit,
            offset,
        })
    }
}

/// A mirrored request as the inbox shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestView {
    /// `partner` or `order`.
    pub kind: String,
    /// The chain's request id, as the chain spells it.
    pub id: String,
    /// The chain's status (`OPEN`, `ACCEPTED`, `REJECTED`, …).
    pub status: String,
    /// The agent (ERP) that issued it.
    pub issuing_agent: String,
    /// The chain's `timestamp` of the request.
    pub timestamp: i64,
    /// The item as the chain sent it (the same object the original LIST routes return).
    #[schema(value_type = Object)]
    pub item: Value,
    /// When the MES first saw it (RFC 3339, UTC).
    pub first_seen: String,
    /// When the MES last saw it in a list.
    pub last_seen: String,
}

impl From<ChainRequest> for RequestView {
    fn from(r: ChainRequest) -> Self {
        RequestView {
            item: serde_json::from_str(&r.item).unwrap_or(Value::String(r.item)),
            kind: r.kind,
            id: r.chain_id,
            status: r.status,
            issuing_agent: r.issuing_agent,
            timestamp: r.chain_timestamp,
            first_seen: rfc3339(r.first_seen),
            last_seen: rfc3339(r.last_seen),
        }
    }
}

/// One page of the inbox.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboxPage {
    /// The requests, newest first (chain timestamp).
    pub items: Vec<RequestView>,
    /// How many requests match the filter (all pages).
    pub total: i64,
    /// When the poller last read the whole list of the kind asked for (of both kinds,
    /// the older, when no kind is given); `null` before the first complete scan.
    pub as_of: Option<String>,
}

/// The requests of one kind, counted.
#[derive(Debug, Serialize, ToSchema)]
pub struct KindCounts {
    /// Every mirrored request of the kind.
    pub total: i64,
    /// Per status (only statuses that occur).
    pub by_status: BTreeMap<String, i64>,
    /// When the poller last read the whole list of this kind; `null` before the first.
    pub as_of: Option<String>,
}

/// `GET /api/requests/counts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboxCounts {
    /// Partner requests.
    pub partner: KindCounts,
    /// Order requests.
    pub order: KindCounts,
}

/// When each kind's last complete scan finished, and for `None` (both kinds) the
/// older of the two (`None` unless both have one).
fn as_of(states: &[ScanState], kind: Option<&str>) -> Option<String> {
    let of = |kind: &str| {
        states
            .iter()
            .find(|s| s.kind == kind)
            .and_then(|s| s.completed_at)
    };
    let at = match kind {
        Some(kind) => of(kind),
        None => match (of(mirror::KIND_PARTNER), of(mirror::KIND_ORDER)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        },
    };
    at.map(rfc3339)
}

/// `GET /api/requests`: partner and order requests from the mirror of the chain.
#[utoipa::path(get, path = "/api/requests", tag = "inbox",
    params(Strict<Paged<InboxQuery>>),
    responses(
        (status = 200, description = "One page of the filtered requests, newest first, with the total and the mirror's freshness", body = InboxPage),
        Errors<Reader, Params>,
    ))]
#[get("/api/requests?<query..>")]
pub async fn request_list(
    app: &State<App>,
    _caller: Reader,
    query: Strict<Paged<InboxQuery>>,
) -> ApiResult<Json<InboxPage>> {
    let checked = query.checked()?.parse()?;
    let (page, states) = app
        .db
        .run(move |conn| {
            let filter = RequestFilter {
                kind: checked.kind,
                status: checked.status.as_deref(),
                q: checked.q.as_deref(),
                limit: checked.limit,
                offset: checked.offset,
            };
            let page = mirror::list(conn, &filter)?;
            Ok((page, mirror::scan_states(conn)?))
        })
        .await?;
    Ok(Json(InboxPage {
        items: page.items.into_iter().map(Into::into).collect(),
        total: page.total,
        as_of: as_of(&states, checked.kind),
    }))
}

/// `GET /api/requests/counts`: how many requests the mirror holds, per kind and status.
#[utoipa::path(get, path = "/api/requests/counts", tag = "inbox",
    responses(
        (status = 200, description = "Counts per kind and status, and each kind's freshness", body = InboxCounts),
        Errors<Reader>,
    ))]
#[get("/api/requests/counts")]
pub async fn request_counts(app: &State<App>, _caller: Reader) -> ApiResult<Json<InboxCounts>> {
    let (counts, states) = app
        .db
        .run(|conn| Ok((mirror::counts(conn)?, mirror::scan_states(conn)?)))
        .await?;
    let of_kind = |kind: &str| {
        let by_status: BTreeMap<String, i64> = counts
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| (c.status.clone(), c.count))
            .collect();
        KindCounts {
            total: by_status.values().sum(),
            by_status,
            as_of: as_of(&states, Some(kind)),
        }
    };
    Ok(Json(InboxCounts {
        partner: of_kind(mirror::KIND_PARTNER),
        order: of_kind(mirror::KIND_ORDER),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rocket::form::{Form, ValueField};

    use super::*;

    /// The route's query from its fields, read as Rocket reads a query string.
    fn query(pairs: &[(&str, &str)]) -> Paged<InboxQuery> {
        let fields = pairs
            .iter()
            .map(|(name, value)| ValueField::from((*name, *value)));
        Form::parse_iter(fields).unwrap()
    }

    #[test]
    fn the_query_is_checked_and_normalised() {
        let checked = query(&[
            ("kind", "order"),
            ("status", "open"),
            ("q", " wheel "),
            ("limit", "10"),
            ("offset", "20"),
        ])
        .parse()
        .unwrap();
        assert_eq!(
            checked,
            Checked {
                kind: Some("order"),
                status: Some("OPEN".to_owned()),
                q: Some("wheel".to_owned()),
                limit: 10,
                offset: 20,
            }
        );
        let defaults = query(&[]).parse().unwrap();
        assert_eq!(
            (defaults.kind, defaults.limit, defaults.offset),
            (None, 50, 0)
        );
        for (name, value) in [
            ("kind", "partners"),
            ("kind", "Order"),
            ("kind", ""),
            ("status", " OPEN"),
            ("status", "OPEN;DROP"),
            ("limit", "0"),
            ("limit", "501"),
            ("offset", "-1"),
            ("offset", "x"),
        ] {
            let e = query(&[(name, value)]).parse().unwrap_err();
            assert_eq!(e.status.code, 400, "{name}={value}");
            assert_eq!(e.code, crate::error::ErrorCode::InvalidParameter);
            assert!(e.message.starts_with(name), "{}", e.message);
        }
        let long = "q".repeat(MAX_Q_LEN + 1);
        assert!(query(&[("q", &long)]).parse().is_err());
    }
}
