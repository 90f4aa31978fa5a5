//! `day_reports`: each unit's daily KPIs per shift, the input of the 09:30 push to the
//! chain. One row per unit, date and shift, so recomputing a day replaces its values.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;

use super::schema::day_reports;
use super::{DbConnection, now};

/// Shift 1 (A), as coded in record ids.
pub const SHIFT_A: i32 = 1;
/// Shift 2 (B).
pub const SHIFT_B: i32 = 2;
/// Shift 3 (C).
pub const SHIFT_C: i32 = 3;
/// The day average, coded as shift 4.
pub const DAY_AVERAGE: i32 = 4;

/// A stored day report: the measured inputs and the indicators computed from them.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = day_reports)]
pub struct DayReport {
    /// Database id.
    pub id: i64,
    /// Code of the production unit reported on.
    pub unit_code: String,
    /// The day reported on.
    pub report_date: NaiveDate,
    /// 1 = A, 2 = B, 3 = C, 4 = day average.
    pub shift: i32,
    /// Planned busy time, in seconds.
    pub planned_busy_time_s: Option<f64>,
    /// Actual production time, in seconds.
    pub actual_production_time_s: Option<f64>,
    /// Planned run time per item, in seconds.
    pub planned_unit_time_s: Option<f64>,
    /// Items produced.
    pub produced_quantity: Option<f64>,
    /// Items produced without defect.
    pub good_quantity: Option<f64>,
    /// Number of failures.
    pub failure_count: Option<i32>,
    /// Total repair time, in seconds.
    pub repair_time_s: Option<f64>,
    /// Indicator 01.
    pub availability: Option<f64>,
    /// Indicator 02.
    pub performance: Option<f64>,
    /// Indicator 03.
    pub quality: Option<f64>,
    /// Indicator 04: availability × performance × quality.
    pub oee: Option<f64>,
    /// Indicator 05: mean time between failures, in seconds.
    pub mtbf_s: Option<f64>,
    /// Indicator 06: mean time to repair, in seconds.
    pub mttr_s: Option<f64>,
    /// Indicator 07: production time, in seconds.
    pub production_time_s: Option<f64>,
    /// When the row was first written (UTC).
    pub created_at: NaiveDateTime,
    /// When the values were last replaced (UTC).
    pub updated_at: NaiveDateTime,
}

/// The values of one unit, date and shift, for [`upsert`].
#[derive(Debug, Clone, Copy, Default, Insertable)]
#[diesel(table_name = day_reports)]
pub struct NewDayReport<'a> {
    /// See [`DayReport::unit_code`].
    pub unit_code: &'a str,
    /// See [`DayReport::report_date`].
    pub report_date: NaiveDate,
    /// See [`DayReport::shift`].
    pub shift: i32,
    /// See [`DayReport::planned_busy_time_s`].
    pub planned_busy_time_s: Option<f64>,
    /// See [`DayReport::actual_production_time_s`].
    pub actual_production_time_s: Option<f64>,
    /// See [`DayReport::planned_unit_time_s`].
    pub planned_unit_time_s: Option<f64>,
    /// See [`DayReport::produced_quantity`].
    pub produced_quantity: Option<f64>,
    /// See [`DayReport::good_quantity`].
    pub good_quantity: Option<f64>,
    /// See [`DayReport::failure_count`].
    pub failure_count: Option<i32>,
    /// See [`DayReport::repair_time_s`].
    pub repair_time_s: Option<f64>,
    /// See [`DayReport::availability`].
    pub availability: Option<f64>,
    /// See [`DayReport::performance`].
    pub performance: Option<f64>,
    /// See [`DayReport::quality`].
    pub quality: Option<f64>,
    /// See [`DayReport::oee`].
    pub oee: Option<f64>,
    /// See [`DayReport::mtbf_s`].
    pub mtbf_s: Option<f64>,
    /// See [`DayReport::mttr_s`].
    pub mttr_s: Option<f64>,
    /// See [`DayReport::production_time_s`].
    pub production_time_s: Option<f64>,
}

/// Every value of a report: an upsert replaces them all, `None` included, so a
/// recomputed day never keeps a stale indicator.
#[derive(Debug, Clone, Copy, AsChangeset)]
#[diesel(table_name = day_reports, treat_none_as_null = true)]
pub struct DayReportChangeset {
    /// See [`DayReport::planned_busy_time_s`].
    pub planned_busy_time_s: Option<f64>,
    /// See [`DayReport::actual_production_time_s`].
    pub actual_production_time_s: Option<f64>,
    /// See [`DayReport::planned_unit_time_s`].
    pub planned_unit_time_s: Option<f64>,
    /// See [`DayReport::produced_quantity`].
    pub produced_quantity: Option<f64>,
    /// See [`DayReport::good_quantity`].
    pub good_quantity: Option<f64>,
    /// See [`DayReport::failure_count`].
    pub failure_count: Option<i32>,
    /// See [`DayReport::repair_time_s`].
    pub repair_time_s: Option<f64>,
    /// See [`DayReport::availability`].
    pub availability: Option<f64>,
    /// See [`DayReport::performance`].
    pub performance: Option<f64>,
    /// See [`DayReport::quality`].
    pub quality: Option<f64>,
    /// See [`DayReport::oee`].
    pub oee: Option<f64>,
    /// See [`DayReport::mtbf_s`].
    pub mtbf_s: Option<f64>,
    /// See [`DayReport::mttr_s`].
    pub mttr_s: Option<f64>,
    /// See [`DayReport::production_time_s`].
    pub production_time_s: Option<f64>,
}

impl From<&NewDayReport<'_>> for DayReportChangeset {
    fn from(new: &NewDayReport<'_>) -> Self {
        Self {
            planned_busy_time_s: new.planned_busy_time_s,
            actual_production_time_s: new.actual_production_time_s,
            planned_unit_time_s: new.planned_unit_time_s,
            produced_quantity: new.produced_quantity,
            good_quantity: new.good_quantity,
            failure_count: new.failure_count,
            repair_time_s: new.repair_time_s,
            availability: new.availability,
            performance: new.performance,
            quality: new.quality,
            oee: new.oee,
            mtbf_s: new.mtbf_s,
            mttr_s: new.mttr_s,
            production_time_s: new.production_time_s,
        }
    }
}

/// Inserts the report of a unit, date and shift, or replaces the values of the one
/// already stored (keeping its id and `created_at`).
pub fn upsert(conn: &mut DbConnection, new: &NewDayReport<'_>) -> QueryResult<DayReport> {
    let at = now();
    let statement = diesel::insert_into(day_reports::table)
        .values((
            new,
            day_reports::created_at.eq(at),
            day_reports::updated_at.eq(at),
        ))
        .on_conflict((
            day_reports::unit_code,
            day_reports::report_date,
            day_reports::shift,
        ))
        .do_update()
        .set((
            DayReportChangeset::from(new),
            day_reports::updated_at.eq(at),
        ))
        .returning(day_reports::all_columns);
    per_backend!(conn, |c| statement.get_result(c))
}

/// One unit's reports for a day, by shift.
pub fn for_unit_and_date(
    conn: &mut DbConnection,
    unit_code: &str,
    date: NaiveDate,
) -> QueryResult<Vec<DayReport>> {
    day_reports::table
        .filter(day_reports::unit_code.eq(unit_code))
        .filter(day_reports::report_date.eq(date))
        .order(day_reports::shift)
        .select(DayReport::as_select())
        .load(conn)
}

/// Every unit's reports for a day, by unit code then shift.
pub fn for_date(conn: &mut DbConnection, date: NaiveDate) -> QueryResult<Vec<DayReport>> {
    day_reports::table
        .filter(day_reports::report_date.eq(date))
        .order((day_reports::unit_code, day_reports::shift))
        .select(DayReport::as_select())
        .load(conn)
}

/// Codes of the units that have at least one report for the day, sorted.
pub fn units_with_reports_on(conn: &mut DbConnection, date: NaiveDate) -> QueryResult<Vec<String>> {
    day_reports::table
        .filter(day_reports::report_date.eq(date))
        .select(day_reports::unit_code)
        .distinct()
        .order(day_reports::unit_code)
        .load(conn)
}
