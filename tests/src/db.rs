//! Test databases: a PostgreSQL schema of its own per test, dropped afterwards, so
//! tests run in parallel without a global lock; and throw-away SQLite files.

use std::path::PathBuf;

use anyhow::Context as _;
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use crate::database_url;

/// A schema of its own on the test server ([`database_url`]), dropped with
/// everything in it when this value is dropped.
pub struct PgSchema {
    admin: PgConnection,
    name: String,
    url: String,
}

impl PgSchema {
    /// Creates `t_<uuid>` on the test server.
    ///
    /// # Errors
    ///
    /// When PostgreSQL cannot be reached or refuses the schema.
    pub fn create() -> anyhow::Result<PgSchema> {
        let base = database_url();
        let mut admin = PgConnection::establish(&base)
            .with_context(|| "connecting to the test PostgreSQL (MES_TEST_DATABASE_URL)")?;
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .with_context(|| format!("creating schema {name}"))?;
        // libpq decodes the escapes: each session runs with `search_path=t_…`.
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{name}");
        Ok(PgSchema { admin, name, url })
    }

    /// A URL whose connections see only this schema.
    pub fn url(&self) -> &str {
        &self.url
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

/// A directory in the temp dir for one test (a SQLite file, a data dir), removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `mes-e2e-<uuid>` in the temp dir.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created.
    pub fn create() -> anyhow::Result<TempDir> {
        let path = std::env::temp_dir().join(format!("mes-e2e-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
