//! `operators`: who may use the HTTP API, and in which role.
//!
//! An operator authenticates with a bearer key. The key is random, shown once when it
//! is made ([`new_key`]) and stored only as its SHA-256 hash ([`hash_key`]): a copy of
//! the database does not let anyone in. Keys carry 244 random bits, so a plain hash
//! (no salt, no slow KDF) is enough and lets a request be checked with one lookup.

use std::fmt;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use sha2::{Digest, Sha256};

use super::schema::{operators, sessions};
use super::{DbConnection, now, returning};

/// May list and read, and also answer partner and order requests, change units, store
/// and run reports and act on the outbox.
pub const ROLE_OPERATOR: &str = "operator";
/// May only list and read.
pub const ROLE_VIEWER: &str = "viewer";
/// May do what an operator may, and also manage the chain identity (`kafka_tokens`)
/// and the operators themselves.
pub const ROLE_ADMIN: &str = "admin";
/// Every stored role, least to most powerful.
pub const ROLES: [&str; 3] = [ROLE_VIEWER, ROLE_OPERATOR, ROLE_ADMIN];

/// How stale [`Operator::last_used_at`] may get before authentication writes it again:
/// one write a minute per key, not one per request.
pub const LAST_USED_PRECISION: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// The prefix of every key, so a leaked key is recognisable (e.g. by secret scanners).
pub const KEY_PREFIX: &str = "mesk_";

/// A stored operator. `key_hash` is not secret, but `Debug` leaves it out anyway.
#[derive(Clone, PartialEq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = operators)]
pub struct Operator {
    /// Database id.
    pub id: i64,
    /// Unique name, recorded with each of the operator's decisions.
    pub name: String,
    /// [`ROLE_VIEWER`], [`ROLE_OPERATOR`] or [`ROLE_ADMIN`].
    pub role: String,
    /// [`hash_key`] of the operator's key.
    pub key_hash: String,
    /// When the operator was added (UTC).
    pub created_at: NaiveDateTime,
    /// When the role or key last changed (UTC).
    pub updated_at: NaiveDateTime,
    /// When the key (or a session opened with it) was last accepted, to within
    /// [`LAST_USED_PRECISION`]; `None` if never.
    pub last_used_at: Option<NaiveDateTime>,
}

impl fmt::Debug for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operator")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("last_used_at", &self.last_used_at)
            .finish_non_exhaustive()
    }
}

/// An operator to store with [`create`] or [`put`].
#[derive(Debug, Clone, Copy, Insertable)]
#[diesel(table_name = operators)]
pub struct NewOperator<'a> {
    /// See [`Operator::name`].
    pub name: &'a str,
    /// See [`Operator::role`].
    pub role: &'a str,
    /// See [`Operator::key_hash`].
    pub key_hash: &'a str,
}

/// A new random key: [`KEY_PREFIX`] and 64 hex digits (two UUID v4, 244 random bits).
pub fn new_key() -> String {
    format!(
        "{KEY_PREFIX}{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The stored form of a key: lower-case hex of its SHA-256.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Adds an operator; fails with a unique violation if the name (or key) is taken.
pub fn create(conn: &mut DbConnection, new: &NewOperator<'_>) -> QueryResult<Operator> {
    let at = now();
    diesel::insert_into(operators::table)
        .values((
            new,
            operators::created_at.eq(at),
            operators::updated_at.eq(at),
        ))
        .returning(returning::<Operator>())
        .get_result(conn)
}

/// Adds the operator, or gives an existing one of that name the new role and key (the
/// old key stops working at once, and the sessions opened with it end).
pub fn put(conn: &mut DbConnection, new: &NewOperator<'_>) -> QueryResult<Operator> {
    conn.transaction(|conn| {
        let updated = diesel::update(operators::table.filter(operators::name.eq(new.name)))
            .set((
                operators::role.eq(new.role),
                operators::key_hash.eq(new.key_hash),
                operators::updated_at.eq(now()),
            ))
            .returning(returning::<Operator>())
            .get_result::<Operator>(conn)
            .optional()?;
        match updated {
            Some(operator) => {
                end_sessions(conn, operator.id)?;
                Ok(operator)
            }
            None => create(conn, new),
        }
    })
}

/// Gives the operator called `name` a new key (its hash): the old key stops working
/// and every session opened with it ends, in one transaction. `None` if there is no
/// such operator.
pub fn rotate(
    conn: &mut DbConnection,
    name: &str,
    key_hash: &str,
) -> QueryResult<Option<Operator>> {
    conn.transaction(|conn| {
        let updated = diesel::update(operators::table.filter(operators::name.eq(name)))
            .set((
                operators::key_hash.eq(key_hash),
                operators::updated_at.eq(now()),
            ))
            .returning(returning::<Operator>())
            .get_result::<Operator>(conn)
            .optional()?;
        if let Some(operator) = &updated {
            end_sessions(conn, operator.id)?;
        }
        Ok(updated)
    })
}

/// Removes the operator called `name` and its sessions; returns whether it existed.
/// Its past decisions keep its name.
pub fn remove(conn: &mut DbConnection, name: &str) -> QueryResult<bool> {
    conn.transaction(|conn| {
        let Some(operator) = by_name(conn, name)? else {
            return Ok(false);
        };
        // The foreign key cascades too; deleting first does not rely on SQLite's
        // per-connection `foreign_keys` pragma.
        end_sessions(conn, operator.id)?;
        delete(conn, operator.id)
    })
}

/// Deletes every session of operator `id`; returns how many there were.
fn end_sessions(conn: &mut DbConnection, id: i64) -> QueryResult<usize> {
    diesel::delete(sessions::table.filter(sessions::operator_id.eq(id))).execute(conn)
}

/// Records that operator `id`'s key was accepted at `at`, if the stored time is older
/// than [`LAST_USED_PRECISION`] (callers check [`needs_touch`] first to save the write).
pub fn touch(conn: &mut DbConnection, id: i64, at: NaiveDateTime) -> QueryResult<()> {
    let stale = at - LAST_USED_PRECISION;
    diesel::update(
        operators::table.filter(
            operators::id.eq(id).and(
                operators::last_used_at
                    .is_null()
                    .or(operators::last_used_at.lt(stale)),
            ),
        ),
    )
    .set(operators::last_used_at.eq(at))
    .execute(conn)
    .map(|_| ())
}

/// Whether [`touch`] at `at` would write: the stored last use is missing or older than
/// [`LAST_USED_PRECISION`].
pub fn needs_touch(operator: &Operator, at: NaiveDateTime) -> bool {
    operator
        .last_used_at
        .is_none_or(|last| last < at - LAST_USED_PRECISION)
}

/// The operator whose key hashes to `key_hash`, if any: what authentication asks.
pub fn by_key_hash(conn: &mut DbConnection, key_hash: &str) -> QueryResult<Option<Operator>> {
    operators::table
        .filter(operators::key_hash.eq(key_hash))
        .select(Operator::as_select())
        .first(conn)
        .optional()
}

/// The operator called `name`, if any.
pub fn by_name(conn: &mut DbConnection, name: &str) -> QueryResult<Option<Operator>> {
    operators::table
        .filter(operators::name.eq(name))
        .select(Operator::as_select())
        .first(conn)
        .optional()
}

/// Every operator, in the order they were added.
pub fn list(conn: &mut DbConnection) -> QueryResult<Vec<Operator>> {
    operators::table
        .order(operators::id)
        .select(Operator::as_select())
        .load(conn)
}

/// Removes an operator; returns whether it existed.
pub fn delete(conn: &mut DbConnection, id: i64) -> QueryResult<bool> {
    diesel::delete(operators::table.find(id))
        .execute(conn)
        .map(|n| n > 0)
}
