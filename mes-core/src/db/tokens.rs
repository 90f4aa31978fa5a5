//! `kafka_tokens`: the MES's identity on the chain (the original `KafkaToken` model).
//!
//! Every request to the chain carries the `token` of the row whose instance type is
//! [`MASTER`]; the database guarantees there is at most one such row.

use std::fmt;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::kafka_tokens;
use super::{DbConnection, now, returning};

/// Instance type (`tipoInstancia`) of the row whose token authenticates requests.
pub const MASTER: &str = "Master";

/// A stored token row. `Debug` redacts `token` and `password`: secrets never reach logs.
#[derive(Clone, PartialEq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = kafka_tokens)]
pub struct KafkaToken {
    /// Database id.
    pub id: i64,
    /// The original `tipoInstancia`, e.g. [`MASTER`].
    pub instance_type: String,
    /// Secret sent as `auth` in every envelope.
    pub token: String,
    /// The MES's public key on the chain (the original `publicKey`).
    pub public_key: Option<String>,
    /// Secret that goes with the identity.
    pub password: Option<String>,
    /// The chain record that stands for this MES.
    pub record_id: Option<String>,
    /// Topic associated with the identity.
    pub topic: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// When the row was first written (UTC).
    pub created_at: NaiveDateTime,
    /// When the row was last written (UTC).
    pub updated_at: NaiveDateTime,
}

/// Shown instead of a secret in `Debug` output.
const REDACTED: &str = "<redacted>";

impl fmt::Debug for KafkaToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaToken")
            .field("id", &self.id)
            .field("instance_type", &self.instance_type)
            .field("token", &REDACTED)
            .field("public_key", &self.public_key)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("record_id", &self.record_id)
            .field("topic", &self.topic)
            .field("name", &self.name)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// A token to store with [`put`]; timestamps are set by the repository.
#[derive(Clone, Copy, Default, Insertable)]
#[diesel(table_name = kafka_tokens)]
pub struct NewKafkaToken<'a> {
    /// See [`KafkaToken::instance_type`].
    pub instance_type: &'a str,
    /// See [`KafkaToken::token`].
    pub token: &'a str,
    /// See [`KafkaToken::public_key`].
    pub public_key: Option<&'a str>,
    /// See [`KafkaToken::password`].
    pub password: Option<&'a str>,
    /// See [`KafkaToken::record_id`].
    pub record_id: Option<&'a str>,
    /// See [`KafkaToken::topic`].
    pub topic: Option<&'a str>,
    /// See [`KafkaToken::name`].
    pub name: Option<&'a str>,
}

impl fmt::Debug for NewKafkaToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKafkaToken")
            .field("instance_type", &self.instance_type)
            .field("token", &REDACTED)
            .field("public_key", &self.public_key)
            .field("password", &self.password.map(|_| REDACTED))
            .field("record_id", &self.record_id)
            .field("topic", &self.topic)
            .field("name", &self.name)
            .finish()
    }
}

/// Replaces every field of an existing row: `None` clears a column, so putting the
/// master twice leaves exactly what the second put said.
#[derive(Clone, Copy, AsChangeset)]
#[diesel(table_name = kafka_tokens, treat_none_as_null = true)]
pub struct KafkaTokenChangeset<'a> {
    /// See [`KafkaToken::token`].
    pub token: &'a str,
    /// See [`KafkaToken::public_key`].
    pub public_key: Option<&'a str>,
    /// See [`KafkaToken::password`].
    pub password: Option<&'a str>,
    /// See [`KafkaToken::record_id`].
    pub record_id: Option<&'a str>,
    /// See [`KafkaToken::topic`].
    pub topic: Option<&'a str>,
    /// See [`KafkaToken::name`].
    pub name: Option<&'a str>,
}

impl<'a> From<&NewKafkaToken<'a>> for KafkaTokenChangeset<'a> {
    fn from(new: &NewKafkaToken<'a>) -> Self {
        Self {
            token: new.token,
            public_key: new.public_key,
            password: new.password,
            record_id: new.record_id,
            topic: new.topic,
            name: new.name,
        }
    }
}

/// Stores a token. A [`MASTER`] token replaces the existing master's fields (so
/// `token put --instance-type Master` can be run again); other types add a row.
pub fn put(conn: &mut DbConnection, new: &NewKafkaToken<'_>) -> QueryResult<KafkaToken> {
    if new.instance_type != MASTER {
        return insert(conn, new);
    }
    if let Some(updated) = replace_master(conn, new)? {
        return Ok(updated);
    }
    // A savepoint keeps a caller's PostgreSQL transaction usable if a concurrent put
    // inserted the master first; that put's row is then replaced.
    match conn.transaction(|conn| insert(conn, new)) {
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => replace_master(conn, new)?.ok_or(diesel::result::Error::NotFound),
        inserted => inserted,
    }
}

/// Inserts `new` as a fresh row.
fn insert(conn: &mut DbConnection, new: &NewKafkaToken<'_>) -> QueryResult<KafkaToken> {
    let at = now();
    diesel::insert_into(kafka_tokens::table)
        .values((
            new,
            kafka_tokens::created_at.eq(at),
            kafka_tokens::updated_at.eq(at),
        ))
        .returning(returning::<KafkaToken>())
        .get_result(conn)
}

/// Overwrites the master row with `new`, if there is one.
fn replace_master(
    conn: &mut DbConnection,
    new: &NewKafkaToken<'_>,
) -> QueryResult<Option<KafkaToken>> {
    diesel::update(kafka_tokens::table.filter(kafka_tokens::instance_type.eq(MASTER)))
        .set((
            KafkaTokenChangeset::from(new),
            kafka_tokens::updated_at.eq(now()),
        ))
        .returning(returning::<KafkaToken>())
        .get_result(conn)
        .optional()
}

/// The master token row, whose `token` authenticates every request to the chain.
pub fn master(conn: &mut DbConnection) -> QueryResult<Option<KafkaToken>> {
    kafka_tokens::table
        .filter(kafka_tokens::instance_type.eq(MASTER))
        .select(KafkaToken::as_select())
        .first(conn)
        .optional()
}

/// All token rows in insertion order.
pub fn list(conn: &mut DbConnection) -> QueryResult<Vec<KafkaToken>> {
    kafka_tokens::table
        .order(kafka_tokens::id)
        .select(KafkaToken::as_select())
        .load(conn)
}

/// Deletes a row; returns whether it existed.
pub fn delete(conn: &mut DbConnection, id: i64) -> QueryResult<bool> {
    diesel::delete(kafka_tokens::table.find(id))
        .execute(conn)
        .map(|n| n > 0)
}
