//! The service layer: what the HTTP routes and background jobs do, without HTTP.
//!
//! - [`units`]: create, read and change production units; every change runs the
//!   registered [`units::ProductionUnitHook`]s inside the change's transaction, and the
//!   built-in [`units::ChainHook`] enqueues the chain update in `chain_outbox`.
//! - [`reports`]: store a unit's day report, enqueue each unit's report once per day
//!   ([`reports::daily_run`]) and catch up days missed while no server ran.
//! - [`schedule`]: the cron job that calls [`reports::daily_run`] every day.
//! - [`chain`]: the outbox rows these enqueue (topics, keys, bodies).
//!
//! Diesel is blocking: every function here takes a `&mut DbConnection` and runs
//! synchronously; async callers wrap them in `spawn_blocking` (the scheduler does).

pub mod chain;
pub mod reports;
pub mod schedule;
pub mod units;
