//! Storage: diesel over PostgreSQL and SQLite through one connection type.
//!
//! Every repository function takes a [`DbConnection`], so the server runs unchanged on
//! PostgreSQL (production, test suite) and on bundled SQLite (the embedded default).
//! Queries stay in the SQL both backends share; the few that cannot (upserts, row
//! locks) match on the variant and run the same diesel query on the inner connection.

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::connection::SimpleConnection;
use diesel::migration::{Migration as _, MigrationSource};
use diesel::prelude::*;
use diesel::r2d2::{ManageConnection, R2D2Connection};
use diesel::{Connection, ConnectionError, ConnectionResult, PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::{Error, Result};

/// Runs the same diesel expression on whichever inner connection `$conn` holds.
///
/// `MultiConnection`'s backend does not support `ON CONFLICT` or `FOR UPDATE`, while
/// both inner backends do: matching on the variant gives each its own query type.
macro_rules! per_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConnection::Pg($c) => $body,
            $crate::db::DbConnection::Sqlite($c) => $body,
        }
    };
}

pub mod chain_requests;
pub mod day_reports;
pub mod decisions;
pub mod notifications;
pub mod operators;
pub mod orders;
pub mod outbox;
pub mod schema;
pub mod sessions;
pub mod targets;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tokens;
pub mod units;

mod connection;
pub use connection::{DbConnection, MultiBackend};

/// PostgreSQL migrations, compiled into the binary so a deployment needs no files.
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// SQLite migrations: the same tables as [`POSTGRES_MIGRATIONS`] in SQLite's dialect.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");

/// How long a SQLite connection waits for another writer before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

/// Session-wide advisory lock key that serialises migrations of server instances
/// starting together on one PostgreSQL database ("mesbrdg0" in ASCII).
const PG_MIGRATION_LOCK: i64 = 0x6d65_7362_7264_6730;

/// Whether `url` names a PostgreSQL database rather than a SQLite file.
fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens a connection without migrating, choosing the backend from the URL.
///
/// `postgres://` and `postgresql://` URLs go to PostgreSQL and report PostgreSQL's
/// own error; anything else is a SQLite path or `file:` URI
/// (a `sqlite://` prefix is accepted and removed). SQLite connections get foreign keys,
/// a busy timeout and write-ahead logging, which SQLite leaves off by default.
pub fn establish(url: &str) -> ConnectionResult<DbConnection> {
    if is_postgres_url(url) {
        return PgConnection::establish(url).map(DbConnection::Pg);
    }
    let path = url.strip_prefix("sqlite://").unwrap_or(url);
    let mut conn = SqliteConnection::establish(path)?;
    configure_sqlite(&mut conn).map_err(ConnectionError::CouldntSetupConfiguration)?;
    Ok(DbConnection::Sqlite(conn))
}

/// Applies the per-connection settings SQLite does not persist (foreign keys, busy
/// timeout) and switches the file to WAL so readers do not block the writer.
fn configure_sqlite(conn: &mut SqliteConnection) -> QueryResult<()> {
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; \
         PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = NORMAL; \
         PRAGMA foreign_keys = ON;"
    ))
}

/// Connects and brings the schema up to date: what a process does at start-up.
pub fn connect(url: &str) -> Result<DbConnection> {
    let mut conn = establish(url)?;
    run_migrations(&mut conn)?;
    Ok(conn)
}

/// Applies the pending embedded migrations of the connection's backend.
///
/// On PostgreSQL an advisory lock makes instances that start together migrate one
/// after the other instead of racing on the same `CREATE TABLE`.
pub fn run_migrations(conn: &mut DbConnection) -> Result<()> {
    match conn {
        DbConnection::Pg(pg) => {
            diesel::sql_query(format!("SELECT pg_advisory_lock({PG_MIGRATION_LOCK})"))
                .execute(pg)?;
            let migrated = apply(pg, POSTGRES_MIGRATIONS);
            let unlocked =
                diesel::sql_query(format!("SELECT pg_advisory_unlock({PG_MIGRATION_LOCK})"))
                    .execute(pg);
            migrated?;
            unlocked?;
            Ok(())
        }
        DbConnection::Sqlite(lite) => apply(lite, SQLITE_MIGRATIONS),
    }
}

/// Runs `f` in a SQLite transaction that holds the write lock from its start
/// (`BEGIN IMMEDIATE`), or in a savepoint when the caller's transaction is already open
/// (`BEGIN IMMEDIATE` is only valid outside one): how a claim (outbox relay,
/// notification worker) reads due rows and takes them without another writer coming
/// in between, since SQLite has no row locks.
pub(crate) fn sqlite_write_transaction<T>(
    lite: &mut SqliteConnection,
    f: impl FnOnce(&mut SqliteConnection) -> QueryResult<T>,
) -> QueryResult<T> {
    use diesel::connection::{AnsiTransactionManager, TransactionManager as _};
    let nested = AnsiTransactionManager::transaction_manager_status_mut(lite)
        .transaction_depth()?
        .is_some();
    if nested {
        lite.transaction(f)
    } else {
        lite.immediate_transaction(f)
    }
}

/// The embedded migrations this build has that the database has not applied, by
/// name, oldest first: what a check of the configuration (`mes-api check-config`) reports
/// without migrating anything.
pub fn pending_migrations(conn: &mut DbConnection) -> Result<Vec<String>> {
    match conn {
        DbConnection::Pg(pg) => pending(pg, POSTGRES_MIGRATIONS),
        DbConnection::Sqlite(lite) => pending(lite, SQLITE_MIGRATIONS),
    }
}

/// [`pending_migrations`] on one backend's connection.
fn pending<DB, C>(conn: &mut C, migrations: EmbeddedMigrations) -> Result<Vec<String>>
where
    DB: diesel::backend::Backend,
    C: MigrationHarness<DB>,
    EmbeddedMigrations: MigrationSource<DB>,
{
    conn.pending_migrations(migrations)
        .map(|pending| pending.iter().map(|m| m.name().to_string()).collect())
        .map_err(|e| Error::Migration(e.to_string()))
}

/// Runs `migrations` on one backend's connection, flattening the boxed error.
fn apply<DB, C>(conn: &mut C, migrations: EmbeddedMigrations) -> Result<()>
where
    DB: diesel::backend::Backend,
    C: MigrationHarness<DB>,
    EmbeddedMigrations: MigrationSource<DB>,
{
    conn.run_pending_migrations(migrations)
        .map(|_| ())
        .map_err(|e| Error::Migration(e.to_string()))
}

/// The columns `T` reads, as a `RETURNING` list that works through [`DbConnection`].
///
/// `.returning(T::as_returning())` does not compile with a `MultiConnection`: its
/// `SelectBy<T, MultiBackend>` is no SQL fragment for the inner backends, while the
/// plain column tuple is. Load the result with `get_result::<T>` (via `Queryable`).
fn returning<T: Selectable<MultiBackend>>() -> T::SelectExpression {
    T::construct_selection()
}

/// The current UTC time at the microsecond precision both backends store, so a value
/// read back equals the value written.
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

/// An r2d2 connection pool over [`DbConnection`].
pub type Pool = diesel::r2d2::Pool<DbManager>;

/// A connection borrowed from a [`Pool`]; it goes back to the pool when dropped.
pub type PooledConnection = diesel::r2d2::PooledConnection<DbManager>;

/// r2d2 manager that opens connections with [`establish`].
///
/// diesel's `ConnectionManager<DbConnection>` would call the derived
/// `Connection::establish`, which tries each backend in turn and, when PostgreSQL is
/// down, reports only "Invalid connection url for multiconnection"; this manager keeps
/// PostgreSQL's error and applies the SQLite settings to every pooled connection.
#[derive(Debug, Clone)]
pub struct DbManager {
    url: String,
}

impl DbManager {
    /// A manager for `url` (same forms as [`establish`]).
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into() }
    }
}

impl ManageConnection for DbManager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> std::result::Result<DbConnection, Self::Error> {
        establish(&self.url).map_err(diesel::r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut DbConnection) -> std::result::Result<(), Self::Error> {
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        std::thread::panicking() || conn.is_broken()
    }
}

/// Builds a pool of at most `max_size` connections after migrating the database once.
///
/// Each SQLite `:memory:` connection is a database of its own: pool a file instead.
pub fn pool(url: &str, max_size: u32) -> Result<Pool> {
    pool_with(url, &PoolOptions::new(max_size))
}

/// How a server's pool bounds what one call can cost the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Most pooled connections.
    pub max_size: u32,
    /// Longest wait for a free connection before the call fails (r2d2's own default
    /// is 30 s: a burst of calls would queue that long).
    pub connection_timeout: std::time::Duration,
    /// PostgreSQL's `statement_timeout` for every pooled session, so that no query
    /// holds a connection longer; `None` leaves the server's setting. SQLite has none.
    pub statement_timeout: Option<std::time::Duration>,
}

impl PoolOptions {
    /// `max_size` connections, r2d2's usual 30 s wait, no statement timeout.
    pub fn new(max_size: u32) -> PoolOptions {
        PoolOptions {
            max_size,
            connection_timeout: std::time::Duration::from_secs(30),
            statement_timeout: None,
        }
    }
}

/// Sets `statement_timeout` on each new PostgreSQL connection of the pool.
#[derive(Debug, Clone, Copy)]
struct StatementTimeout(std::time::Duration);

impl diesel::r2d2::CustomizeConnection<DbConnection, diesel::r2d2::Error> for StatementTimeout {
    fn on_acquire(&self, conn: &mut DbConnection) -> std::result::Result<(), diesel::r2d2::Error> {
        if let DbConnection::Pg(pg) = conn {
            let ms = self.0.as_millis().max(1);
            pg.batch_execute(&format!("SET statement_timeout = {ms}"))
                .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

/// [`pool`] with the bounds of `options`.
pub fn pool_with(url: &str, options: &PoolOptions) -> Result<Pool> {
    let manager = DbManager::new(url);
    let mut first = manager.connect().map_err(|e| match e {
        diesel::r2d2::Error::ConnectionError(e) => Error::Connection(e),
        diesel::r2d2::Error::QueryError(e) => Error::Database(e),
    })?;
    run_migrations(&mut first)?;
    drop(first);
    let mut builder = diesel::r2d2::Pool::builder()
        .max_size(options.max_size)
        .connection_timeout(options.connection_timeout);
    if let Some(timeout) = options.statement_timeout {
        builder = builder.connection_customizer(Box::new(StatementTimeout(timeout)));
    }
    builder
        .build(manager)
        .map_err(|e| Error::Connection(ConnectionError::BadConnection(e.to_string())))
}
