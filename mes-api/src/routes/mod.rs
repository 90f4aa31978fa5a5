//! Every HTTP route, and the OpenAPI document generated from their annotations.
//!
//! [`routes`] is what the server mounts and [`ApiDoc`] what `/api/openapi.json`
//! serves; a test checks that the two name the same routes.

pub mod admin;
pub mod chain;
pub mod ops;
pub mod records;

use rocket::{Route, routes};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The OpenAPI 3 document of the server.
#[derive(OpenApi)]
#[openapi(
    info(title = "mes-bridge API", description = "MES ↔ supply-chain blockchain over Kafka"),
    paths(
        chain::partner_list,
        chain::partner_ans,
        chain::order_list,
        chain::order_ans,
        chain::partner_answer,
        chain::order_answer,
        records::decision_list,
        records::production_order_list,
        admin::token_list,
        admin::token_put,
        admin::token_delete,
        ops::live,
        ops::ready,
        ops::metrics,
        ops::openapi,
    ),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

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

/// Every route of the core server.
pub fn routes() -> Vec<Route> {
    routes![
        chain::partner_list,
        chain::partner_ans,
        chain::order_list,
        chain::order_ans,
        chain::partner_answer,
        chain::order_answer,
        records::decision_list,
        records::production_order_list,
        admin::token_list,
        admin::token_put,
        admin::token_delete,
        ops::live,
        ops::ready,
        ops::metrics,
        ops::openapi,
    ]
}
