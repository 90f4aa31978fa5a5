//! mes-api: the server side of mes-bridge as a library.
//!
//! [`service`] holds what the HTTP routes and jobs call: production units with their
//! chain hooks, the daily report and its scheduler. It is plain library code over
//! [`mes_core::db::DbConnection`], so an integrator can embed it without the server.

pub mod service;
