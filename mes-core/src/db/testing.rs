//! Test databases: each test gets its own PostgreSQL schema or SQLite file, so tests
//! run in parallel (threads or processes) without a global lock. Shared by this
//! crate's storage tests and the end-to-end tests (`mes-e2e`); compiled only with the
//! `testing` feature.
#![allow(
    clippy::panic,
    reason = "a test database that cannot be made must fail the test, saying why"
)]

use std::path::PathBuf;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

/// Environment variable naming the PostgreSQL server of the tests.
pub const DATABASE_URL_ENV: &str = "MES_TEST_DATABASE_URL";

/// Used when [`DATABASE_URL_ENV`] is unset: the local trust-auth server.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The PostgreSQL server the tests use: [`DATABASE_URL_ENV`] or [`DEFAULT_PG_URL`].
pub fn pg_base_url() -> String {
    std::env::var(DATABASE_URL_ENV).unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// A schema of its own on the test server, dropped with everything in it on drop.
///
/// Connections made with [`PgSchema::url`] see only this schema (`search_path`), so
/// processes started by a test (a relay, a server) share it through the URL alone.
pub struct PgSchema {
    admin: PgConnection,
    name: String,
    url: String,
}

impl std::fmt::Debug for PgSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSchema")
            .field("name", &self.name)
            .finish()
    }
}

impl PgSchema {
    /// Creates `t_<uuid>` on [`pg_base_url`]; panics (fails the test) if PostgreSQL is
    /// unreachable.
    pub fn create() -> Self {
        Self::create_in(&pg_base_url())
    }

    /// Creates `t_<uuid>` on the server at `base`; panics if it is unreachable.
    pub fn create_in(base: &str) -> Self {
        let mut admin = PgConnection::establish(base).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL tests need a server: cannot connect to {base}: {e}\n\
                 Start it (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) \
                 or point {DATABASE_URL_ENV} at one."
            )
        });
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .unwrap_or_else(|e| panic!("cannot create test schema {name}: {e}"));
        // libpq decodes the percent-escapes: the session runs `-c search_path=t_…`.
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{name}");
        Self { admin, name, url }
    }

    /// A URL whose connections see only this schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Err(e) = self
            .admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
        {
            eprintln!("could not drop test schema {}: {e}", self.name);
        }
    }
}

/// A fresh SQLite file in the temp directory, removed (with its WAL files) on drop.
#[derive(Debug)]
pub struct SqliteFile {
    path: PathBuf,
}

impl SqliteFile {
    /// Picks an unused path; the file is created on first connection.
    pub fn create() -> Self {
        let path = std::env::temp_dir().join(format!(
            "mes-core-test-{}.sqlite",
            uuid::Uuid::new_v4().simple()
        ));
        Self { path }
    }

    /// The database's URL (a plain path).
    pub fn url(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Runs `test` on a migrated connection to a new PostgreSQL schema; the schema is
/// dropped afterwards.
pub fn with_postgres(test: impl FnOnce(&mut super::DbConnection)) {
    let schema = PgSchema::create();
    let mut conn = super::connect(schema.url())
        .unwrap_or_else(|e| panic!("cannot connect to test schema {}: {e}", schema.name()));
    assert!(matches!(conn, super::DbConnection::Pg(_)));
    test(&mut conn);
}

/// Runs `test` on a migrated connection to a new SQLite file; the file is removed
/// afterwards.
pub fn with_sqlite(test: impl FnOnce(&mut super::DbConnection)) {
    let file = SqliteFile::create();
    let mut conn = super::connect(&file.url())
        .unwrap_or_else(|e| panic!("cannot open SQLite file {}: {e}", file.url()));
    assert!(matches!(conn, super::DbConnection::Sqlite(_)));
    test(&mut conn);
}

/// Writes each storage test once and runs it on both backends, as `postgres::name`
/// and `sqlite::name`, so no repository is tested on one backend only.
#[macro_export]
macro_rules! backend_tests {
    ($( $(#[$meta:meta])* fn $name:ident($conn:ident: &mut DbConnection) $body:block )*) => {
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    $crate::db::testing::with_postgres(|$conn: &mut DbConnection| $body)
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
                    $crate::db::testing::with_sqlite(|$conn: &mut DbConnection| $body)
                }
            )*
        }
    };
}
