//! Day-report coding and KPI computation.
//!
//! Every day at 09:30 the MES publishes the previous day's KPIs of each production
//! unit. Each report has a *flow id* and each value a *record id*, coded as the
//! reference's example shows:
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
//!
//! KPIs follow ISO 22400-2; see [`Kpis::compute`].

use std::fmt;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::domain::InvalidValue;

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

/// The measured inputs of one shift (or day), as stored in `day_reports`.
///
/// Names follow ISO 22400-2: PBT planned busy time, APT actual production time, PRI
/// planned run time per item, PQ produced quantity, GQ good quantity, FE failure
/// events, TTR total time to repair. Times are seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct KpiInputs {
    /// PBT, seconds.
    pub planned_busy_time_s: Option<f64>,
    /// APT, seconds.
    pub actual_production_time_s: Option<f64>,
    /// PRI, seconds per item.
    pub planned_unit_time_s: Option<f64>,
    /// PQ, items.
    pub produced_quantity: Option<f64>,
    /// GQ, items.
    pub good_quantity: Option<f64>,
    /// FE, count.
    pub failure_count: Option<i32>,
    /// Sum of TTR, seconds.
    pub repair_time_s: Option<f64>,
}

impl KpiInputs {
    /// The day's inputs from its shifts: times, quantities and failures add up, and
    /// PRI is the production-weighted mean, so the day's ratios are computed from the
    /// day's totals rather than averaged (an average of ratios over-weights short
    /// shifts). An input missing in every shift stays missing.
    pub fn sum<'a>(shifts: impl IntoIterator<Item = &'a KpiInputs>) -> KpiInputs {
        fn add(a: Option<f64>, b: Option<f64>) -> Option<f64> {
            match (a, b) {
                (Some(x), Some(y)) => Some(x + y),
                (x, y) => x.or(y),
            }
        }
        let mut total = KpiInputs::default();
        let mut planned_work = None;
        for s in shifts {
            total.planned_busy_time_s = add(total.planned_busy_time_s, s.planned_busy_time_s);
            total.actual_production_time_s =
                add(total.actual_production_time_s, s.actual_production_time_s);
            total.produced_quantity = add(total.produced_quantity, s.produced_quantity);
            total.good_quantity = add(total.good_quantity, s.good_quantity);
            total.repair_time_s = add(total.repair_time_s, s.repair_time_s);
            total.failure_count = match (total.failure_count, s.failure_count) {
                (Some(x), Some(y)) => Some(x.saturating_add(y)),
                (x, y) => x.or(y),
            };
            if let (Some(pri), Some(pq)) = (s.planned_unit_time_s, s.produced_quantity) {
                planned_work = add(planned_work, Some(pri * pq));
            }
        }
        total.planned_unit_time_s = match (planned_work, total.produced_quantity) {
            (Some(work), Some(pq)) if pq > 0.0 => Some(work / pq),
            _ => None,
        };
        total
    }
}

/// The seven indicators of one shift (or day). `None` where the inputs are missing or
/// the denominator is zero: a report never carries NaN or infinity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Kpis {
    /// Availability = APT / PBT.
    pub availability: Option<f64>,
    /// Effectiveness = PRI × PQ / APT.
    pub performance: Option<f64>,
    /// Quality ratio = GQ / PQ.
    pub quality: Option<f64>,
    /// OEE = availability × performance × quality.
    pub oee: Option<f64>,
    /// MTBF = APT / (FE + 1), seconds.
    pub mtbf_s: Option<f64>,
    /// MTTR = ΣTTR / FE, seconds.
    pub mttr_s: Option<f64>,
    /// APT, seconds.
    pub production_time_s: Option<f64>,
}

impl Kpis {
    /// Computes the indicators from the inputs, per ISO 22400-2:
    ///
    /// - availability = APT / PBT;
    /// - performance (effectiveness) = PRI × PQ / APT;
    /// - quality ratio = GQ / PQ;
    /// - OEE index = availability × performance × quality;
    /// - MTBF = ΣTBF / (FE + 1), where the operating time between failures of the
    ///   period adds up to APT and FE failures split it into FE + 1 intervals;
    /// - MTTR = ΣTTR / FE (no value without failures);
    /// - production time = APT.
    pub fn compute(i: &KpiInputs) -> Kpis {
        let ratio = |num: Option<f64>, den: Option<f64>| match (num, den) {
            (Some(n), Some(d)) if d > 0.0 && n.is_finite() && d.is_finite() && n >= 0.0 => {
                Some(n / d)
            }
            _ => None,
        };
        let apt = i
            .actual_production_time_s
            .filter(|t| t.is_finite() && *t >= 0.0);
        let availability = ratio(apt, i.planned_busy_time_s);
        let planned_work = match (i.planned_unit_time_s, i.produced_quantity) {
            (Some(pri), Some(pq)) => Some(pri * pq),
            _ => None,
        };
        let performance = ratio(planned_work, apt);
        let quality = ratio(i.good_quantity, i.produced_quantity);
        let oee = match (availability, performance, quality) {
            (Some(a), Some(p), Some(q)) => Some(a * p * q),
            _ => None,
        };
        let failures = i.failure_count.filter(|f| *f >= 0).map(f64::from);
        Kpis {
            availability,
            performance,
            quality,
            oee,
            mtbf_s: ratio(apt, failures.map(|f| f + 1.0)),
            mttr_s: ratio(i.repair_time_s, failures),
            production_time_s: apt,
        }
    }

    /// The value of one indicator.
    pub fn get(&self, indicator: Indicator) -> Option<f64> {
        match indicator {
            Indicator::Availability => self.availability,
            Indicator::Performance => self.performance,
            Indicator::Quality => self.quality,
            Indicator::Oee => self.oee,
            Indicator::Mtbf => self.mtbf_s,
            Indicator::Mttr => self.mttr_s,
            Indicator::ProductionTime => self.production_time_s,
        }
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

    #[test]
    fn kpis_per_iso_22400() {
        let i = KpiInputs {
            planned_busy_time_s: Some(28_800.0),
            actual_production_time_s: Some(25_200.0),
            planned_unit_time_s: Some(30.0),
            produced_quantity: Some(720.0),
            good_quantity: Some(684.0),
            failure_count: Some(2),
            repair_time_s: Some(1_800.0),
        };
        let k = Kpis::compute(&i);
        assert_eq!(k.availability, Some(0.875));
        assert!((k.performance.unwrap() - 21_600.0 / 25_200.0).abs() < 1e-12);
        assert_eq!(k.quality, Some(0.95));
        let oee = 0.875 * (21_600.0 / 25_200.0) * 0.95;
        assert!((k.oee.unwrap() - oee).abs() < 1e-12);
        assert_eq!(k.mtbf_s, Some(8_400.0));
        assert_eq!(k.mttr_s, Some(900.0));
        assert_eq!(k.production_time_s, Some(25_200.0));
        assert_eq!(k.get(Indicator::Oee), k.oee);
    }

    #[test]
    fn missing_or_zero_inputs_give_no_value() {
        let k = Kpis::compute(&KpiInputs::default());
        assert_eq!(k, Kpis::default());
        let k = Kpis::compute(&KpiInputs {
            planned_busy_time_s: Some(0.0),
            actual_production_time_s: Some(10.0),
            produced_quantity: Some(0.0),
            good_quantity: Some(0.0),
            failure_count: Some(0),
            repair_time_s: Some(0.0),
            planned_unit_time_s: Some(f64::NAN),
        });
        assert_eq!(k.availability, None);
        assert_eq!(k.quality, None);
        assert_eq!(k.performance, None);
        assert_eq!(k.oee, None);
        assert_eq!(k.mttr_s, None);
        assert_eq!(k.mtbf_s, Some(10.0));
    }

    #[test]
    fn day_totals_are_not_an_average_of_ratios() {
        let a = KpiInputs {
            planned_busy_time_s: Some(100.0),
            actual_production_time_s: Some(100.0),
            planned_unit_time_s: Some(1.0),
            produced_quantity: Some(100.0),
            good_quantity: Some(100.0),
            failure_count: Some(0),
            repair_time_s: Some(0.0),
        };
        let b = KpiInputs {
            planned_busy_time_s: Some(300.0),
            actual_production_time_s: Some(150.0),
            planned_unit_time_s: Some(2.0),
            produced_quantity: Some(50.0),
            good_quantity: Some(25.0),
            failure_count: Some(1),
            repair_time_s: Some(60.0),
        };
        let day = KpiInputs::sum([&a, &b, &KpiInputs::default()]);
        assert_eq!(day.planned_busy_time_s, Some(400.0));
        assert_eq!(day.failure_count, Some(1));
        assert!((day.planned_unit_time_s.unwrap() - 200.0 / 150.0).abs() < 1e-12);
        let k = Kpis::compute(&day);
        assert_eq!(k.availability, Some(250.0 / 400.0));
        assert_eq!(k.quality, Some(125.0 / 150.0));
        assert_eq!(k.performance, Some(200.0 / 250.0));
        assert_eq!(k.mttr_s, Some(60.0));
    }
}
