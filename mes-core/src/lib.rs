#![doc = include_str!("../README.md")]

pub mod db;
pub mod error;
pub mod trace;

// The pure modules live in mes-codec; these re-exports keep the `mes_core::codec::…`
// paths of the crates that use both the codec and the storage.
pub use mes_codec::{codec, domain, pylit, redact, report, signing};

pub use error::{Error, Result};
