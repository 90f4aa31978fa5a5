#![doc = include_str!("../README.md")]

pub mod app;
pub mod auth;
pub mod check;
pub mod cli;
pub mod config;
pub mod db;
// Without the cargo feature `embedded` (on by default) the demo and `chain-sim` are
// left out: the module then only names a type without values, so `App` reads the same.
#[cfg_attr(not(feature = "embedded"), path = "embedded_off.rs")]
pub mod embedded;
pub mod error;
pub mod events;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod mirror;
pub mod notify;
pub mod reconcile;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod service;
pub mod throttled;
