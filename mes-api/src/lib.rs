//! mes-api: the HTTP server of mes-bridge, as a library (so integrators can mount
//! its routes in their own Rocket, and tests can drive it in-process) and the thin
//! `mes-api` binary over it.
//!
//! - [`config`]: settings from `Rocket.toml` and `MES_*`;
//! - [`server`]: database, broker (or the [`embedded`] demo), bridge, Rocket;
//! - [`app`]: the state and operations behind the routes;
//! - [`routes`]: the HTTP routes and their OpenAPI document;
//! - [`auth`], [`error`], [`metrics`], [`db`]: what every route shares;
//! - [`cli`]: the command line.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod embedded;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod server;
