//! `unit_targets`: the targets an operator sets for a unit's indicators (OEE, and
//! optionally availability, performance, quality), against which the day reports'
//! series are drawn. Local data: nothing here goes to the chain.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::unit_targets;
use super::{DbConnection, now, returning};

/// A unit's stored targets, fractions from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = unit_targets, primary_key(unit_id))]
pub struct UnitTarget {
    /// The production unit's database id.
    pub unit_id: i64,
    /// OEE target.
    pub oee: f64,
    /// Availability target, if set.
    pub availability: Option<f64>,
    /// Performance target, if set.
    pub performance: Option<f64>,
    /// Quality target, if set.
    pub quality: Option<f64>,
    /// When the targets were last set (UTC).
    pub updated_at: NaiveDateTime,
}

/// The targets to store with [`put`]; `None` clears an optional one.
#[derive(Debug, Clone, Copy, PartialEq, Insertable, AsChangeset)]
#[diesel(table_name = unit_targets, treat_none_as_null = true)]
pub struct NewUnitTarget {
    /// See [`UnitTarget::unit_id`].
    pub unit_id: i64,
    /// See [`UnitTarget::oee`].
    pub oee: f64,
    /// See [`UnitTarget::availability`].
    pub availability: Option<f64>,
    /// See [`UnitTarget::performance`].
    pub performance: Option<f64>,
    /// See [`UnitTarget::quality`].
    pub quality: Option<f64>,
}

/// Sets the unit's targets, replacing all of them (an absent optional one is
/// cleared), and returns them as stored.
pub fn put(conn: &mut DbConnection, new: &NewUnitTarget) -> QueryResult<UnitTarget> {
    let at = now();
    let statement = diesel::insert_into(unit_targets::table)
        .values((new, unit_targets::updated_at.eq(at)))
        .on_conflict(unit_targets::unit_id)
        .do_update()
        .set((new, unit_targets::updated_at.eq(at)))
        .returning(returning::<UnitTarget>());
    per_backend!(conn, |c| statement.get_result(c))
}

/// The unit's targets, if any are set.
pub fn get(conn: &mut DbConnection, unit_id: i64) -> QueryResult<Option<UnitTarget>> {
    unit_targets::table
        .find(unit_id)
        .select(UnitTarget::as_select())
        .first(conn)
        .optional()
}
