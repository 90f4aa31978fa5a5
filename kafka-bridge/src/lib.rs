#![doc = include_str!("../README.md")]

pub mod bridge;
pub mod error;
pub mod kafka;
pub mod metrics;
pub mod relay;
pub mod trace;

pub use error::{Error, Result};
