//! `chain-sim`: the chain and its gateway, simulated, for development, tests and demos.
//!
//! - [`Ledger`]: the chain's state and rules, pure and synchronous (no I/O): partner
//!   requests, orders, record types, records, idempotency keys, request counters, with
//!   the error codes of docs/protocol.md §6 and real secp256k1 transaction ids.
//! - [`Simulator`]: the ledger behind Kafka. It reads the six request topics and the two
//!   simulator-only ERP topics (§8) and answers on the reply topic, optionally as a
//!   Python literal, without correlation echo, late, signed, or requiring signatures,
//!   only on some topics, committing slowly, losing replies or answering out of order
//!   ([`GatewayOptions`]): the behaviours of real gateways the MES must cope with.
//! - [`demo::seed`]: partner requests and orders to look at (`--demo N`,
//!   `--ledger-size N`).
//! - [`send_erp`]: what `chain-sim erp …` does: play an ERP at runtime.
//! - [`cli`]: the `chain-sim` command line, in the library so that the end-to-end tests
//!   can build the same program as a binary of their own.
//!
//! ```no_run
//! # async fn run() -> kafka_bridge::Result<()> {
//! use kafka_bridge::sim::{SimConfig, Simulator};
//!
//! let sim = Simulator::start(SimConfig::new("127.0.0.1:9092")).await?;
//! println!("chain key {}", sim.public_key());
//! sim.shutdown().await
//! # }
//! ```

pub mod cli;
mod config;
pub mod demo;
mod erp;
mod fate;
mod gateway;
mod ledger;
mod rules;
mod server;
mod wire;

pub use config::{
    DEFAULT_GROUP, DEFAULT_TOKEN, GatewayOptions, Route, SimConfig, SimTopics, derived_mes_agent,
};
pub use erp::{ERP_ORDER_TOPIC, ERP_PARTNER_TOPIC, ErpOrder, ErpPartner, ErpRequest, send_erp};
pub use ledger::{Counters, Ledger, LedgerState, NewOrder, PropertyEntry, Record, Transaction};
pub use rules::{ErrorCode, error_reply};
pub use server::{CORRELATION_HEADER, SimHandle, Simulator};
