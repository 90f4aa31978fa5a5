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

use super::schema::operators;
use super::{DbConnection, now, returning};

/// May list, answer partner and order requests, and change settings.
pub const ROLE_OPERATOR: &str = "operator";
/// May only list and read.
pub const ROLE_VIEWER: &str = "viewer";

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
    /// [`ROLE_OPERATOR`] or [`ROLE_VIEWER`].
    pub role: String,
    /// [`hash_key`] of the operator's key.
    pub key_hash: String,
    /// When the operator was added (UTC).
    pub created_at: NaiveDateTime,
    /// When the role or key last changed (UTC).
    pub updated_at: NaiveDateTime,
}

impl fmt::Debug for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operator")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
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
/// old key stops working at once).
pub fn put(conn: &mut DbConnection, new: &NewOperator<'_>) -> QueryResult<Operator> {
    let updated = diesel::update(operators::table.filter(operators::name.eq(new.name)))
        .set((
            operators::role.eq(new.role),
            operators::key_hash.eq(new.key_hash),
            operators::updated_at.eq(now()),
        ))
        .returning(returning::<Operator>())
        .get_result(conn)
        .optional()?;
    match updated {
        Some(operator) => Ok(operator),
        None => create(conn, new),
    }
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
