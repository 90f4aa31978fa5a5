//! Test databases: a PostgreSQL schema of its own per test, dropped afterwards, so
//! tests run in parallel without a global lock; and throw-away SQLite files.

use std::path::PathBuf;

use anyhow::Context as _;

/// A schema of its own on the test server, dropped with everything in it when this
/// value is dropped: mes-core's, so every suite isolates its databases the same way.
pub use mes_core::db::testing::PgSchema;

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

/// Stores `token` as the MES's master token: what every test that talks to the chain
/// needs before its first call.
///
/// # Errors
///
/// When the database refuses the row.
pub fn put_master(conn: &mut mes_core::db::DbConnection, token: &str) -> anyhow::Result<()> {
    use mes_core::db::tokens;
    tokens::put(
        conn,
        &tokens::NewKafkaToken {
            instance_type: tokens::MASTER,
            token,
            ..Default::default()
        },
    )
    .context("storing the master token")?;
    Ok(())
}

/// Stores an operator `olga` and a viewer `victor` and returns their keys (operator,
/// viewer): every API test signs in with both roles.
///
/// # Errors
///
/// When the database refuses the rows.
pub fn add_operators(conn: &mut mes_core::db::DbConnection) -> anyhow::Result<(String, String)> {
    use mes_core::db::operators;
    let mut keys = Vec::new();
    for (name, role) in [
        ("olga", operators::ROLE_OPERATOR),
        ("victor", operators::ROLE_VIEWER),
    ] {
        let key = operators::new_key();
        operators::create(
            conn,
            &operators::NewOperator {
                name,
                role,
                key_hash: &operators::hash_key(&key),
            },
        )
        .with_context(|| format!("storing operator {name}"))?;
        keys.push(key);
    }
    let viewer = keys.pop().context("two keys")?;
    let operator = keys.pop().context("two keys")?;
    Ok((operator, viewer))
}

/// Stores an admin `ada` and returns its key: what tests of the admin routes (tokens,
/// operators) sign in with, since operators may not use them.
///
/// # Errors
///
/// When the database refuses the row.
pub fn add_admin(conn: &mut mes_core::db::DbConnection) -> anyhow::Result<String> {
    use mes_core::db::operators;
    let key = operators::new_key();
    operators::create(
        conn,
        &operators::NewOperator {
            name: "ada",
            role: operators::ROLE_ADMIN,
            key_hash: &operators::hash_key(&key),
        },
    )
    .context("storing admin ada")?;
    Ok(key)
}
