//! The daily report: store a unit's day, publish every unit's day once.
//!
//! - [`store_day_report`] (`POST /api/DayReport`) validates and stores a unit's day:
//!   per shift A, B, C and the day, the seven indicators or the inputs they are
//!   computed from ([`Kpis::compute`], ISO 22400-2).
//! - [`daily_run`] enqueues the report of every unit for one date in `chain_outbox`
//!   (`create_day_report`, with the flow id and record ids of docs/protocol.md §7).
//!   The dedup key `day-report:{unit}:{date}` makes it exactly-once per unit and day,
//!   however many servers run it and however often.
//! - [`catch_up`] runs [`daily_run`] for each of the last days, for a server that
//!   was down when they were due.
//!
//! **A unit without a stored report for the date is skipped**: nothing is enqueued
//! and nothing is marked, so a later run for that date (the start-up catch-up, or an
//! on-demand run) publishes the report once it has been stored. **A day once enqueued
//! is read-only**: a day report on the chain is written once (`already_exists`), so
//! [`store_day_report`] refuses to change it ([`ReportError::AlreadySent`]) rather
//! than let the MES and the chain disagree; [`StoredDayReport::enqueued`] says so.

use chrono::{Datelike, Days, NaiveDate, Utc};
use diesel::Connection;
use diesel::result::Error as DieselError;
use mes_codec::report::{KpiInputs, Kpis, Shift};
use mes_core::db::day_reports::{self as repo, DayReport, NewDayReport};
use mes_core::db::{DbConnection, outbox, units};
use serde::{Deserialize, Serialize};

use super::chain;

/// Longest catch-up accepted, in days.
pub const MAX_LOOKBACK_DAYS: u32 = 366;

/// Default catch-up, in days (`MES_REPORT_LOOKBACK_DAYS`).
pub const DEFAULT_LOOKBACK_DAYS: u32 = 7;

/// Longest time a shift or day can account for, in seconds (a day).
pub const MAX_SECONDS: f64 = 86_400.0;

/// Why a report operation failed; each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The report names a unit that does not exist.
    #[error("production unit {0} does not exist")]
    UnknownUnit(String),
    /// The date is not `YYYY-MM-DD` or is in the future.
    #[error("bad date {date:?}: {reason}")]
    BadDate {
        /// The date as given.
        date: String,
        /// Why it was refused.
        reason: String,
    },
    /// A value is negative, not finite, or beyond what a day can hold.
    #[error("{field} of shift {} is out of range ({value}): {reason}", shift.label())]
    OutOfRange {
        /// The shift it was given for.
        shift: Shift,
        /// The field, as the body names it.
        field: &'static str,
        /// The value given.
        value: f64,
        /// The accepted range.
        reason: &'static str,
    },
    /// The body is well formed JSON but says nothing usable (e.g. no shift).
    #[error("invalid report: {0}")]
    Invalid(String),
    /// A catch-up longer than [`MAX_LOOKBACK_DAYS`].
    #[error("look-back of {days} days is longer than the maximum of {max}")]
    LookbackTooLong {
        /// Days asked for.
        days: u32,
        /// [`MAX_LOOKBACK_DAYS`].
        max: u32,
    },
    /// The day was already enqueued for the chain, whose day report is written once:
    /// a change stored now would never reach it.
    #[error(
        "the day report of {unit} for {date} was already sent to the chain, which keeps a day report as first written; it can no longer be changed"
    )]
    AlreadySent {
        /// The unit's code.
        unit: String,
        /// The day.
        date: NaiveDate,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] DieselError),
}

/// Declares [`ShiftInput`] from [`mes_codec::kpi_fields!`]: the inputs and the
/// indicators side by side, as the body has them.
macro_rules! declare_shift_input {
    (inputs { $($(#[$idoc:meta])* $input:ident: $ity:ty,)* }
     indicators { $($(#[$kdoc:meta])* $kpi:ident: $kty:ty,)* }) => {
        /// One shift's (or the day's) values in a [`DayReportInput`]: the measured
        /// inputs, the indicators, or both. Times in seconds.
        ///
        /// An indicator given is stored and published as given; one not given is
        /// computed from the inputs (`null` when they do not suffice). Accepted: times
        /// from 0 to 86400, with APT at most PBT; availability and quality from 0 to 1;
        /// performance (above 1 when faster than planned), OEE and quantities 0 or more,
        /// with GQ at most PQ; failure events 0 or more.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ShiftInput {
            $($(#[$idoc])* pub $input: Option<$ity>,)*
            $($(#[$kdoc])* pub $kpi: Option<$kty>,)*
        }

        impl ShiftInput {
            fn inputs(&self) -> KpiInputs {
                KpiInputs { $($input: self.$input,)* }
            }

            /// The indicators given, without the computed ones.
            fn given_kpis(&self) -> Kpis {
                Kpis { $($kpi: self.$kpi,)* }
            }
        }
    };
}

mes_codec::kpi_fields!(declare_shift_input);

impl ShiftInput {
    fn has_inputs(&self) -> bool {
        self.inputs() != KpiInputs::default()
    }

    /// Given indicators win over computed ones.
    fn kpis(&self) -> Kpis {
        self.given_kpis().or(Kpis::compute(&self.inputs()))
    }

    fn check(&self, shift: Shift) -> Result<(), ReportError> {
        let out = |field, value, reason| ReportError::OutOfRange {
            shift,
            field,
            value,
            reason,
        };
        let seconds: [(&'static str, Option<f64>); 7] = [
            ("planned_busy_time_s", self.planned_busy_time_s),
            ("actual_production_time_s", self.actual_production_time_s),
            ("planned_unit_time_s", self.planned_unit_time_s),
            ("repair_time_s", self.repair_time_s),
            ("mtbf_s", self.mtbf_s),
            ("mttr_s", self.mttr_s),
            ("production_time_s", self.production_time_s),
        ];
        for (field, value) in seconds {
            if let Some(v) = value
                && !(v.is_finite() && (0.0..=MAX_SECONDS).contains(&v))
            {
                return Err(out(field, v, "seconds from 0 to 86400"));
            }
        }
        let fractions = [
            ("availability", self.availability),
            ("quality", self.quality),
        ];
        for (field, value) in fractions {
            if let Some(v) = value
                && !(v.is_finite() && (0.0..=1.0).contains(&v))
            {
                return Err(out(field, v, "a fraction from 0 to 1"));
            }
        }
        let non_negative = [
            ("performance", self.performance),
            ("oee", self.oee),
            ("produced_quantity", self.produced_quantity),
            ("good_quantity", self.good_quantity),
        ];
        for (field, value) in non_negative {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(out(field, v, "a finite number, 0 or more"));
            }
        }
        if let Some(n) = self.failure_count
            && n < 0
        {
            return Err(out("failure_count", f64::from(n), "0 or more"));
        }
        if let (Some(apt), Some(pbt)) = (self.actual_production_time_s, self.planned_busy_time_s)
            && apt > pbt
        {
            return Err(out(
                "actual_production_time_s",
                apt,
                "at most planned_busy_time_s",
            ));
        }
        if let (Some(gq), Some(pq)) = (self.good_quantity, self.produced_quantity)
            && gq > pq
        {
            return Err(out("good_quantity", gq, "at most produced_quantity"));
        }
        Ok(())
    }
}

/// The shifts of a [`DayReportInput`]; at least one must be given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftsInput {
    /// Shift A (record-id shift digit 1).
    #[serde(rename = "A", default, skip_serializing_if = "Option::is_none")]
    pub a: Option<ShiftInput>,
    /// Shift B (2).
    #[serde(rename = "B", default, skip_serializing_if = "Option::is_none")]
    pub b: Option<ShiftInput>,
    /// Shift C (3).
    #[serde(rename = "C", default, skip_serializing_if = "Option::is_none")]
    pub c: Option<ShiftInput>,
    /// The whole day (4). When absent it is computed from the shifts' inputs, as
    /// totals (docs/protocol.md §7); without any inputs the day is left out.
    #[serde(rename = "DAY", default, skip_serializing_if = "Option::is_none")]
    pub day: Option<ShiftInput>,
}

impl ShiftsInput {
    fn given(&self) -> Vec<(Shift, &ShiftInput)> {
        [
            (Shift::A, &self.a),
            (Shift::B, &self.b),
            (Shift::C, &self.c),
            (Shift::Day, &self.day),
        ]
        .into_iter()
        .filter_map(|(shift, input)| input.as_ref().map(|i| (shift, i)))
        .collect()
    }
}

/// Body of `POST /api/DayReport`: one unit's day.
///
/// ```json
/// {"unit": "PT10", "date": "2021-01-11",
///  "shifts": {"A": {"planned_busy_time_s": 28800, "actual_production_time_s": 25200},
///             "DAY": {"oee": 0.71}}}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DayReportInput {
    /// The production unit's code.
    pub unit: String,
    /// The day reported on, `YYYY-MM-DD`; not after tomorrow (UTC), which leaves
    /// room for every time zone's today.
    pub date: String,
    /// Values per shift.
    pub shifts: ShiftsInput,
}

/// One stored shift of a [`StoredDayReport`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StoredShift {
    /// Which shift.
    pub shift: Shift,
    /// The measured inputs, as stored.
    pub inputs: KpiInputs,
    /// The indicators that will be published.
    pub kpis: Kpis,
}

/// A unit's day as stored, returned by [`store_day_report`] and [`get_day_report`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDayReport {
    /// The unit's code.
    pub unit: String,
    /// The day.
    pub date: NaiveDate,
    /// The flow id the report is published under.
    pub report_id: String,
    /// Stored shifts, in order A, B, C, DAY.
    pub shifts: Vec<StoredShift>,
    /// Whether this day was already enqueued for the chain: if so, it is read-only (a
    /// day report is written once on the chain) and a store is refused.
    pub enqueued: bool,
}

fn stored_shift(row: &DayReport) -> Option<StoredShift> {
    Some(StoredShift {
        shift: Shift::from_code(i64::from(row.shift)).ok()?,
        inputs: row.inputs.into(),
        kpis: row.kpis.into(),
    })
}

fn parse_date(date: &str) -> Result<NaiveDate, ReportError> {
    let bad = |reason: &str| ReportError::BadDate {
        date: date.chars().take(40).collect(),
        reason: reason.to_owned(),
    };
    let parsed = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| bad("expected a calendar date as YYYY-MM-DD"))?;
    let tomorrow = Utc::now()
        .date_naive()
        .checked_add_days(Days::new(1))
        .unwrap_or(NaiveDate::MAX);
    if parsed > tomorrow {
        return Err(bad("the day has not begun yet"));
    }
    // Flow ids carry a two-digit ISO year, unique within a century.
    if parsed.year() < 2000 {
        return Err(bad("before 2000"));
    }
    Ok(parsed)
}

/// Validates and stores a unit's day, replacing the shifts it gives (others stay as
/// stored), in one transaction.
pub fn store_day_report(
    conn: &mut DbConnection,
    input: &DayReportInput,
) -> Result<StoredDayReport, ReportError> {
    // An unknown unit first: whatever else the body says, there is nothing to store it
    // on (404 before 400, as for any resource).
    if units::get_by_code(conn, &input.unit)?.is_none() {
        return Err(ReportError::UnknownUnit(input.unit.clone()));
    }
    let date = parse_date(&input.date)?;
    let given = input.shifts.given();
    if given.is_empty() {
        return Err(ReportError::Invalid(
            "no shift given: expected at least one of A, B, C, DAY".into(),
        ));
    }
    for (shift, values) in &given {
        values.check(*shift)?;
    }
    let mut rows: Vec<(Shift, KpiInputs, Kpis)> = given
        .iter()
        .map(|(shift, values)| (*shift, values.inputs(), values.kpis()))
        .collect();
    conn.transaction(|conn| {
        // The unit's row lock orders this store against a daily run of the same unit
        // (which takes it too): a day is either changed before it is enqueued, and
        // the chain gets the change, or refused after.
        if units::lock_by_code(conn, &input.unit)?.is_none() {
            return Err(ReportError::UnknownUnit(input.unit.clone()));
        }
        if day_message(conn, &input.unit, date)?.is_some() {
            return Err(ReportError::AlreadySent {
                unit: input.unit.clone(),
                date,
            });
        }
        if input.shifts.day.is_none() {
            // The day from every shift's inputs as they will be stored: those given
            // here and, for a shift not given, the stored one (a form that enters
            // one shift at a time still gets the whole day's totals). A stored shift
            // with indicators only (a feed's) cannot be summed: the stored day is then
            // left as it is rather than replaced by a part of it.
            let mut with_inputs: Vec<KpiInputs> = given
                .iter()
                .filter(|(_, values)| values.has_inputs())
                .map(|(_, values)| values.inputs())
                .collect();
            let mut complete = true;
            for stored in repo::for_unit_and_date(conn, &input.unit, date)?
                .iter()
                .filter_map(stored_shift)
            {
                let replaced = given.iter().any(|(shift, _)| *shift == stored.shift);
                if stored.shift == Shift::Day || replaced {
                    continue;
                }
                if stored.inputs == KpiInputs::default() {
                    complete = false;
                } else {
                    with_inputs.push(stored.inputs);
                }
            }
            if complete && !with_inputs.is_empty() {
                let day = KpiInputs::sum(&with_inputs);
                rows.push((Shift::Day, day, Kpis::compute(&day)));
            }
        }
        for (shift, inputs, kpis) in &rows {
            repo::upsert(
                conn,
                &NewDayReport {
                    unit_code: &input.unit,
                    report_date: date,
                    shift: i32::from(shift.code()),
                    inputs: (*inputs).into(),
                    kpis: (*kpis).into(),
                },
            )?;
        }
        get_day_report(conn, &input.unit, date)?
            .ok_or_else(|| ReportError::UnknownUnit(input.unit.clone()))
    })
}

/// A unit's stored day, if any shift of it is stored.
pub fn get_day_report(
    conn: &mut DbConnection,
    unit: &str,
    date: NaiveDate,
) -> Result<Option<StoredDayReport>, ReportError> {
    let rows = repo::for_unit_and_date(conn, unit, date)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let report_id = mes_codec::report::FlowId::new(date, unit)
        .map_err(|e| ReportError::Invalid(e.to_string()))?
        .to_string();
    let enqueued = day_message(conn, unit, date)?.is_some();
    Ok(Some(StoredDayReport {
        unit: unit.to_owned(),
        date,
        report_id,
        shifts: rows.iter().filter_map(stored_shift).collect(),
        enqueued,
    }))
}

/// The stored days on `date`: unit `unit`'s ([`ReportError::UnknownUnit`] if there is
/// no such unit), or, without one, those of every unit that has one that day.
pub fn day_reports_on(
    conn: &mut DbConnection,
    date: NaiveDate,
    unit: Option<&str>,
) -> Result<Vec<StoredDayReport>, ReportError> {
    let codes = match unit {
        Some(unit) => {
            if units::get_by_code(conn, unit)?.is_none() {
                return Err(ReportError::UnknownUnit(unit.to_owned()));
            }
            vec![unit.to_owned()]
        }
        None => repo::units_with_reports_on(conn, date)?,
    };
    let mut reports = Vec::with_capacity(codes.len());
    for code in codes {
        if let Some(report) = get_day_report(conn, &code, date)? {
            reports.push(report);
        }
    }
    Ok(reports)
}

/// The outbox row of the report's `create_day_report`, once a daily run enqueued it:
/// where its delivery to the chain stands.
pub fn report_message(
    conn: &mut DbConnection,
    report: &StoredDayReport,
) -> Result<Option<outbox::OutboxRow>, ReportError> {
    Ok(day_message(conn, &report.unit, report.date)?)
}

/// The outbox row of `unit`'s `create_day_report` for `date`, if enqueued: a day with
/// one is read-only.
fn day_message(
    conn: &mut DbConnection,
    unit: &str,
    date: NaiveDate,
) -> Result<Option<outbox::OutboxRow>, DieselError> {
    outbox::get_by_dedup_key(conn, &chain::day_report_dedup_key(unit, date))
}

/// What [`daily_run`] did with one unit.
enum Enqueue {
    NoReport,
    InvalidCode,
    Enqueued,
    Already,
}

/// What one [`daily_run`] did, unit by unit (codes sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyRun {
    /// The reported day.
    pub date: NaiveDate,
    /// Units whose report this run enqueued.
    pub enqueued: Vec<String>,
    /// Units whose report for the day was enqueued before (by another server, an
    /// earlier run, or before a restart): nothing done.
    pub already_enqueued: Vec<String>,
    /// Units without a stored report for the day: skipped, to be published by a
    /// later run once stored.
    pub no_report: Vec<String>,
    /// Units whose code cannot form a flow id (created outside this API): skipped.
    pub invalid_code: Vec<String>,
}

/// Enqueues every unit's report for `date`: the `DayReport` record type (once per
/// unit ever) and the `create_day_report` body, in one transaction per unit, under
/// the dedup key `day-report:{unit}:{date}`. Running it again, on any server, adds
/// nothing.
///
/// The scheduler calls it with yesterday's date in its time zone.
pub fn daily_run(conn: &mut DbConnection, date: NaiveDate) -> Result<DailyRun, ReportError> {
    let mut run = DailyRun {
        date,
        ..DailyRun::default()
    };
    for unit in units::list(conn)? {
        let code = unit.code;
        // A day already enqueued (every day of a restart's catch-up but the newest)
        // costs one lookup and no lock: it is read-only, so nothing can change it.
        if day_message(conn, &code, date)?.is_some() {
            run.already_enqueued.push(code);
            continue;
        }
        // Read and enqueued under the unit's row lock, as [`store_day_report`] stores:
        // what is enqueued is what is stored, and nothing is stored after it.
        let outcome = conn.transaction(|conn| {
            if units::lock_by_code(conn, &code)?.is_none() {
                return Ok(Enqueue::NoReport);
            }
            let rows = repo::for_unit_and_date(conn, &code, date)?;
            let shifts: Vec<(Shift, Kpis)> = rows
                .iter()
                .filter_map(stored_shift)
                .map(|s| (s.shift, s.kpis))
                .collect();
            if shifts.is_empty() {
                return Ok(Enqueue::NoReport);
            }
            let Ok(report) = chain::day_report(date, &code, &shifts) else {
                return Ok(Enqueue::InvalidCode);
            };
            chain::day_report_record_type(&code).enqueue(conn)?;
            Ok::<_, ReportError>(if report.enqueue(conn)? {
                Enqueue::Enqueued
            } else {
                Enqueue::Already
            })
        })?;
        match outcome {
            Enqueue::NoReport => run.no_report.push(code),
            Enqueue::InvalidCode => {
                tracing::warn!(unit = %code, "unit code cannot form a day-report id; report skipped");
                run.invalid_code.push(code);
            }
            Enqueue::Enqueued => run.enqueued.push(code),
            Enqueue::Already => run.already_enqueued.push(code),
        }
    }
    Ok(run)
}

/// Runs [`daily_run`] for the `lookback_days` days before `today`, oldest first
/// (`today` itself is not reported: its day is not over). Days already enqueued
/// cost one lookup per unit.
///
/// `today` is the day of the most recent scheduled run that is due, in the
/// schedule's time zone ([`super::schedule::ReportSchedule::catch_up_today`]).
pub fn catch_up(
    conn: &mut DbConnection,
    today: NaiveDate,
    lookback_days: u32,
) -> Result<Vec<DailyRun>, ReportError> {
    if lookback_days > MAX_LOOKBACK_DAYS {
        return Err(ReportError::LookbackTooLong {
            days: lookback_days,
            max: MAX_LOOKBACK_DAYS,
        });
    }
    let mut runs = Vec::with_capacity(lookback_days as usize);
    for back in (1..=lookback_days).rev() {
        if let Some(date) = today.checked_sub_days(Days::new(u64::from(back))) {
            runs.push(daily_run(conn, date)?);
        }
    }
    Ok(runs)
}
