//! Performance against targets (issue 13): each unit's targets for its indicators
//! ([`put_target`]) and the series of its stored day reports drawn against them
//! ([`series`]). Local data only: targets never go to the chain, and the series only
//! reads `day_reports`.
//!
//! The indicators are the stored ones (ISO 22400-2, [`mes_codec::report::Kpis`]): as
//! given in `POST /api/DayReport`, or computed from the inputs when stored. A point is
//! a day that has a stored row for the shift asked; `day` is the stored whole-day row
//! (shift 4 / `DAY`), which the store computes from the shifts' inputs as totals when
//! the body gives none; a day stored with indicators per shift only and no inputs has
//! no `DAY` row, and is not in the `day` series.

use chrono::{Datelike, Days, NaiveDate};
use diesel::result::Error as DieselError;
use mes_core::db::DbConnection;
use mes_core::db::day_reports::{self, DAY_AVERAGE, SHIFT_A, SHIFT_B, SHIFT_C};
use mes_core::db::targets::{self, NewUnitTarget, UnitTarget};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::units::{Unit, UnitError};

/// Longest series, in days (`from` to `to` inclusive).
pub const MAX_SERIES_DAYS: i64 = 366;

/// A change of the 7-day average OEE smaller than this (in OEE, 0–1) is `flat`.
pub const TREND_THRESHOLD: f64 = 0.01;

/// How far back from `to` the summary looks for the last day with an OEE, in days
/// (31 days: `to` and the 30 before it; covers the month and the two weeks of trend).
pub const SUMMARY_DAYS: u64 = 30;

/// Body of `PUT /api/ProductionUnit/<id>/target`: the OEE target and, optionally,
/// targets for availability, performance and quality; each a fraction from 0 to 1.
/// An optional target left out or `null` is cleared.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// OEE target, 0–1 (e.g. 0.85).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub oee: f64,
    /// Availability target, 0–1; `null`: none.
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub availability: Option<f64>,
    /// Performance target, 0–1; `null`: none.
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub performance: Option<f64>,
    /// Quality target, 0–1; `null`: none.
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub quality: Option<f64>,
}

impl Target {
    /// Checks that every target given is a fraction from 0 to 1.
    pub fn check(&self) -> Result<(), UnitError> {
        let fields = [
            ("oee", Some(self.oee)),
            ("availability", self.availability),
            ("performance", self.performance),
            ("quality", self.quality),
        ];
        for (field, value) in fields {
            if let Some(v) = value
                && !(v.is_finite() && (0.0..=1.0).contains(&v))
            {
                return Err(UnitError::Invalid {
                    field,
                    reason: format!("{v} is not a fraction from 0 to 1"),
                });
            }
        }
        Ok(())
    }
}

impl From<UnitTarget> for Target {
    fn from(t: UnitTarget) -> Target {
        Target {
            oee: t.oee,
            availability: t.availability,
            performance: t.performance,
            quality: t.quality,
        }
    }
}

/// Sets `unit`'s targets (all of them: an optional one not given is cleared).
pub fn put_target(
    conn: &mut DbConnection,
    unit: &Unit,
    target: &Target,
) -> Result<Target, UnitError> {
    target.check()?;
    let stored = targets::put(
        conn,
        &NewUnitTarget {
            unit_id: unit.id,
            oee: target.oee,
            availability: target.availability,
            performance: target.performance,
            quality: target.quality,
        },
    )?;
    Ok(stored.into())
}

/// `unit`'s targets, if set.
pub fn target_of(conn: &mut DbConnection, unit_id: i64) -> Result<Option<Target>, DieselError> {
    Ok(targets::get(conn, unit_id)?.map(Target::from))
}

/// Which stored rows a series reads: a shift, or the whole day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum SeriesShift {
    /// Shift A.
    A,
    /// Shift B.
    B,
    /// Shift C.
    C,
    /// The whole day: the stored `DAY` row.
    #[serde(rename = "day")]
    Day,
}

impl SeriesShift {
    /// `A`, `B`, `C` or `day`, as the query names them.
    pub fn parse(text: &str) -> Option<SeriesShift> {
        match text {
            "A" => Some(SeriesShift::A),
            "B" => Some(SeriesShift::B),
            "C" => Some(SeriesShift::C),
            "day" => Some(SeriesShift::Day),
            _ => None,
        }
    }

    fn code(self) -> i32 {
        match self {
            SeriesShift::A => SHIFT_A,
            SeriesShift::B => SHIFT_B,
            SeriesShift::C => SHIFT_C,
            SeriesShift::Day => DAY_AVERAGE,
        }
    }
}

/// One day of a [`Series`]: its stored indicators (fractions; performance may exceed
/// 1 when faster than planned), `null` where the day has none.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct SeriesPoint {
    /// The day.
    #[schema(value_type = String, format = Date)]
    pub date: NaiveDate,
    /// Availability.
    pub availability: Option<f64>,
    /// Performance.
    pub performance: Option<f64>,
    /// Quality.
    pub quality: Option<f64>,
    /// OEE.
    pub oee: Option<f64>,
    /// Whether the day's OEE is below the unit's OEE target; `null` without a target
    /// or without an OEE.
    pub under_target: Option<bool>,
}

/// How the 7-day average OEE moved against the 7 days before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trend {
    /// Up by at least [`TREND_THRESHOLD`].
    Up,
    /// Down by at least [`TREND_THRESHOLD`].
    Down,
    /// Within [`TREND_THRESHOLD`].
    Flat,
}

/// The summary row of a unit, as of the series' `to`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct SeriesSummary {
    /// The newest day with an OEE in the 31 days up to `to`.
    #[schema(value_type = Option<String>, format = Date)]
    pub last_date: Option<NaiveDate>,
    /// Its OEE.
    pub last_oee: Option<f64>,
    /// Mean OEE of the days with one in the 7 days up to `to`.
    pub avg_oee_7d: Option<f64>,
    /// That mean against the mean of the 7 days before: `up` or `down` by at least
    /// 0.01, else `flat`; `null` when either week has no OEE.
    pub trend: Option<Trend>,
    /// Days of `to`'s month, up to `to`, whose OEE is under the OEE target (0 without
    /// a target).
    pub days_under_target_this_month: u32,
}

/// `GET /api/DayReport/series`: a unit's indicators per day, its targets, a summary.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Series {
    /// The unit's code.
    pub unit: String,
    /// The shift drawn.
    pub shift: SeriesShift,
    /// First day asked.
    #[schema(value_type = String, format = Date)]
    pub from: NaiveDate,
    /// Last day asked.
    #[schema(value_type = String, format = Date)]
    pub to: NaiveDate,
    /// The unit's targets; `null` when none is set.
    pub target: Option<Target>,
    /// The days from `from` to `to` that have a stored row for the shift, oldest
    /// first (days without one are left out; none: empty).
    pub points: Vec<SeriesPoint>,
    /// Last day, 7-day average, trend, days under target this month.
    pub summary: SeriesSummary,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

fn days_before(date: NaiveDate, days: u64) -> NaiveDate {
    date.checked_sub_days(Days::new(days))
        .unwrap_or(NaiveDate::MIN)
}

/// The summary of `points` (oldest first, none after `to`) as of `to`.
fn summarize(points: &[SeriesPoint], to: NaiveDate) -> SeriesSummary {
    let with_oee = || points.iter().filter_map(|p| p.oee.map(|oee| (p.date, oee)));
    let last = with_oee().next_back();
    let week = |from: NaiveDate, until: NaiveDate| {
        mean(
            with_oee()
                .filter(|(d, _)| (from..=until).contains(d))
                .map(|(_, oee)| oee),
        )
    };
    let this_week = week(days_before(to, 6), to);
    let last_week = week(days_before(to, 13), days_before(to, 7));
    let trend = match (this_week, last_week) {
        (Some(now), Some(before)) if now - before >= TREND_THRESHOLD => Some(Trend::Up),
        (Some(now), Some(before)) if before - now >= TREND_THRESHOLD => Some(Trend::Down),
        (Some(_), Some(_)) => Some(Trend::Flat),
        _ => None,
    };
    let month_start = to.with_day(1).unwrap_or(to);
    let under = points
        .iter()
        .filter(|p| p.date >= month_start && p.under_target == Some(true))
        .count();
    SeriesSummary {
        last_date: last.map(|(d, _)| d),
        last_oee: last.map(|(_, oee)| oee),
        avg_oee_7d: this_week,
        trend,
        days_under_target_this_month: u32::try_from(under).unwrap_or(u32::MAX),
    }
}

/// `unit`'s series of `shift` from `from` to `to` (inclusive; the caller checks
/// `from <= to` and the length), with its targets and the summary as of `to`.
pub fn series(
    conn: &mut DbConnection,
    unit: &Unit,
    shift: SeriesShift,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Series, UnitError> {
    let target = target_of(conn, unit.id)?;
    let start = from.min(days_before(to, SUMMARY_DAYS));
    let limit = to.signed_duration_since(start).num_days() + 1;
    let rows = day_reports::between(
        conn,
        Some(&unit.code),
        Some(shift.code()),
        (start, to),
        limit,
    )?;
    let all: Vec<SeriesPoint> = rows
        .iter()
        .map(|row| SeriesPoint {
            date: row.report_date,
            availability: row.kpis.availability,
            performance: row.kpis.performance,
            quality: row.kpis.quality,
            oee: row.kpis.oee,
            under_target: match (row.kpis.oee, target) {
                (Some(oee), Some(target)) => Some(oee < target.oee),
                _ => None,
            },
        })
        .collect();
    let summary = summarize(&all, to);
    Ok(Series {
        unit: unit.code.clone(),
        shift,
        from,
        to,
        target,
        points: all.into_iter().filter(|p| p.date >= from).collect(),
        summary,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn point(date: &str, oee: f64, target: f64) -> SeriesPoint {
        SeriesPoint {
            date: date.parse().unwrap(),
            availability: None,
            performance: None,
            quality: None,
            oee: Some(oee),
            under_target: Some(oee < target),
        }
    }

    #[test]
    fn the_summary_compares_the_last_week_with_the_week_before() {
        let to: NaiveDate = "2026-12-14".parse().unwrap();
        let mut points = Vec::new();
        for day in 1..=14 {
            let oee = if day <= 7 { 0.6 } else { 0.7 };
            points.push(point(&format!("2026-12-{day:02}"), oee, 0.65));
        }
        let summary = summarize(&points, to);
        assert_eq!(summary.last_date, Some(to));
        assert_eq!(summary.last_oee, Some(0.7));
        assert!((summary.avg_oee_7d.unwrap() - 0.7).abs() < 1e-9);
        assert_eq!(summary.trend, Some(Trend::Up));
        assert_eq!(summary.days_under_target_this_month, 7);
        let flat = summarize(&points[7..], to);
        assert_eq!(flat.trend, None, "no week before");
        let down: Vec<_> = points
            .iter()
            .map(|p| point(&p.date.to_string(), 1.0 - p.oee.unwrap(), 0.5))
            .collect();
        assert_eq!(summarize(&down, to).trend, Some(Trend::Down));
        let summary = summarize(&points, "2027-01-02".parse().unwrap());
        assert_eq!(summary.days_under_target_this_month, 0, "another month");
        assert_eq!(summary.avg_oee_7d, None);
    }

    #[test]
    fn targets_outside_0_to_1_are_refused() {
        let ok = Target {
            oee: 0.85,
            availability: Some(1.0),
            performance: None,
            quality: Some(0.0),
        };
        assert!(ok.check().is_ok());
        let bad = Target { oee: 1.01, ..ok };
        assert!(matches!(
            bad.check(),
            Err(UnitError::Invalid { field: "oee", .. })
        ));
        let bad = Target {
            quality: Some(-0.1),
            ..ok
        };
        assert!(matches!(
            bad.check(),
            Err(UnitError::Invalid {
                field: "quality",
                ..
            })
        ));
    }
}
