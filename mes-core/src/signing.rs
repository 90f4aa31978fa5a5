//! TODO(issue 2): signing
/// Placeholder, replaced by signing.
#[derive(Debug, thiserror::Error)]
#[error("sig")]
pub struct SignatureError;
