//! The database as the server sees it: a pool, and [`Db::run`] to use a connection
//! off the async workers (diesel is blocking). The task's trace
//! ([`kafka_bridge::trace::current`]) goes with the closure to the blocking thread, so
//! that an outbox row written there keeps it.

use mes_core::db::{DbConnection, Pool};

use crate::error::{ApiError, ErrorCode};

/// A cheap-to-clone handle on the connection pool, kept in Rocket's state.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl Db {
    /// Wraps a pool built (and migrated) by [`mes_core::db::pool`].
    pub fn new(pool: Pool) -> Db {
        Db { pool }
    }

    /// The pool, for library users that run their own queries.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs `f` with a pooled connection on the blocking thread pool. A pool that
    /// cannot hand out a connection is a 503; a failing query is mapped by `f`'s
    /// caller through `From<diesel::result::Error>` (503 as well, details logged).
    pub async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, ApiError> + Send + 'static,
    {
        let pool = self.pool.clone();
        let trace = kafka_bridge::trace::current();
        rocket::tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(ApiError::database)?;
            mes_core::trace::in_scope(trace, || f(&mut conn))
        })
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("database task failed: {e}")))?
    }

    /// Runs the query `f` with a pooled connection on the blocking thread pool, for
    /// services with a typed error of their own (they wrap [`DbError`]).
    pub async fn query<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> diesel::QueryResult<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        let trace = kafka_bridge::trace::current();
        rocket::tokio::task::spawn_blocking(move || {
            let mut conn = pool
                .get()
                .map_err(|e| DbError::Unavailable(e.to_string()))?;
            Ok(mes_core::trace::in_scope(trace, || f(&mut conn))?)
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Whether a connection can be had and answers a trivial query.
    pub async fn ping(&self) -> bool {
        self.run(|conn| {
            use diesel::connection::SimpleConnection;
            conn.batch_execute("SELECT 1").map_err(ApiError::database)
        })
        .await
        .is_ok()
    }
}

/// Why [`Db::query`] failed. Its text may name tables and constraints: log it, and
/// answer clients through `From<DbError> for ApiError` (a 503 without details).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The pool could not hand out a connection (the database is down or saturated).
    #[error("no database connection: {0}")]
    Unavailable(String),
    /// The query failed.
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// The blocking task running the query panicked or was cancelled: a bug.
    #[error("database task failed: {0}")]
    Task(String),
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        match e {
            DbError::Task(_) => ApiError::internal(e),
            other => ApiError::database(other),
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> ApiError {
        ApiError::database(e)
    }
}
