#![doc = include_str!("../README.md")]

pub mod codec;
pub mod domain;
pub mod error;
pub mod pylit;
pub mod redact;
pub mod report;
pub mod signing;

pub use error::{Error, Result};
