//! The crate's error type.

/// Everything that can go wrong in `mes-core`'s storage, so callers match on one enum.
/// (The codec's errors are `mes_codec::Error`.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be reached or the URL is malformed.
    #[error("cannot connect to the database: {0}")]
    Connection(#[from] diesel::ConnectionError),
    /// Applying the embedded migrations failed.
    #[error("database migration failed: {0}")]
    Migration(String),
    /// A query failed.
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
}

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
