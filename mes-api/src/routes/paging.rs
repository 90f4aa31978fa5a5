//! Paging of the lists the MES keeps itself (decisions, production orders, the
//! outbox, the inbox): `limit` and `offset`, checked and documented the same way
//! everywhere.

use rocket::form::{self, DataField, FromForm, Options, ValueField};
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterIn};

use crate::error::{ApiError, ApiResult};

/// Most rows one page may hold.
pub const MAX_PAGE: i64 = 500;
/// Rows per page when `limit` is not given.
pub const DEFAULT_PAGE: i64 = 50;
/// Largest `offset` (and the chain lists' `start`): a bound the OpenAPI document can
/// state, far beyond any list's length.
pub const MAX_OFFSET: i64 = i32::MAX as i64;

/// A query parameter's whole number, written strictly: an optional `-` and decimal
/// digits, nothing else (no spaces, no `+`, no fraction); `None` otherwise or if it
/// does not fit an `i64`.
pub fn whole_number(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `limit` and `offset` of the local lists. The fields are text so that a bad value
/// gets this API's own 400 naming it (see [`PageQuery::parse`]), not Rocket's; the
/// OpenAPI document shows the integers and bounds they must hold (a test keeps those
/// equal to [`MAX_PAGE`] and [`DEFAULT_PAGE`]).
#[derive(Debug, FromForm, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Rows per page, 1–500 (default 50)
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500, default = 50)]
    limit: Option<String>,
    /// Rows to skip, 0–2147483647 (default 0)
    #[param(value_type = Option<i64>, minimum = 0, maximum = 2147483647, default = 0)]
    offset: Option<String>,
}

impl PageQuery {
    /// `(limit, offset)` from the query's text: `limit` 1 to [`MAX_PAGE`] (default
    /// [`DEFAULT_PAGE`]), `offset` 0 or more (default 0); each problem is its own 400
    /// naming the parameter.
    pub fn parse(&self) -> ApiResult<(i64, i64)> {
        let limit = match self.limit.as_deref() {
            None => DEFAULT_PAGE,
            Some(l) => whole_number(l)
                .filter(|l| (1..=MAX_PAGE).contains(l))
                .ok_or_else(|| {
                    ApiError::invalid("limit", format!("must be between 1 and {MAX_PAGE}"))
                })?,
        };
        let offset = match self.offset.as_deref() {
            None => 0,
            Some(o) => whole_number(o)
                .filter(|o| (0..=MAX_OFFSET).contains(o))
                .ok_or_else(|| {
                    ApiError::invalid("offset", format!("must be between 0 and {MAX_OFFSET}"))
                })?,
        };
        Ok((limit, offset))
    }
}

/// A list's own query `F` (its filters) and a [`PageQuery`], read from one query
/// string (`?status=done&limit=20`), so that `limit` and `offset` are declared once,
/// on [`PageQuery`], and not again in every filtered list's query. Rocket's forms
/// cannot flatten one struct into another; this sends `limit` and `offset` to the
/// page and every other field to `F`, and documents `F`'s parameters, then the page's.
#[derive(Debug)]
pub struct Paged<F> {
    /// The list's own parameters.
    pub filter: F,
    /// `limit` and `offset`.
    pub page: PageQuery,
}

/// Whether a query field belongs to [`PageQuery`].
fn is_page_field(field: &form::name::NameView<'_>) -> bool {
    matches!(field.key_lossy().as_str(), "limit" | "offset")
}

#[rocket::async_trait]
impl<'r, F: FromForm<'r>> FromForm<'r> for Paged<F> {
    type Context = (F::Context, <PageQuery as FromForm<'r>>::Context);

    fn init(opts: Options) -> Self::Context {
        (F::init(opts), PageQuery::init(opts))
    }

    fn push_value((filter, page): &mut Self::Context, field: ValueField<'r>) {
        if is_page_field(&field.name) {
            PageQuery::push_value(page, field);
        } else {
            F::push_value(filter, field);
        }
    }

    async fn push_data((filter, page): &mut Self::Context, field: DataField<'r, '_>) {
        if is_page_field(&field.name) {
            PageQuery::push_data(page, field).await;
        } else {
            F::push_data(filter, field).await;
        }
    }

    fn finalize((filter, page): Self::Context) -> form::Result<'r, Self> {
        match (F::finalize(filter), PageQuery::finalize(page)) {
            (Ok(filter), Ok(page)) => Ok(Paged { filter, page }),
            (filter, page) => {
                let mut errors = form::Errors::new();
                errors.extend(filter.err().into_iter().flatten());
                errors.extend(page.err().into_iter().flatten());
                Err(errors)
            }
        }
    }
}

impl<F: IntoParams> IntoParams for Paged<F> {
    fn into_params(parameter_in_provider: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let mut params = F::into_params(&parameter_in_provider);
        params.extend(PageQuery::into_params(parameter_in_provider));
        params
    }
}

/// A query `F` in which no key may appear twice. Rocket's query forms keep the first
/// of a repeated key, or turn the field into `None` (`offset=1&offset=2` read as no
/// offset): either would answer something else than what was asked. Every route
/// with a query takes its query through this, and [`Strict::checked`] answers 400
/// `invalid_parameter` naming the repeated key.
#[derive(Debug)]
pub struct Strict<F> {
    inner: F,
    repeated: Option<String>,
}

impl<F> Strict<F> {
    /// The query, or a 400 naming the first key that was given more than once.
    pub fn checked(self) -> ApiResult<F> {
        match self.repeated {
            Some(name) => Err(ApiError::invalid(&name, "given more than once")),
            None => Ok(self.inner),
        }
    }
}

/// Records `name` as seen; returns it if it was seen before.
fn note_key(seen: &mut Vec<String>, name: &form::name::NameView<'_>) -> Option<String> {
    let key = name.key_lossy().as_str().to_owned();
    if seen.contains(&key) {
        return Some(key);
    }
    seen.push(key);
    None
}

#[rocket::async_trait]
impl<'r, F: FromForm<'r>> FromForm<'r> for Strict<F> {
    type Context = (F::Context, Vec<String>, Option<String>);

    fn init(opts: Options) -> Self::Context {
        (F::init(opts), Vec::new(), None)
    }

    fn push_value((inner, seen, repeated): &mut Self::Context, field: ValueField<'r>) {
        if let Some(key) = note_key(seen, &field.name) {
            repeated.get_or_insert(key);
            return;
        }
        F::push_value(inner, field);
    }

    async fn push_data((inner, seen, repeated): &mut Self::Context, field: DataField<'r, '_>) {
        if let Some(key) = note_key(seen, &field.name) {
            repeated.get_or_insert(key);
            return;
        }
        F::push_data(inner, field).await;
    }

    fn finalize((inner, _, repeated): Self::Context) -> form::Result<'r, Self> {
        Ok(Strict {
            inner: F::finalize(inner)?,
            repeated,
        })
    }
}

impl<F: IntoParams> IntoParams for Strict<F> {
    fn into_params(parameter_in_provider: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        F::into_params(parameter_in_provider)
    }
}

/// The schema of the query parameter `name` of `P`, as the OpenAPI document shows it;
/// for the tests that keep documented bounds equal to the checked ones.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn query_param_schema<P: IntoParams>(name: &str) -> serde_json::Value {
    let params = P::into_params(|| None);
    let param = params.into_iter().find(|p| p.name == name).unwrap();
    assert!(
        param.parameter_in == ParameterIn::Query,
        "{name} is not in the query"
    );
    serde_json::to_value(param.schema.unwrap()).unwrap()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rocket::form::Form;
    use serde_json::json;

    use super::*;

    /// `(limit, offset)` of a query string, read as Rocket reads one.
    fn page(query: &str) -> ApiResult<(i64, i64)> {
        Form::<PageQuery>::parse(query).unwrap().parse()
    }

    #[test]
    fn the_documented_bounds_are_the_checked_ones() {
        let limit = query_param_schema::<PageQuery>("limit");
        assert_eq!(limit["minimum"], json!(1));
        assert_eq!(limit["maximum"], json!(MAX_PAGE));
        assert_eq!(limit["default"], json!(DEFAULT_PAGE));
        assert_eq!(page(&format!("limit={MAX_PAGE}")).unwrap(), (MAX_PAGE, 0));
        let e = page(&format!("limit={}", MAX_PAGE + 1)).unwrap_err();
        assert_eq!(e.message, "limit: must be between 1 and 500");
        assert!(page("limit=0").is_err());
        assert_eq!(page("").unwrap(), (DEFAULT_PAGE, 0));
        let offset = query_param_schema::<PageQuery>("offset");
        assert_eq!(offset["minimum"], json!(0));
        assert_eq!(offset["maximum"], json!(MAX_OFFSET));
        let e = page("offset=-1").unwrap_err();
        assert_eq!(e.message, "offset: must be between 0 and 2147483647");
        assert!(page(&format!("offset={}", MAX_OFFSET + 1)).is_err());
        assert!(page("offset=+1").is_err());
        assert!(page("offset= 1").is_err());
        assert!(page("offset=null").is_err());
        assert_eq!(page("offset=0").unwrap(), (DEFAULT_PAGE, 0));
    }

    #[test]
    fn a_repeated_key_is_refused_by_name() {
        let strict = Form::<Strict<PageQuery>>::parse("offset=1&limit=2&offset=1").unwrap();
        let e = strict.checked().unwrap_err();
        assert_eq!(e.message, "offset: given more than once");
        let strict = Form::<Strict<PageQuery>>::parse("offset=1&limit=2").unwrap();
        assert_eq!(strict.checked().unwrap().parse().unwrap(), (2, 1));
    }

    /// A filter of some list, for [`Paged`].
    #[derive(Debug, FromForm, IntoParams)]
    #[into_params(parameter_in = Query)]
    struct Filter {
        status: Option<String>,
    }

    #[test]
    fn paged_sends_limit_and_offset_to_the_page_and_the_rest_to_the_filter() {
        let paged = Form::<Paged<Filter>>::parse("status=done&limit=20&offset=40&other=1").unwrap();
        assert_eq!(paged.filter.status.as_deref(), Some("done"));
        assert_eq!(paged.page.parse().unwrap(), (20, 40));
        let paged = Form::<Paged<Filter>>::parse("").unwrap();
        assert_eq!(paged.filter.status, None);
        assert_eq!(paged.page.parse().unwrap(), (DEFAULT_PAGE, 0));
        let names: Vec<_> = Paged::<Filter>::into_params(|| None)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["status", "limit", "offset"]);
    }
}
