//! Test databases: each test gets its own PostgreSQL schema or SQLite file (from
//! `mes_core::db::testing`), so tests run in parallel without a global lock.

pub(crate) use mes_core::backend_tests;
#[allow(unused_imports)]
pub(crate) use mes_core::db::testing::{PgSchema, SqliteFile};
