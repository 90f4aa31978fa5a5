#![doc = include_str!("../README.md")]

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
pub use server::{SimHandle, Simulator};
