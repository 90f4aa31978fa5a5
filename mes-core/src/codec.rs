//! TODO(issue 2): codec
/// Placeholder, replaced by the codec.
#[derive(Debug, thiserror::Error)]
#[error("decode")]
pub struct DecodeError;
