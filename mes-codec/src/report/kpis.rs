//! Key performance indicators per ISO 22400-2: the measured inputs of a shift and the
//! seven indicators computed from them.
//!
//! Both field lists are written once, in [`kpi_fields!`](crate::kpi_fields): every
//! struct that holds them is declared from that list (here [`KpiInputs`] and [`Kpis`],
//! in mes-core the `day_reports` columns, in mes-api the body of `POST /api/DayReport`),
//! so adding an input or an indicator is one edit there, plus its formula in
//! [`Kpis::compute`] and, for an indicator, its [`Indicator`] code.

use serde::{Deserialize, Serialize};

use super::Indicator;

/// Hands the KPI field lists to the macro `$callback`, which declares whatever holds
/// them. It exists so that the fields are written once for every struct that carries
/// them, whatever that struct derives (serde here, diesel in the storage, which this
/// crate must not depend on).
///
/// `$callback` receives
///
/// ```text
/// inputs { $( $(#[doc = "…"])* $field: $type, )* }
/// indicators { $( $(#[doc = "…"])* $field: $type, )* }
/// ```
///
/// where each field is meant to be stored as `Option<$type>` (`None`: not measured, or
/// not computable). The JSON keys and the `day_reports` columns are these names.
///
/// ```
/// macro_rules! names {
///     (inputs { $($(#[$i:meta])* $input:ident: $it:ty,)* }
///      indicators { $($(#[$k:meta])* $kpi:ident: $kt:ty,)* }) => {
///         [$(stringify!($input),)* $(stringify!($kpi),)*]
///     };
/// }
/// let names = mes_codec::kpi_fields!(names);
/// assert_eq!(names.len(), 14);
/// assert_eq!(names[0], "planned_busy_time_s");
/// assert_eq!(names[13], "production_time_s");
/// ```
#[macro_export]
macro_rules! kpi_fields {
    ($callback:ident) => {
        $callback! {
            inputs {
                /// PBT, planned busy time, seconds.
                planned_busy_time_s: f64,
                /// APT, actual production time, seconds.
                actual_production_time_s: f64,
                /// PRI, planned run time per item, seconds.
                planned_unit_time_s: f64,
                /// PQ, produced quantity, items.
                produced_quantity: f64,
                /// GQ, good quantity (produced without defect), items.
                good_quantity: f64,
                /// FE, failure events.
                failure_count: i32,
                /// ΣTTR, total time to repair, seconds.
                repair_time_s: f64,
            }
            indicators {
                /// Indicator 01, availability = APT / PBT.
                availability: f64,
                /// Indicator 02, performance (effectiveness) = PRI × PQ / APT.
                performance: f64,
                /// Indicator 03, quality ratio = GQ / PQ.
                quality: f64,
                /// Indicator 04, OEE = availability × performance × quality.
                oee: f64,
                /// Indicator 05, MTBF = APT / (FE + 1), seconds.
                mtbf_s: f64,
                /// Indicator 06, MTTR = ΣTTR / FE, seconds.
                mttr_s: f64,
                /// Indicator 07, production time = APT, seconds.
                production_time_s: f64,
            }
        }
    };
}

/// Declares [`KpiInputs`] and [`Kpis`] from [`kpi_fields!`](crate::kpi_fields).
macro_rules! declare_kpis {
    (inputs { $($(#[$idoc:meta])* $input:ident: $ity:ty,)* }
     indicators { $($(#[$kdoc:meta])* $kpi:ident: $kty:ty,)* }) => {
        /// The measured inputs of one shift (or day), as stored in `day_reports`.
        ///
        /// Names follow ISO 22400-2: PBT planned busy time, APT actual production time,
        /// PRI planned run time per item, PQ produced quantity, GQ good quantity, FE
        /// failure events, TTR time to repair. Times are seconds.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
        pub struct KpiInputs {
            $($(#[$idoc])* pub $input: Option<$ity>,)*
        }

        /// The seven indicators of one shift (or day). `None` where the inputs are
        /// missing or the denominator is zero: a report never carries NaN or infinity.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
        pub struct Kpis {
            $($(#[$kdoc])* pub $kpi: Option<$kty>,)*
        }

        impl Kpis {
            /// Each indicator of `self`, or `other`'s where `self` has none: indicators
            /// given to the API win over the ones computed from the inputs.
            pub fn or(self, other: Kpis) -> Kpis {
                Kpis {
                    $($kpi: self.$kpi.or(other.$kpi),)*
                }
            }
        }
    };
}

crate::kpi_fields!(declare_kpis);

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

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
