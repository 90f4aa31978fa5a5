//! The service layer: what the HTTP routes and background jobs do, without HTTP.
//!
//! - [`units`]: create, read and change production units; every change runs the
//!   registered [`units::ProductionUnitHook`]s inside the change's transaction, and the
//!   built-in [`units::ChainHook`] enqueues the chain update in `chain_outbox`.
//! - [`reports`]: store a unit's day report, enqueue each unit's report once per day
//!   ([`reports::daily_run`]) and catch up days missed while no server ran.
//! - [`performance`]: each unit's targets and the series of its day reports drawn
//!   against them (local data only).
//! - [`schedule`]: the cron job that calls [`reports::daily_run`] every day.
//! - [`chain`]: the outbox rows these enqueue (topics, keys, bodies).
//! - [`requests`]: list and answer the chain's partner and order requests, record
//!   decisions, take accepted orders over, settle decisions from late replies.
//! - [`tokens`]: the master token, read in one place for everything that sends.
//!
//! Diesel is blocking: the unit and report functions take a `&mut DbConnection` and
//! run synchronously (async callers wrap them in `spawn_blocking`, as the scheduler
//! does); [`requests`] is async, because it waits for the chain.

pub mod chain;
pub mod performance;
pub mod reports;
pub mod requests;
pub mod schedule;
pub mod tokens;
pub mod units;
