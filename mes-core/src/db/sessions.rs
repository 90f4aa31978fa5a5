//! `sessions`: signed-in consoles, so the browser's cookie never holds an operator key.
//!
//! `POST /api/session` makes a random session id ([`new_id`]), stores only its SHA-256
//! ([`hash_id`]) with the operator and an expiry, and hands the id to the browser in an
//! HttpOnly cookie. A copy of the database does not let anyone in, and a leaked cookie
//! is worth at most one session: it ends at its expiry, at sign-out, and when the
//! operator is removed or its key rotated ([`super::operators::remove`],
//! [`super::operators::rotate`]).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::DbConnection;
use super::operators::{self, Operator};
use super::schema::{operators as operators_table, sessions};

/// A new random session id: 64 hex digits (two UUID v4, 244 random bits), like a key
/// but without the key's prefix, so neither is mistaken for the other.
pub fn new_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The stored form of a session id: lower-case hex of its SHA-256 (as for keys).
pub fn hash_id(id: &str) -> String {
    operators::hash_key(id)
}

/// Stores a session of operator `operator_id` that ends at `expires_at`, and deletes
/// sessions that have ended (so the table holds only live ones).
pub fn create(
    conn: &mut DbConnection,
    id_hash: &str,
    operator_id: i64,
    created_at: NaiveDateTime,
    expires_at: NaiveDateTime,
) -> QueryResult<()> {
    purge_expired(conn, created_at)?;
    diesel::insert_into(sessions::table)
        .values((
            sessions::id_hash.eq(id_hash),
            sessions::operator_id.eq(operator_id),
            sessions::created_at.eq(created_at),
            sessions::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map(|_| ())
}

/// The operator of the session whose id hashes to `id_hash`, if it exists and has not
/// ended at `at`: what authentication by cookie asks.
pub fn operator_of(
    conn: &mut DbConnection,
    id_hash: &str,
    at: NaiveDateTime,
) -> QueryResult<Option<Operator>> {
    sessions::table
        .inner_join(operators_table::table)
        .filter(sessions::id_hash.eq(id_hash))
        .filter(sessions::expires_at.gt(at))
        .select(Operator::as_select())
        .first(conn)
        .optional()
}

/// Ends one session (sign-out); returns whether it existed.
pub fn delete(conn: &mut DbConnection, id_hash: &str) -> QueryResult<bool> {
    diesel::delete(sessions::table.filter(sessions::id_hash.eq(id_hash)))
        .execute(conn)
        .map(|n| n > 0)
}

/// Deletes the sessions that ended before `at`; returns how many.
pub fn purge_expired(conn: &mut DbConnection, at: NaiveDateTime) -> QueryResult<usize> {
    diesel::delete(sessions::table.filter(sessions::expires_at.le(at))).execute(conn)
}

/// How many live sessions operator `operator_id` has at `at` (for tests and `list`).
pub fn count_for(conn: &mut DbConnection, operator_id: i64, at: NaiveDateTime) -> QueryResult<i64> {
    sessions::table
        .filter(sessions::operator_id.eq(operator_id))
        .filter(sessions::expires_at.gt(at))
        .count()
        .get_result(conn)
}
