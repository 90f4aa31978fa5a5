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
    /// Rows to skip (default 0)
    #[param(value_type = Option<i64>, minimum = 0, default = 0)]
    offset: Option<String>,
}

impl PageQuery {
    /// `(limit, offset)` from the query's text: `limit` 1 to [`MAX_PAGE`] (default
    /// [`DEFAULT_PAGE`]), `offset` 0 or more (default 0); each problem is its own 400
    /// naming the parameter.
    pub fn parse(&self) -> ApiResult<(i64, i64)> {
        let limit = match self.limit.as_deref() {
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
        let offset = match self.offset.as_deref() {
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
        let e = page("offset=-1").unwrap_err();
        assert_eq!(e.message, "offset: must be a whole number ≥ 0");
        assert_eq!(page("offset=0").unwrap(), (DEFAULT_PAGE, 0));
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
