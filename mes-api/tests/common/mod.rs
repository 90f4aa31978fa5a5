#![allow(dead_code)]
//! Test databases: each test gets its own PostgreSQL schema or SQLite file, so tests
//! run in parallel (threads or processes) without a global lock.

use std::path::PathBuf;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use mes_core::db::{self, DbConnection};

/// Used when `MES_TEST_DATABASE_URL` is unset: the local trust-auth server.
const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The PostgreSQL server the tests use.
pub(crate) fn pg_base_url() -> String {
    std::env::var("MES_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// A schema of its own on the test server, dropped with everything in it on drop.
pub(crate) struct PgSchema {
    admin: PgConnection,
    name: String,
    url: String,
}

impl PgSchema {
    /// Creates `t_<uuid>`; panics (fails the test) if PostgreSQL is unreachable.
    pub(crate) fn create() -> Self {
        let base = pg_base_url();
        let mut admin = PgConnection::establish(&base).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL tests need a server: cannot connect to {base}: {e}\n\
                 Start it (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) \
                 or point MES_TEST_DATABASE_URL at one."
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
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The schema's name.
    pub(crate) fn name(&self) -> &str {
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
pub(crate) struct SqliteFile {
    path: PathBuf,
}

impl SqliteFile {
    /// Picks an unused path; the file is created on first connection.
    pub(crate) fn create() -> Self {
        let path = std::env::temp_dir().join(format!(
            "mes-api-test-{}.sqlite",
            uuid::Uuid::new_v4().simple()
        ));
        Self { path }
    }

    /// The database's URL (a plain path).
    pub(crate) fn url(&self) -> String {
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
