//! The MES's master token (`kafka_tokens`, instance type `Master`): the one place it is
//! read from, for the routes, the outbox relay, the poller and the chain hook.
//!
//! The token is the `auth` of every envelope (docs/protocol.md §2) and may be changed
//! at runtime, from the API or from `mes-api token put` in another process. Every
//! reader asks a [`TokenProvider`]: callers that hold a connection (the chain hook in
//! its transaction, the relay before each batch) read the row; the others (routes,
//! the poller) reuse a read younger than [`TOKEN_TTL`], forgotten at once when this
//! process changes the token ([`TokenProvider::forget`]). So a change takes effect
//! within a second everywhere, and nobody holds a stale copy of their own.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::QueryResult;
use kafka_bridge::relay::TokenSource;
use mes_core::db::{DbConnection, tokens};

use crate::db::{Db, DbError};

/// How long a master row read from the database is reused. Short, because the CLI may
/// change it from another process.
pub const TOKEN_TTL: Duration = Duration::from_secs(1);

/// What the MES needs of its master token row.
#[derive(Clone, PartialEq, Eq)]
pub struct Master {
    /// The secret sent as `auth`.
    pub token: String,
    /// The MES's public key on the chain, if stored (the chain hook's reporter).
    pub public_key: Option<String>,
}

impl fmt::Debug for Master {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Master")
            .field("token", &"[redacted]")
            .field("public_key", &self.public_key)
            .finish()
    }
}

/// The last read of the master row (`None`: there was none) and when it was read.
type Cached = Option<(Option<Master>, Instant)>;

/// The master token, read through a short cache shared by every clone.
#[derive(Clone, Default)]
pub struct TokenProvider {
    cache: Arc<Mutex<Cached>>,
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenProvider(..)")
    }
}

impl TokenProvider {
    /// The master row (`None` if there is none, or its token is empty), read with
    /// `conn` (and remembered for [`TokenProvider::master_async`]). Whoever already
    /// holds a connection reads the row itself: the chain hook inside a unit's
    /// transaction sees the token that transaction sees.
    pub fn master(&self, conn: &mut DbConnection) -> QueryResult<Option<Master>> {
        let master = tokens::master(conn)?
            .filter(|row| !row.token.is_empty())
            .map(|row| Master {
                token: row.token,
                public_key: row.public_key,
            });
        *self.lock() = Some((master.clone(), Instant::now()));
        Ok(master)
    }

    /// The master row for callers without a connection (routes, the poller): from the
    /// cache while it is younger than [`TOKEN_TTL`], else [`TokenProvider::master`] on
    /// a pooled connection, off the async workers.
    pub async fn master_async(&self, db: &Db) -> Result<Option<Master>, DbError> {
        if let Some(cached) = self.cached() {
            return Ok(cached);
        }
        let provider = self.clone();
        db.query(move |conn| provider.master(conn)).await
    }

    /// Forgets the cached row: the next read goes to the database. Called when this
    /// process changed the token.
    pub fn forget(&self) {
        *self.lock() = None;
    }

    /// The relay's view of the token: read through this provider on the relay's
    /// blocking pool before every batch.
    pub fn relay_source(&self, db: &Db) -> TokenSource {
        let (provider, pool) = (self.clone(), db.pool().clone());
        TokenSource::try_from_fn(move || {
            let mut conn = pool.get().map_err(|e| format!("database pool: {e}"))?;
            provider
                .master(&mut conn)
                .map(|master| master.map(|m| m.token))
                .map_err(|e| format!("reading the master token: {e}"))
        })
    }

    fn cached(&self) -> Option<Option<Master>> {
        match self.lock().as_ref() {
            Some((master, at)) if at.elapsed() < TOKEN_TTL => Some(master.clone()),
            _ => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
