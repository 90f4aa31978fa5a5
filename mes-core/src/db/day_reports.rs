//! `day_reports`: each unit's daily KPIs per shift, the input of the 09:30 push to the
//! chain. One row per unit, date and shift, so recomputing a day replaces its values.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use mes_codec::report::{KpiInputs, Kpis};

use super::schema::day_reports;
use super::{DbConnection, now, returning};

/// Shift 1 (A), as coded in record ids.
pub const SHIFT_A: i32 = 1;
/// Shift 2 (B).
pub const SHIFT_B: i32 = 2;
/// Shift 3 (C).
pub const SHIFT_C: i32 = 3;
/// The day average, coded as shift 4.
pub const DAY_AVERAGE: i32 = 4;

/// Declares `$name`, the `day_reports` columns of the codec's `$codec` (the codec
/// cannot derive diesel's traits), and the conversions both ways.
macro_rules! columns {
    ($(#[$doc:meta])* $name:ident for $codec:ident {
        $($(#[$field_doc:meta])* $field:ident: $ty:ty,)*
    }) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, Default, PartialEq, Queryable, Selectable, Insertable, AsChangeset,
        )]
        #[diesel(table_name = day_reports, treat_none_as_null = true)]
        pub struct $name {
            $($(#[$field_doc])* pub $field: Option<$ty>,)*
        }

        impl From<$codec> for $name {
            fn from(values: $codec) -> Self {
                Self { $($field: values.$field,)* }
            }
        }

        impl From<$name> for $codec {
            fn from(columns: $name) -> Self {
                Self { $($field: columns.$field,)* }
            }
        }
    };
}

/// Declares the columns of both KPI field lists of [`mes_codec::kpi_fields!`].
macro_rules! declare_columns {
    (inputs { $($inputs:tt)* } indicators { $($indicators:tt)* }) => {
        columns! {
            /// The measured inputs of a stored report: [`KpiInputs`] as columns.
            InputColumns for KpiInputs { $($inputs)* }
        }
        columns! {
            /// The indicators of a stored report: [`Kpis`] as columns.
            KpiColumns for Kpis { $($indicators)* }
        }
    };
}

mes_codec::kpi_fields!(declare_columns);

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
    /// The measured inputs.
    #[diesel(embed)]
    pub inputs: InputColumns,
    /// The indicators, computed or given.
    #[diesel(embed)]
    pub kpis: KpiColumns,
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
    /// See [`DayReport::inputs`].
    #[diesel(embed)]
    pub inputs: InputColumns,
    /// See [`DayReport::kpis`].
    #[diesel(embed)]
    pub kpis: KpiColumns,
}

/// Every value of a report: an upsert replaces them all, `None` included, so a
/// recomputed day never keeps a stale indicator.
#[derive(Debug, Clone, Copy, AsChangeset)]
#[diesel(table_name = day_reports)]
pub struct DayReportChangeset {
    /// See [`DayReport::inputs`].
    #[diesel(embed)]
    pub inputs: InputColumns,
    /// See [`DayReport::kpis`].
    #[diesel(embed)]
    pub kpis: KpiColumns,
}

impl From<&NewDayReport<'_>> for DayReportChangeset {
    fn from(new: &NewDayReport<'_>) -> Self {
        Self {
            inputs: new.inputs,
            kpis: new.kpis,
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
        .returning(returning::<DayReport>());
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

/// The reports of `unit_code` (or of every unit) from `from` to `to` inclusive, of
/// one `shift` (or of all), by unit code, date and shift; at most `limit` rows.
pub fn between(
    conn: &mut DbConnection,
    unit_code: Option<&str>,
    shift: Option<i32>,
    (from, to): (NaiveDate, NaiveDate),
    limit: i64,
) -> QueryResult<Vec<DayReport>> {
    let mut query = day_reports::table
        .filter(day_reports::report_date.between(from, to))
        .into_boxed();
    if let Some(code) = unit_code {
        query = query.filter(day_reports::unit_code.eq(code));
    }
    if let Some(shift) = shift {
        query = query.filter(day_reports::shift.eq(shift));
    }
    query
        .order((
            day_reports::unit_code,
            day_reports::report_date,
            day_reports::shift,
        ))
        .limit(limit)
        .select(DayReport::as_select())
        .load(conn)
}
