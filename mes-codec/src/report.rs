//! Day-report coding and KPI computation.
//!
//! Every day at 09:30 the MES publishes the previous day's KPIs of each production
//! unit. Each report has a *flow id* and each value a *record id*. This coding comes
//! from a later public version of the original's document, which fills in the day
//! report our copy leaves empty; we follow its example. The `BLK_Rty`/`BLK_Rec` bodies
//! that carry a report (`record_types::day_report`, `RecordAction::CreateDayReport`)
//! are ours (docs/protocol.md §4, §7).
//!
//! - flow id `001_{YY}_{weekday}_{week}_{unit}`: Monday 2021-01-11 for unit `PT10` is
//!   `001_21_01_02_PT10`. Weekday is ISO (Monday 01 … Sunday 07), week is the ISO week,
//!   both two digits. `YY` is the **ISO week-numbering year**, not the calendar year:
//!   Sunday 2021-01-03 belongs to week 53 of 2020 and is `001_20_07_53_…`. With the
//!   calendar year, Monday 2024-12-30 (ISO week 1 of 2025) would be `001_24_01_01_…`,
//!   the same id as Monday 2024-01-01: two reports with one id. (Ids repeat after a
//!   century of ISO years, as any two-digit year does.)
//! - record id `{flow id}_{shift}{indicator}`: shift 1=A, 2=B, 3=C, 4=day; indicator
//!   01 availability … 07 production time, so `001_21_01_02_PT10_404` is the day's OEE.
//!   (That document puts the report's database id where we put the flow id.)
//!
//! KPIs follow ISO 22400-2; see [`Kpis::compute`].

use std::fmt;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::domain::InvalidValue;

mod kpis;

pub use kpis::{KpiInputs, Kpis};

/// A shift of the day report; the day average is reported as a fourth shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Shift {
    /// First shift, code 1.
    A = 1,
    /// Second shift, code 2.
    B = 2,
    /// Third shift, code 3.
    C = 3,
    /// The whole day, code 4.
    #[serde(rename = "DAY")]
    Day = 4,
}

impl Shift {
    /// All shifts in code order.
    pub const ALL: [Shift; 4] = [Shift::A, Shift::B, Shift::C, Shift::Day];

    /// The digit used in record ids and in the `day_reports.shift` column.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The shift for a code from the database or an API body.
    pub fn from_code(code: i64) -> Result<Shift, InvalidValue> {
        match code {
            1 => Ok(Shift::A),
            2 => Ok(Shift::B),
            3 => Ok(Shift::C),
            4 => Ok(Shift::Day),
            other => Err(InvalidValue {
                what: "shift",
                reason: format!("expected 1 (A), 2 (B), 3 (C) or 4 (day), got {other}"),
            }),
        }
    }

    /// `A`, `B`, `C` or `DAY`, as written in `BLK_Rec` day-report records.
    pub fn label(self) -> &'static str {
        match self {
            Shift::A => "A",
            Shift::B => "B",
            Shift::C => "C",
            Shift::Day => "DAY",
        }
    }
}

/// The seven indicators of a day report, with their two-digit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Indicator {
    /// 01: actual production time / planned busy time.
    Availability = 1,
    /// 02: ISO 22400's effectiveness: planned time per unit × produced / production time.
    Performance = 2,
    /// 03: good quantity / produced quantity.
    Quality = 3,
    /// 04: availability × performance × quality.
    Oee = 4,
    /// 05: mean operating time between failures, seconds.
    Mtbf = 5,
    /// 06: mean time to repair, seconds.
    Mttr = 6,
    /// 07: actual production time, seconds.
    ProductionTime = 7,
}

impl Indicator {
    /// All indicators in code order.
    pub const ALL: [Indicator; 7] = [
        Indicator::Availability,
        Indicator::Performance,
        Indicator::Quality,
        Indicator::Oee,
        Indicator::Mtbf,
        Indicator::Mttr,
        Indicator::ProductionTime,
    ];

    /// The two-digit code of record ids.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The name written in `BLK_Rec` day-report records.
    pub fn name(self) -> &'static str {
        match self {
            Indicator::Availability => "availability",
            Indicator::Performance => "performance",
            Indicator::Quality => "quality",
            Indicator::Oee => "oee",
            Indicator::Mtbf => "mtbf",
            Indicator::Mttr => "mttr",
            Indicator::ProductionTime => "production_time",
        }
    }
}

/// The id of one unit's report for one day, e.g. `001_21_01_02_PT10`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowId(String);

impl FlowId {
    /// Codes the flow id of `unit`'s report for `date` (see the module docs for why the
    /// year is the ISO week-numbering year).
    ///
    /// The unit code must be non-empty ASCII letters, digits, `-` or `.`, so the id
    /// stays one token in record ids and topics.
    pub fn new(date: NaiveDate, unit: &str) -> Result<FlowId, InvalidValue> {
        if unit.is_empty()
            || unit.len() > 64
            || !unit
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        {
            return Err(InvalidValue {
                what: "unit code",
                reason: "expected 1 to 64 ASCII letters, digits, '-' or '.'".into(),
            });
        }
        let week = date.iso_week();
        Ok(FlowId(format!(
            "001_{:02}_{:02}_{:02}_{unit}",
            week.year().rem_euclid(100),
            date.weekday().number_from_monday(),
            week.week(),
        )))
    }

    /// The record id of one shift's indicator, e.g. `001_21_01_02_PT10_404`.
    pub fn record_id(&self, shift: Shift, indicator: Indicator) -> String {
        format!("{}_{}{:02}", self.0, shift.code(), indicator.code())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds the `create_day_report` body (docs/protocol.md §4) of one unit's day from
/// each shift's indicators; shifts without a row are left out.
pub fn day_report_action(
    date: NaiveDate,
    unit: &str,
    shifts: &[(Shift, Kpis)],
) -> Result<crate::codec::RecordAction, InvalidValue> {
    let flow = FlowId::new(date, unit)?;
    let mut records = Vec::with_capacity(shifts.len() * Indicator::ALL.len());
    for (shift, kpis) in shifts {
        for indicator in Indicator::ALL {
            records.push(crate::codec::DayReportRecord {
                record_id: flow.record_id(*shift, indicator),
                shift: shift.label().to_owned(),
                indicator: indicator.name().to_owned(),
                value: kpis.get(indicator),
            });
        }
    }
    Ok(crate::codec::RecordAction::CreateDayReport {
        report_id: flow.to_string(),
        unit: unit.to_owned(),
        date: date.format("%Y-%m-%d").to_string(),
        records,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn reference_example() {
        let id = FlowId::new(date(2021, 1, 11), "PT10").unwrap();
        assert_eq!(id.as_str(), "001_21_01_02_PT10");
        assert_eq!(
            id.record_id(Shift::A, Indicator::Availability),
            "001_21_01_02_PT10_101"
        );
        assert_eq!(
            id.record_id(Shift::Day, Indicator::Oee),
            "001_21_01_02_PT10_404"
        );
        assert_eq!(
            id.record_id(Shift::C, Indicator::ProductionTime),
            "001_21_01_02_PT10_307"
        );
    }

    #[test]
    fn iso_week_edges() {
        // Sunday 2021-01-03 is in ISO week 53 of 2020.
        assert_eq!(
            FlowId::new(date(2021, 1, 3), "U").unwrap().as_str(),
            "001_20_07_53_U"
        );
        // Monday 2024-12-30 is in ISO week 1 of 2025, and must not collide with
        // Monday 2024-01-01 (ISO week 1 of 2024).
        let late = FlowId::new(date(2024, 12, 30), "U").unwrap();
        let early = FlowId::new(date(2024, 1, 1), "U").unwrap();
        assert_eq!(late.as_str(), "001_25_01_01_U");
        assert_eq!(early.as_str(), "001_24_01_01_U");
        // Thursday 2026-12-31 is in week 53 of 2026; Friday 2027-01-01 too.
        assert_eq!(
            FlowId::new(date(2026, 12, 31), "U").unwrap().as_str(),
            "001_26_04_53_U"
        );
        assert_eq!(
            FlowId::new(date(2027, 1, 1), "U").unwrap().as_str(),
            "001_26_05_53_U"
        );
        assert_eq!(
            FlowId::new(date(2000, 3, 5), "U").unwrap().as_str(),
            "001_00_07_09_U"
        );
    }

    #[test]
    fn flow_ids_are_unique_over_years() {
        let mut seen = std::collections::HashSet::new();
        // Unique within a century of ISO years (YY has two digits).
        let mut d = date(2000, 1, 3);
        while d.iso_week().year() < 2100 {
            assert!(
                seen.insert(FlowId::new(d, "U").unwrap()),
                "duplicate id for {d}"
            );
            d = d.succ_opt().unwrap();
        }
        // 100 ISO years are 5218 whole weeks.
        assert_eq!(seen.len(), 5218 * 7);
    }

    #[test]
    fn day_report_body() {
        let kpis = Kpis {
            availability: Some(0.5),
            ..Kpis::default()
        };
        let action = day_report_action(
            date(2021, 1, 11),
            "PT10",
            &[(Shift::A, kpis), (Shift::Day, kpis)],
        )
        .unwrap();
        let v = serde_json::to_value(&action).unwrap();
        assert_eq!(v["action"], "create_day_report");
        assert_eq!(v["report_id"], "001_21_01_02_PT10");
        assert_eq!(v["date"], "2021-01-11");
        assert_eq!(v["records"].as_array().unwrap().len(), 14);
        assert_eq!(
            v["records"][0],
            serde_json::json!({"record_id": "001_21_01_02_PT10_101", "shift": "A", "indicator": "availability", "value": 0.5})
        );
        assert_eq!(v["records"][8]["record_id"], "001_21_01_02_PT10_402");
        assert_eq!(v["records"][8]["value"], serde_json::Value::Null);
    }

    #[test]
    fn unit_codes_are_checked() {
        assert!(FlowId::new(date(2021, 1, 11), "").is_err());
        assert!(FlowId::new(date(2021, 1, 11), "PT 10").is_err());
        assert!(FlowId::new(date(2021, 1, 11), "PT_10").is_err());
        assert!(FlowId::new(date(2021, 1, 11), "PT-10.a").is_ok());
    }
}
