//! The connection enum, alone in its module because `#[derive(diesel::MultiConnection)]`
//! generates public items (`MultiBackend` and its helpers) that carry no documentation.
#![allow(missing_docs, unreachable_pub)]

use diesel::{PgConnection, SqliteConnection};

/// One connection type for both backends, so repositories are written once.
///
/// SQLite comes last because it accepts any string as a path; prefer [`connect`](super::connect)
/// or [`establish`](super::establish) to the derived `Connection::establish`, which hides why PostgreSQL
/// refused a connection.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    /// A PostgreSQL connection: production and the test suite.
    Pg(PgConnection),
    /// A bundled SQLite connection: the embedded default.
    Sqlite(SqliteConnection),
}
