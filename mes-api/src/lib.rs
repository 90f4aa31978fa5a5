#![doc = include_str!("../README.md")]

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod embedded;
pub mod error;
pub mod events;
pub mod metrics;
pub mod mirror;
pub mod notify;
pub mod reconcile;
pub mod routes;
pub mod server;
pub mod service;
