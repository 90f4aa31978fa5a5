//! Paging of the lists the MES keeps itself (decisions, production orders, the
//! outbox, the inbox): `limit` and `offset`, checked the same way everywhere.

use rocket::FromForm;

use crate::error::{ApiError, ApiResult};

/// Most rows one page may hold.
pub const MAX_PAGE: i64 = 500;
/// Rows per page when `limit` is not given.
pub const DEFAULT_PAGE: i64 = 50;

/// `limit` and `offset` of the local lists.
#[derive(Debug, FromForm)]
pub struct PageQuery {
    limit: Option<String>,
    offset: Option<String>,
}

impl PageQuery {
    /// `(limit, offset)`, checked as [`page_bounds`] does.
    pub fn parse(&self) -> ApiResult<(i64, i64)> {
        page_bounds(self.limit.as_deref(), self.offset.as_deref())
    }
}

/// `(limit, offset)` from the query's text: `limit` 1 to [`MAX_PAGE`] (default
/// [`DEFAULT_PAGE`]), `offset` 0 or more (default 0); each problem is its own 400
/// naming the parameter.
pub fn page_bounds(limit: Option<&str>, offset: Option<&str>) -> ApiResult<(i64, i64)> {
    let limit = match limit {
        None => DEFAULT_PAGE,
        Some(l) => l
            .trim()
            .parse()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| {
                ApiError::invalid("limit", format!("must be between 1 and {MAX_PAGE}"))
            })?,
    };
    let offset = match offset {
        None => 0,
        Some(o) => o
            .trim()
            .parse()
            .ok()
            .filter(|o: &i64| *o >= 0)
            .ok_or_else(|| ApiError::invalid("offset", "must be a whole number ≥ 0"))?,
    };
    Ok((limit, offset))
}
