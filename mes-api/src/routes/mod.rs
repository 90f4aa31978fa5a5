//! Every HTTP route, and the OpenAPI document generated from their annotations.
//!
//! [`routes()`] is what the server mounts and [`ApiDoc`] what `/api/openapi.json`
//! serves, both from one list; a test checks that the two name the same routes.

pub mod admin;
pub mod chain;
pub mod console;
pub mod inbox;
pub mod ops;
pub mod paging;
pub mod records;
pub mod reports;
pub mod units;

use rocket::{Route, routes};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;

/// Writes the route list once: [`routes()`] mounts it and [`ApiDoc`] documents it.
macro_rules! api {
    ($($module:ident::$route:ident),* $(,)?) => {
        /// The OpenAPI 3 document of the server.
        #[derive(OpenApi)]
        #[openapi(
            info(title = "mes-bridge API", description = "MES ↔ supply-chain blockchain over Kafka"),
            paths($($module::$route),*),
            components(schemas(ErrorBody)),
            modifiers(&BearerAuth),
        )]
        pub struct ApiDoc;

        /// Every route of the core server.
        pub fn routes() -> Vec<Route> {
            routes![$($module::$route),*]
        }
    };
}

api! {
    chain::partner_list,
    chain::partner_ans,
    chain::order_list,
    chain::order_ans,
    chain::partner_answer,
    chain::order_answer,
    inbox::request_list,
    inbox::request_counts,
    records::decision_list,
    records::production_order_list,
    units::unit_create,
    units::unit_list,
    units::unit_get,
    units::unit_patch,
    reports::day_report_store,
    reports::day_report_get,
    reports::daily_run,
    reports::outbox_list,
    reports::outbox_relay,
    admin::token_list,
    admin::token_put,
    admin::token_delete,
    admin::operator_list,
    admin::operator_add,
    admin::operator_remove,
    admin::operator_rotate,
    ops::live,
    ops::ready,
    ops::metrics,
    ops::openapi,
    console::index,
    console::asset,
    console::me,
    console::session_open,
    console::session_close,
    console::events,
}

/// Adds the `bearer` security scheme the routes refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// `/api/partners/<id>/answer?<q..>` → `/api/partners/{id}/answer`.
    fn openapi_path(route: &Route) -> String {
        route
            .uri
            .path()
            .split('/')
            .map(|segment| match segment.strip_prefix('<') {
                Some(name) => format!("{{{}}}", name.trim_end_matches('>')),
                None => segment.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn every_mounted_route_is_in_the_openapi_document_and_nothing_else() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let mut documented = 0;
        for (path, item) in paths {
            documented += item.as_object().unwrap().len();
            assert!(path.starts_with('/'), "{path}");
        }
        let mounted = routes();
        for route in &mounted {
            let path = openapi_path(route);
            let method = route.method.as_str().to_ascii_lowercase();
            assert!(
                paths.get(&path).and_then(|p| p.get(&method)).is_some(),
                "{} {path} is mounted but not documented",
                route.method
            );
        }
        assert_eq!(
            documented,
            mounted.len(),
            "documented operations that are not mounted"
        );
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
