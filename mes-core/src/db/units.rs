//! `production_units`: the MES's production units, whose status and process name are
//! pushed to the chain whenever they change.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::production_units;
use super::{DbConnection, now, returning};

/// A stored production unit.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = production_units)]
pub struct ProductionUnit {
    /// Database id.
    pub id: i64,
    /// The MES's code for the unit (e.g. `PT10`); it appears in day-report ids.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Current status, as the MES names it.
    pub status: String,
    /// The process the unit is currently running, if any.
    pub process_name: Option<String>,
    /// When the row was created (UTC).
    pub created_at: NaiveDateTime,
    /// When the row was last changed (UTC).
    pub updated_at: NaiveDateTime,
}

/// A unit to create with [`create`]; timestamps are set by the repository.
#[derive(Debug, Clone, Copy, Insertable)]
#[diesel(table_name = production_units)]
pub struct NewProductionUnit<'a> {
    /// See [`ProductionUnit::code`].
    pub code: &'a str,
    /// See [`ProductionUnit::name`].
    pub name: &'a str,
    /// See [`ProductionUnit::status`].
    pub status: &'a str,
    /// See [`ProductionUnit::process_name`].
    pub process_name: Option<&'a str>,
}

/// The fields whose change is pushed to the chain; `None` clears the process name.
#[derive(Debug, Clone, Copy, AsChangeset)]
#[diesel(table_name = production_units, treat_none_as_null = true)]
pub struct ProductionUnitChangeset<'a> {
    /// See [`ProductionUnit::status`].
    pub status: &'a str,
    /// See [`ProductionUnit::process_name`].
    pub process_name: Option<&'a str>,
}

/// Creates a unit; fails with a unique violation if the code is taken.
pub fn create(conn: &mut DbConnection, new: &NewProductionUnit<'_>) -> QueryResult<ProductionUnit> {
    let at = now();
    diesel::insert_into(production_units::table)
        .values((
            new,
            production_units::created_at.eq(at),
            production_units::updated_at.eq(at),
        ))
        .returning(returning::<ProductionUnit>())
        .get_result(conn)
}

/// The unit with this id, if any.
pub fn get(conn: &mut DbConnection, id: i64) -> QueryResult<Option<ProductionUnit>> {
    production_units::table
        .find(id)
        .select(ProductionUnit::as_select())
        .first(conn)
        .optional()
}

/// The unit with this code (the key the chain and day reports use), if any.
pub fn get_by_code(conn: &mut DbConnection, code: &str) -> QueryResult<Option<ProductionUnit>> {
    production_units::table
        .filter(production_units::code.eq(code))
        .select(ProductionUnit::as_select())
        .first(conn)
        .optional()
}

/// All units, ordered by code.
pub fn list(conn: &mut DbConnection) -> QueryResult<Vec<ProductionUnit>> {
    production_units::table
        .order(production_units::code)
        .select(ProductionUnit::as_select())
        .load(conn)
}

/// Sets status and process name and returns the row as stored, ready to be pushed to
/// the chain; `NotFound` if there is no such unit.
pub fn update_status_and_process(
    conn: &mut DbConnection,
    id: i64,
    status: &str,
    process_name: Option<&str>,
) -> QueryResult<ProductionUnit> {
    diesel::update(production_units::table.find(id))
        .set((
            ProductionUnitChangeset {
                status,
                process_name,
            },
            production_units::updated_at.eq(now()),
        ))
        .returning(returning::<ProductionUnit>())
        .get_result(conn)
}

/// Locks the unit's row for the rest of the caller's transaction and returns it
/// unchanged; `None` if there is no such unit.
///
/// It is a write that sets nothing new, since SQLite has no `SELECT … FOR UPDATE` and
/// a read-then-write transaction there fails with "database is locked" under
/// concurrency instead of waiting: concurrent changes of one unit are serialised.
pub fn lock_by_code(conn: &mut DbConnection, code: &str) -> QueryResult<Option<ProductionUnit>> {
    diesel::update(production_units::table.filter(production_units::code.eq(code)))
        .set(production_units::updated_at.eq(production_units::updated_at))
        .returning(returning::<ProductionUnit>())
        .get_result(conn)
        .optional()
}
