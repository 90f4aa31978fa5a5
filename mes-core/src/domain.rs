//! TODO(issue 2): domain
/// Placeholder, replaced by the domain types.
#[derive(Debug, thiserror::Error)]
#[error("invalid")]
pub struct InvalidValue;
