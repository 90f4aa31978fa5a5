//! The embedded demo's start (cargo feature `embedded`): the demo's data in the
//! database, then the mock broker and the simulated chain ([`crate::embedded`]).

use kafka_bridge::bridge::BridgeConfig;
use mes_core::db::{self, operators, tokens};

use super::{DEMO_OPERATOR, DEMO_TOKEN_NAME, DEMO_TOKEN_PREFIX, DEMO_UNITS, database_error};
use crate::config::{ConfigError, Settings};
use crate::db::Db;
use crate::embedded::Embedded;
use crate::error::ApiError;
use crate::service::performance::{self, Target};
use crate::service::reports::{self, DayReportInput, ShiftInput, ShiftsInput};
use crate::service::units::{NewUnit, UnitError, UnitService};

/// Seeds the database with the demo's data (a master token if there is none, the
/// demo units, the demo operator with a new key, which it returns), starts the mock
/// broker and the simulated chain, and points `bridge_config` at them.
pub(super) async fn start(
    settings: &Settings,
    db: &Db,
    bridge_config: &mut BridgeConfig,
) -> Result<(Embedded, String), ConfigError> {
    let seeded = db
        .run(|conn| {
            use diesel::Connection as _;
            conn.transaction(|conn| {
                if let Some(found) = not_demo_data(conn)? {
                    return Ok(Err(found));
                }
                let token = match tokens::master(conn)? {
                    Some(master) => master.token,
                    None => {
                        let token = format!("{DEMO_TOKEN_PREFIX}{}", uuid::Uuid::new_v4().simple());
                        tokens::put(
                            conn,
                            &tokens::NewKafkaToken {
                                instance_type: tokens::MASTER,
                                token: &token,
                                name: Some(DEMO_TOKEN_NAME),
                                ..Default::default()
                            },
                        )?
                        .token
                    }
                };
                seed_units(conn)?;
                seed_performance(conn, chrono::Utc::now().date_naive())?;
                let key = operators::new_key();
                operators::put(
                    conn,
                    &operators::NewOperator {
                        name: DEMO_OPERATOR,
                        role: operators::ROLE_OPERATOR,
                        key_hash: &operators::hash_key(&key),
                    },
                )?;
                Ok(Ok((token, key)))
            })
        })
        .await
        .map_err(|e| database_error(e.message))?;
    let (token, key) = seeded.map_err(|found| {
        ConfigError::new(
            "MES_KAFKA_BROKERS",
            format!(
                "is `embedded`, but the database at MES_DATABASE_URL holds {found}: the demo never seeds a database in real use; set MES_KAFKA_BROKERS to the cluster's bootstrap servers, or give the demo a database of its own"
            ),
        )
    })?;
    let started = Embedded::start(&settings.topics(), &token, settings.demo_size).await?;
    bridge_config.kafka.brokers = started.brokers().to_owned();
    // The simulated chain signs its replies: the demo verifies them like a
    // deployment with MES_GATEWAY_KEY_FILE.
    if bridge_config.gateway_key.is_none() {
        bridge_config.gateway_key = started.sim().map(|sim| sim.public_key().clone());
    }
    // The mock cluster has no admin API; `Embedded::start` made the topics.
    bridge_config.create_topics = false;
    Ok((started, key))
}

/// What in the database is not the demo's own (a token or an operator someone put),
/// in words for the one-line error; `None` when everything is the demo's.
fn not_demo_data(conn: &mut db::DbConnection) -> Result<Option<String>, ApiError> {
    let foreign_tokens = tokens::list(conn)?
        .into_iter()
        .filter(|t| {
            t.name.as_deref() != Some(DEMO_TOKEN_NAME) || !t.token.starts_with(DEMO_TOKEN_PREFIX)
        })
        .count();
    if foreign_tokens > 0 {
        return Ok(Some(format!(
            "{foreign_tokens} token(s) the demo did not make"
        )));
    }
    let foreign_operators = operators::list(conn)?
        .into_iter()
        .filter(|o| o.name != DEMO_OPERATOR)
        .count();
    if foreign_operators > 0 {
        return Ok(Some(format!(
            "{foreign_operators} operator(s) the demo did not make"
        )));
    }
    Ok(None)
}

/// Creates the [`DEMO_UNITS`](super::DEMO_UNITS) that do not exist yet (idempotent across restarts);
/// their chain records are enqueued like any unit's.
fn seed_units(conn: &mut db::DbConnection) -> Result<(), ApiError> {
    let units = UnitService::default();
    for (code, name, status, process) in DEMO_UNITS {
        let new = NewUnit {
            code: code.to_owned(),
            name: name.to_owned(),
            status: status.to_owned(),
            process_name: Some(process.to_owned()),
        };
        match units.create(conn, &new) {
            Ok(_) | Err(UnitError::AlreadyExists(_)) => {}
            Err(e) => return Err(ApiError::database(e)),
        }
    }
    Ok(())
}

/// Days of day reports the demo seeds before today.
pub(super) const DEMO_REPORT_DAYS: u64 = 30;

/// How a demo unit runs, for [`seed_performance`].
struct DemoRun {
    code: &'static str,
    /// Its OEE target.
    target: f64,
    /// Typical availability, performance and quality of a shift.
    availability: f64,
    performance: f64,
    quality: f64,
    /// Ideal cycle time, seconds.
    cycle_s: f64,
    /// Days back that go badly (long stops).
    bad_days: [u64; 3],
}

/// PT10 runs above its target but for a few bad days; PT11 mostly under its own.
const DEMO_PERFORMANCE: [DemoRun; 2] = [
    DemoRun {
        code: "PT10",
        target: 0.65,
        availability: 0.91,
        performance: 0.9,
        quality: 0.985,
        cycle_s: 12.0,
        bad_days: [5, 12, 23],
    },
    DemoRun {
        code: "PT11",
        target: 0.75,
        availability: 0.82,
        performance: 0.84,
        quality: 0.95,
        cycle_s: 15.0,
        bad_days: [3, 9, 17],
    },
];

/// A number in [-1, 1) from `seed` (splitmix64): the demo's day-to-day wobble, the
/// same at every start.
fn wobble(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // The top 53 bits as a fraction in [0, 1), then scaled to [-1, 1).
    let fraction = (z >> 11) as f64 / (1u64 << 53) as f64;
    fraction * 2.0 - 1.0
}

/// One shift's measured inputs for the demo: eight planned hours, running for
/// `availability` of them at `performance` of the ideal cycle time, `quality` good.
fn demo_shift(
    availability: f64,
    performance: f64,
    quality: f64,
    cycle_s: f64,
    failures: i32,
) -> ShiftInput {
    let planned = 8.0 * 3600.0;
    let running = (planned * availability).round();
    let produced = (running * performance / cycle_s).floor();
    ShiftInput {
        planned_busy_time_s: Some(planned),
        actual_production_time_s: Some(running),
        planned_unit_time_s: Some(cycle_s),
        produced_quantity: Some(produced),
        good_quantity: Some((produced * quality).floor()),
        failure_count: Some(failures),
        repair_time_s: Some(((planned - running) * 0.6).round()),
        ..ShiftInput::default()
    }
}

/// Seeds the [`DEMO_REPORT_DAYS`] days before `today` of day reports for the demo's
/// units (shifts A, B, C; the day computed from them), and their OEE targets, so the
/// console's performance chart has something to draw. Deterministic (only the dates
/// follow today); a day or a target already stored is left as it is.
///
/// Stored like any `POST /api/DayReport`: local rows that the daily job publishes as
/// it publishes every stored day, so the start-up catch-up sends the last
/// `MES_REPORT_LOOKBACK_DAYS` of them to the demo's simulated chain; older days stay
/// local.
fn seed_performance(conn: &mut db::DbConnection, today: chrono::NaiveDate) -> Result<(), ApiError> {
    let units = UnitService::default();
    for (index, run) in DEMO_PERFORMANCE.iter().enumerate() {
        let DemoRun {
            code,
            target,
            availability,
            performance: perf,
            quality,
            cycle_s,
            bad_days,
        } = *run;
        let unit = units.get(conn, code)?;
        if performance::target_of(conn, unit.id)
            .map_err(ApiError::database)?
            .is_none()
        {
            let target = Target {
                oee: target,
                availability: None,
                performance: None,
                quality: None,
            };
            performance::put_target(conn, &unit, &target)?;
        }
        for back in 1..=DEMO_REPORT_DAYS {
            let Some(date) = today.checked_sub_days(chrono::Days::new(back)) else {
                continue;
            };
            if reports::get_day_report(conn, code, date)?.is_some() {
                continue;
            }
            let bad = bad_days.contains(&back);
            let shift = |n: u64| {
                let seed = ((index as u64) << 32) | (back << 8) | n;
                let a = if bad { 0.55 } else { availability } + 0.04 * wobble(seed);
                let p = perf + 0.04 * wobble(seed ^ 0xA5A5);
                let q = quality + 0.01 * wobble(seed ^ 0x5A5A);
                let failures = if bad {
                    4
                } else {
                    1 + i32::from(wobble(seed ^ 0xF0) > 0.3)
                };
                Some(demo_shift(a.min(1.0), p, q.min(1.0), cycle_s, failures))
            };
            let input = DayReportInput {
                unit: code.to_owned(),
                date: date.to_string(),
                shifts: ShiftsInput {
                    a: shift(1),
                    b: shift(2),
                    c: shift(3),
                    day: None,
                },
            };
            reports::store_day_report(conn, &input)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::service::performance::{SeriesShift, series};

    #[test]
    fn the_demo_seeds_30_days_once_with_one_unit_under_its_target() {
        let dir = std::env::temp_dir().join(format!("mes-demo-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut conn = db::connect(&dir.join("mes.db").display().to_string()).unwrap();
        let today: chrono::NaiveDate = "2026-12-03".parse().unwrap();
        seed_units(&mut conn).unwrap();
        seed_performance(&mut conn, today).unwrap();
        let outbox_before = db::outbox::list(&mut conn, None, 1000, 0).unwrap().len();
        seed_performance(&mut conn, today).unwrap();
        let units = UnitService::without_hooks();
        let from: chrono::NaiveDate = "2026-11-03".parse().unwrap();
        let to: chrono::NaiveDate = "2026-12-02".parse().unwrap();
        let mut under = Vec::new();
        for code in ["PT10", "PT11"] {
            let unit = units.get(&mut conn, code).unwrap();
            let s = series(&mut conn, &unit, SeriesShift::Day, from, to).unwrap();
            assert_eq!(s.points.len(), 30, "{code}");
            assert!(s.target.is_some());
            for p in &s.points {
                let oee = p.oee.unwrap();
                assert!((0.3..0.95).contains(&oee), "{code} {}: {oee}", p.date);
            }
            under.push(
                s.points
                    .iter()
                    .filter(|p| p.under_target == Some(true))
                    .count(),
            );
        }
        assert_eq!(under[0], 3, "PT10: its three bad days");
        assert!(under[1] >= 25, "PT11 under its target: {}", under[1]);
        // Seeding again changes nothing, and nothing of it went to the outbox.
        assert_eq!(
            db::outbox::list(&mut conn, None, 1000, 0).unwrap().len(),
            outbox_before
        );
        assert!(
            db::outbox::list(&mut conn, None, 1000, 0)
                .unwrap()
                .iter()
                .all(|r| !r.dedup_key.starts_with("day-report")),
            "storing a day enqueues nothing; the daily job does"
        );
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_wobble_is_fixed_and_within_bounds() {
        let values: Vec<f64> = (0..1000).map(wobble).collect();
        assert!(values.iter().all(|v| (-1.0..1.0).contains(v)));
        assert_eq!(wobble(42), wobble(42));
        assert!(values.iter().any(|v| *v > 0.5) && values.iter().any(|v| *v < -0.5));
    }
}
