//! Storage: diesel over PostgreSQL and SQLite through one connection type.
