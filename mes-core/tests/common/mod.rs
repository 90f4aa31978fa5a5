//! Test databases: each test gets its own PostgreSQL schema or SQLite file (from
//! `mes_core::db::testing`), so tests run in parallel without a global lock.

use mes_core::db::{self, DbConnection};

pub(crate) use mes_core::db::testing::{PgSchema, SqliteFile};

/// Runs `test` on a migrated connection to a new PostgreSQL schema.
pub(crate) fn with_postgres(test: impl FnOnce(&mut DbConnection)) {
    let schema = PgSchema::create();
    let mut conn = db::connect(schema.url())
        .unwrap_or_else(|e| panic!("cannot connect to test schema {}: {e}", schema.name()));
    assert!(matches!(conn, DbConnection::Pg(_)));
    test(&mut conn);
}

/// Runs `test` on a migrated connection to a new SQLite file.
pub(crate) fn with_sqlite(test: impl FnOnce(&mut DbConnection)) {
    let file = SqliteFile::create();
    let mut conn = db::connect(&file.url())
        .unwrap_or_else(|e| panic!("cannot open SQLite file {}: {e}", file.url()));
    assert!(matches!(conn, DbConnection::Sqlite(_)));
    test(&mut conn);
}

/// Writes each test once and runs it on both backends, as `postgres::name` and
/// `sqlite::name`.
macro_rules! backend_tests {
    ($( $(#[$meta:meta])* fn $name:ident($conn:ident: &mut DbConnection) $body:block )*) => {
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    $crate::common::with_postgres(|$conn: &mut DbConnection| $body)
                }
            )*
        }

        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    $crate::common::with_sqlite(|$conn: &mut DbConnection| $body)
                }
            )*
        }
    };
}
pub(crate) use backend_tests;
