//! The crate's error type.

/// Everything that can go wrong in `mes-codec`, so callers match on one enum.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A reply from the chain could not be decoded.
    #[error(transparent)]
    Decode(#[from] crate::codec::DecodeError),
    /// A value that travels on the wire (id, key, status) is malformed.
    #[error(transparent)]
    InvalidValue(#[from] crate::domain::InvalidValue),
    /// Signing or verifying an envelope failed.
    #[error(transparent)]
    Signature(#[from] crate::signing::SignatureError),
}

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
