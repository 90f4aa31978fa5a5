//! Every HTTP route, and the OpenAPI document generated from their annotations.
//!
//! [`routes()`] is what the server mounts and [`ApiDoc`] what `/api/openapi.json`
//! serves, both from one list; a test checks that the two name the same routes.

pub mod admin;
pub mod chain;
pub mod console;
pub mod exports;
pub mod inbox;
pub mod notifications;
pub mod ops;
pub mod paging;
pub mod performance;
pub mod records;
pub mod reports;
pub mod units;

use rocket::{Route, routes};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
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
    performance::unit_target_put,
    performance::day_report_series,
    reports::day_report_store,
    reports::day_report_get,
    reports::daily_run,
    reports::outbox_list,
    reports::outbox_retry,
    reports::outbox_discard,
    reports::outbox_relay,
    exports::day_report_csv,
    exports::decision_csv,
    exports::production_order_csv,
    exports::outbox_csv,
    notifications::notification_list,
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

/// A stored timestamp as every answer writes it: the database keeps UTC without a
/// zone, the API says RFC 3339 with the zone.
pub(crate) fn rfc3339(t: chrono::NaiveDateTime) -> String {
    t.and_utc().to_rfc3339()
}

/// Adds the `bearer` security scheme, and requires it of every operation that can
/// answer 401. A route's auth guard (`Reader`, `Writer`, `Admin`) is what puts 401 among
/// its documented responses (`Errors<…>`), so the guard alone decides whether the
/// document asks for a key: there is no second list to keep in step with the guards.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        let bearer = SecurityRequirement::new("bearer", Vec::<String>::new());
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                if operation.responses.responses.contains_key("401") {
                    operation.security = Some(vec![bearer.clone()]);
                }
            }
        }
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

    #[test]
    fn only_the_public_operations_are_documented_without_the_bearer_key() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut public = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                match operation.get("security") {
                    None => public.push(format!("{} {path}", method.to_uppercase())),
                    Some(security) => assert_eq!(
                        security,
                        &serde_json::json!([{"bearer": []}]),
                        "{method} {path}"
                    ),
                }
            }
        }
        public.sort();
        assert_eq!(
            public,
            [
                "DELETE /api/session",
                "GET /",
                "GET /api/openapi.json",
                "GET /assets/{name}",
                "GET /health/live",
                "GET /health/ready",
                "GET /metrics",
            ],
            "a route without an auth guard, or a guarded one the document calls public"
        );
    }
}
