//! The shop-floor routes under a plant's data: what the console's Performance tab, its
//! day-report form and its CSV download cost the server.
//!
//! Run it with `./scripts/bench --shopfloor` (starts tansu and PostgreSQL) or `cargo bench
//! -p mes-e2e --bench shopfloor -- --brokers HOST:PORT [--database-url URL]`; `--help`
//! lists the knobs. Figures and their reading: docs/benchmarks.md ("Shop floor").
//!
//! One mes-api server runs in this process (Rocket on a free loopback port) per
//! database: SQLite in a temp dir, and PostgreSQL (a schema of its own) when
//! `MES_TEST_DATABASE_URL` is set. No master token is stored, so nothing reaches the
//! chain: these routes only read and write local data. The server starts on an empty
//! database (its start-up catch-up finds nothing to send); then `--units` units, each
//! with an OEE target and `--days` days of shifts A, B and C (the day computed from
//! them), are stored through the service layer. Measured over HTTP (reqwest,
//! keep-alive):
//!
//! - `series`: `GET /api/DayReport/series` of one unit over the 90 days before today,
//!   one request at a time, the units in turn;
//! - `tab`: the Performance tab's load: every unit's series, six at a time as the
//!   console asks them; one sample per whole tab;
//! - `csv`: `GET /api/DayReport.csv` over the period (every unit: at the 10 000-row
//!   cap when units × days × 4 exceed it);
//! - `store`: `POST /api/DayReport` of one shift's inputs, as the console's form sends
//!   it, each on a day of its own (the day is recomputed from the stored shifts).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use chain_sim::SimTopics;
use chrono::{Days, NaiveDate, Utc};
use clap::Parser;
use mes_api::config::{ReplyTrust, Settings};
use mes_api::service::performance::{self, Target};
use mes_api::service::reports::{DayReportInput, ShiftInput, ShiftsInput, store_day_report};
use mes_api::service::units::{NewUnit, UnitService};
use mes_core::db;
use mes_e2e::bench::{BenchDb, InProcessServer, Stats, ms};

#[derive(Parser, Debug)]
#[command(
    about = "The shop-floor routes (series, the Performance tab, CSV, day-report form) over HTTP"
)]
struct Args {
    /// Bootstrap servers of the broker (the server needs one to start).
    #[arg(long, env = "MES_TEST_KAFKA_BROKERS")]
    brokers: String,
    /// PostgreSQL URL (a schema of its own is created); without it, SQLite only.
    #[arg(long, env = "MES_TEST_DATABASE_URL")]
    database_url: Option<String>,
    /// Production units.
    #[arg(long, default_value_t = 50)]
    units: usize,
    /// Days of reports per unit, before today.
    #[arg(long, default_value_t = 90)]
    days: u64,
    /// Sequential series requests.
    #[arg(long, default_value_t = 500)]
    series: usize,
    /// Performance-tab loads.
    #[arg(long, default_value_t = 30)]
    tabs: usize,
    /// CSV exports.
    #[arg(long, default_value_t = 20)]
    csv: usize,
    /// Day-report stores.
    #[arg(long, default_value_t = 300)]
    stores: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One shift of a seeded day: plausible inputs that vary with the day and the unit.
fn shift(unit: usize, back: u64, n: u64) -> ShiftInput {
    let wobble = ((unit as u64 * 31 + back * 7 + n * 13) % 50) as f64;
    ShiftInput {
        planned_busy_time_s: Some(28_800.0),
        actual_production_time_s: Some(25_200.0 - wobble * 30.0),
        planned_unit_time_s: Some(26.0),
        produced_quantity: Some(800.0 - wobble),
        good_quantity: Some(790.0 - wobble),
        failure_count: Some(1),
        repair_time_s: Some(900.0),
        ..ShiftInput::default()
    }
}

/// Stores the plant: units, targets, days; answers how long it took.
fn seed(url: &str, units: usize, days: u64, today: NaiveDate) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut conn = db::connect(url)?;
    let service = UnitService::without_hooks();
    for u in 0..units {
        let code = format!("U{u:03}");
        let unit = service.create(
            &mut conn,
            &NewUnit {
                code: code.clone(),
                name: format!("Unit {u}"),
                status: "RUNNING".into(),
                process_name: None,
            },
        )?;
        performance::put_target(
            &mut conn,
            &unit,
            &Target {
                oee: 0.7,
                availability: None,
                performance: None,
                quality: None,
            },
        )?;
        for back in 1..=days {
            let date = today.checked_sub_days(Days::new(back)).context("date")?;
            store_day_report(
                &mut conn,
                &DayReportInput {
                    unit: code.clone(),
                    date: date.to_string(),
                    shifts: ShiftsInput {
                        a: Some(shift(u, back, 1)),
                        b: Some(shift(u, back, 2)),
                        c: Some(shift(u, back, 3)),
                        day: None,
                    },
                },
            )?;
        }
    }
    Ok(started.elapsed())
}

/// One row of the table.
struct Row {
    what: &'static str,
    stats: Stats,
    samples: usize,
    elapsed: Duration,
    note: String,
}

async fn get(client: &reqwest::Client, url: &str, key: &str) -> anyhow::Result<String> {
    let response = client.get(url).bearer_auth(key).send().await?;
    let status = response.status();
    let text = response.text().await?;
    ensure!(status.is_success(), "{url}: {status} {text}");
    Ok(text)
}

async fn run(args: &Args, postgres: Option<&str>) -> anyhow::Result<()> {
    let backend = if postgres.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let database = BenchDb::create(postgres)?;
    let url = database.url.clone();
    let key = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        drop(db::pool(&url, 1)?);
        let mut conn = db::connect(&url)?;
        Ok(mes_e2e::db::add_operators(&mut conn)?.0)
    })
    .await??;
    let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
    let mut settings = Settings {
        database_url: Some(database.url.clone()),
        kafka_brokers: args.brokers.clone(),
        database_pool_size: 4,
        reply_trust: ReplyTrust::Unsigned,
        rate_limit_per_sec: std::num::NonZeroU32::new(mes_api::config::MAX_RATE_LIMIT_PER_SEC)
            .unwrap_or(std::num::NonZeroU32::MAX),
        ..Settings::default()
    };
    settings.set_topics(&SimTopics::with_suffix(&suffix).chain);
    let server = InProcessServer::start(settings).await?;

    let today = Utc::now().date_naive();
    let (url, units, days) = (database.url.clone(), args.units, args.days);
    let seeded = tokio::task::spawn_blocking(move || seed(&url, units, days, today)).await??;
    let stored_days = args.units as u64 * args.days;
    println!(
        "{backend}: seeded {} units × {} days (A, B, C and the day: {} rows) in {:.1} s, {:.0} days/s",
        args.units,
        args.days,
        stored_days * 4,
        seeded.as_secs_f64(),
        stored_days as f64 / seeded.as_secs_f64()
    );

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true)
        .build()?;
    let from = today.checked_sub_days(Days::new(90)).context("date")?;
    let series_url = |u: usize| {
        format!(
            "{}/api/DayReport/series?unit=U{:03}&from={from}&to={today}",
            server.base,
            u % args.units
        )
    };
    let mut rows = Vec::new();

    // Warm-up: connections, statement caches, the page cache.
    for u in 0..args.units.min(20) {
        get(&client, &series_url(u), &key).await?;
    }

    // series: one at a time.
    let started = Instant::now();
    let mut samples = Vec::with_capacity(args.series);
    let mut points = 0;
    for i in 0..args.series {
        let t = Instant::now();
        let text = get(&client, &series_url(i), &key).await?;
        samples.push(t.elapsed());
        if i == 0 {
            let v: serde_json::Value = serde_json::from_str(&text)?;
            points = v["points"].as_array().map_or(0, Vec::len);
        }
    }
    rows.push(Row {
        what: "series",
        stats: Stats::of(samples),
        samples: args.series,
        elapsed: started.elapsed(),
        note: format!("{points} points each"),
    });

    // tab: every unit's series, six in flight, as the console loads the tab.
    let started = Instant::now();
    let mut samples = Vec::with_capacity(args.tabs);
    for _ in 0..args.tabs {
        let t = Instant::now();
        for chunk in (0..args.units).collect::<Vec<_>>().chunks(6) {
            let calls = chunk.iter().map(|&u| {
                let (client, url, key) = (client.clone(), series_url(u), key.clone());
                async move { get(&client, &url, &key).await }
            });
            for answer in futures::future::join_all(calls).await {
                answer?;
            }
        }
        samples.push(t.elapsed());
    }
    rows.push(Row {
        what: "tab",
        stats: Stats::of(samples),
        samples: args.tabs,
        elapsed: started.elapsed(),
        note: format!("{} series each, 6 in flight", args.units),
    });

    // csv: the period's day reports of every unit.
    let csv_url = format!("{}/api/DayReport.csv?from={from}&to={today}", server.base);
    let started = Instant::now();
    let mut samples = Vec::with_capacity(args.csv);
    let mut size = (0, 0);
    for _ in 0..args.csv {
        let t = Instant::now();
        let text = get(&client, &csv_url, &key).await?;
        samples.push(t.elapsed());
        size = (text.lines().count().saturating_sub(1), text.len());
    }
    let stats = Stats::of(samples);
    rows.push(Row {
        what: "csv",
        stats,
        samples: args.csv,
        elapsed: started.elapsed(),
        note: format!(
            "{} rows, {} KiB; {:.0} rows/s at p50",
            size.0,
            size.1 / 1024,
            size.0 as f64 / stats.p50.as_secs_f64()
        ),
    });

    // store: one shift as the form sends it, each on a day of its own (before the
    // seeded ones, never sent to the chain).
    let first = NaiveDate::from_ymd_opt(2001, 1, 1).context("date")?;
    let started = Instant::now();
    let mut samples = Vec::with_capacity(args.stores);
    for i in 0..args.stores {
        let date = first
            .checked_add_days(Days::new(i as u64))
            .context("date")?;
        let body = serde_json::json!({"unit": format!("U{:03}", i % args.units), "date": date.to_string(),
            "shifts": {"A": shift(i, 0, 1)}});
        let t = Instant::now();
        let response = client
            .post(format!("{}/api/DayReport", server.base))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.is_success(), "POST /api/DayReport: {status} {text}");
        samples.push(t.elapsed());
    }
    rows.push(Row {
        what: "store",
        stats: Stats::of(samples),
        samples: args.stores,
        elapsed: started.elapsed(),
        note: "one shift, the day recomputed".into(),
    });

    println!(
        "{:<8} {:<7} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9}  note",
        "backend", "what", "samples", "p50 ms", "p99 ms", "mean ms", "max ms", "per s"
    );
    for r in &rows {
        println!(
            "{:<8} {:<7} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9.1}  {}",
            backend,
            r.what,
            r.samples,
            ms(r.stats.p50),
            ms(r.stats.p99),
            ms(r.stats.mean),
            ms(r.stats.max),
            r.samples as f64 / r.elapsed.as_secs_f64(),
            r.note
        );
    }
    server.stop().await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "shop floor: {} units × {} days; series {}, tab loads {}, CSV exports {}, stores {} (debug builds are slower: cargo bench builds release)",
        args.units, args.days, args.series, args.tabs, args.csv, args.stores
    );
    run(&args, None).await?;
    if let Some(url) = args.database_url.clone() {
        run(&args, Some(&url)).await?;
    }
    Ok(())
}
