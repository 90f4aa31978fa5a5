//! Operators behind a legacy gateway while the outbox holds a backlog the chain never
//! answers: background traffic must never starve operators.
//!
//! The gateway is the original's: it answers only the four list/answer topics, echoes
//! nothing but the token and writes Python literals, so every `BLK_Rty`/`BLK_Rec` send
//! of the relay gets no reply. The server runs in `legacy` mode with a 3 s request
//! timeout and `MES_RECORD_REPLIES=wait` (the default), its poller scanning the chain's
//! lists every `--poll-secs`. One operator calls `GET /api/KafkaPartner/LIST` once a
//! second for `--secs`; the run is made twice, each on a stack of its own: with an
//! empty outbox, and with `--rows` outbox rows (unit changes of `--units` units)
//! pending from the start. Printed per run: calls answered (200), p50/p99/max latency,
//! and the backlog's p50 as a multiple of the empty run's.
//!
//! Run it with `./scripts/bench --starvation` (starts tansu) or, against a broker of
//! your own, `cargo bench -p mes-e2e --bench starvation -- --brokers HOST:PORT`.
//! Figures and their reading: docs/benchmarks.md ("Operators and an unanswered
//! backlog").

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chain_sim::{SimConfig, SimTopics, Simulator};
use clap::Parser;
use mes_api::config::{ReplyTrust, Settings};
use mes_api::service::units::{ChainHook, NewUnit, Reporter, UnitPatch, UnitService};
use mes_core::codec::Topic;
use mes_core::db::{self, outbox};
use mes_e2e::bench::{BenchDb, InProcessServer, Stats, ms};

#[derive(Parser, Debug)]
#[command(
    about = "Operator LIST calls behind a legacy gateway, with and without an unanswered outbox backlog"
)]
struct Args {
    /// Bootstrap servers of the broker.
    #[arg(long, env = "MES_TEST_KAFKA_BROKERS")]
    brokers: String,
    /// PostgreSQL URL (a schema of its own per run); SQLite in a temp dir if unset.
    #[arg(long, env = "MES_TEST_DATABASE_URL")]
    database_url: Option<String>,
    /// Length of each run, in seconds.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Pending outbox rows of the backlog run.
    #[arg(long, default_value_t = 1000)]
    rows: usize,
    /// Units the backlog's rows belong to (ordering keys).
    #[arg(long, default_value_t = 50)]
    units: usize,
    /// The server's MES_POLL_INTERVAL_SECS.
    #[arg(long, default_value_t = 5)]
    poll_secs: u64,
    /// Runs, in this order (repeats allowed): empty, backlog.
    #[arg(long, value_delimiter = ',', default_value = "empty,backlog")]
    only: Vec<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What one run measured.
struct Run {
    name: String,
    calls: usize,
    answered: usize,
    failures: Vec<String>,
    stats: Option<Stats>,
    /// Outbox rows still pending at the end, and relay sends that timed out.
    pending_after: i64,
    relay_state: String,
}

/// Creates `units` units and changes them until `rows` outbox rows are pending, all
/// through the unit service, as PATCHes would.
fn backlog(url: &str, units: usize, rows: usize) -> anyhow::Result<i64> {
    let mut conn = db::connect(url)?;
    let service = UnitService::new(ChainHook::new(Reporter::None));
    let codes: Vec<String> = (0..units.max(1)).map(|i| format!("B{i:03}")).collect();
    for code in &codes {
        service.create(
            &mut conn,
            &NewUnit {
                code: code.clone(),
                name: format!("Press {code}"),
                status: "RUNNING".into(),
                process_name: Some("Stamping".into()),
            },
        )?;
    }
    let mut n = 0usize;
    while (outbox::depth(&mut conn)?.pending as usize) < rows {
        let code = &codes[n % codes.len()];
        let status = if n.is_multiple_of(2) {
            "STOPPED"
        } else {
            "RUNNING"
        };
        service.patch(
            &mut conn,
            code,
            &UnitPatch {
                status: Some(status.into()),
                process_name: None,
            },
        )?;
        n += 1;
    }
    Ok(outbox::depth(&mut conn)?.pending)
}

async fn run(args: &Args, name: &str) -> anyhow::Result<Run> {
    let with_backlog = match name {
        "empty" => false,
        "backlog" => true,
        other => bail!("unknown run {other:?}: expected empty or backlog"),
    };
    let suffix = format!("-starve-{}", uuid::Uuid::new_v4().simple());
    let token = format!("bench-token{suffix}");
    let topics = SimTopics::with_suffix(&suffix);
    let mut sim_config = SimConfig::new(&args.brokers);
    sim_config.topics = topics.clone();
    sim_config.group_id = format!("chain-sim{suffix}");
    sim_config.tokens = vec![token.clone()];
    sim_config.demo = 30;
    sim_config.gateway.python_literal = true;
    sim_config.gateway.no_echo = true;
    sim_config.gateway.answer_topics = Some(HashSet::from([
        Topic::PartnerList,
        Topic::PartnerAnswer,
        Topic::OrderList,
        Topic::OrderAnswer,
    ]));
    let sim = Simulator::start(sim_config).await?;

    let database = BenchDb::create(args.database_url.as_deref())?;
    let mut settings = Settings {
        database_url: Some(database.url.clone()),
        kafka_brokers: args.brokers.clone(),
        database_pool_size: 4,
        correlation: kafka_bridge::bridge::CorrelationMode::Legacy,
        request_timeout_ms: 3000,
        poll_interval_secs: args.poll_secs,
        // The simulator does not sign its replies.
        reply_trust: ReplyTrust::Unsigned,
        ..Settings::default()
    };
    settings.set_topics(&topics.chain);
    let key = database.seed(&token).await?;
    let (url, rows, units) = (
        database.url.clone(),
        if with_backlog { args.rows } else { 0 },
        args.units,
    );
    let pending = tokio::task::spawn_blocking(move || -> anyhow::Result<i64> {
        if rows > 0 {
            backlog(&url, units, rows)
        } else {
            Ok(0)
        }
    })
    .await??;
    if with_backlog {
        eprintln!("{name}: {pending} outbox rows pending on {units} units");
    }

    let server = InProcessServer::start(settings).await?;
    let base = server.base.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    // One operator, one LIST a second (the next call starts on the next second tick,
    // or at once if the last one took longer).
    let list = format!("{base}/api/KafkaPartner/LIST");
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let until = Instant::now() + Duration::from_secs(args.secs);
    let (mut samples, mut failures, mut calls) = (Vec::new(), Vec::new(), 0usize);
    while Instant::now() < until {
        ticks.tick().await;
        calls += 1;
        let t = Instant::now();
        let response = client.get(&list).bearer_auth(&key).send().await;
        let took = t.elapsed();
        match response {
            Ok(r) if r.status().is_success() => samples.push(took),
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                failures.push(format!("{status} after {} ms: {body}", ms(took)));
            }
            Err(e) => failures.push(format!("{e} after {} ms", ms(took))),
        }
    }

    let ready: serde_json::Value = client
        .get(format!("{base}/health/ready"))
        .send()
        .await?
        .json()
        .await
        .context("reading /health/ready")?;
    let relay_state = ready["outbox"]["topics"].to_string();
    let url = database.url.clone();
    let pending_after = tokio::task::spawn_blocking(move || -> anyhow::Result<i64> {
        let depth = outbox::depth(&mut db::connect(&url)?)?;
        Ok(depth.pending + depth.in_flight)
    })
    .await??;

    server.stop().await;
    sim.shutdown().await?;
    Ok(Run {
        name: name.to_owned(),
        calls,
        answered: samples.len(),
        failures,
        stats: (!samples.is_empty()).then(|| Stats::of(samples)),
        pending_after,
        relay_state,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "legacy gateway (answers only the list/answer topics, no echo, Python literals); \
         MES_CORRELATION=legacy, MES_REQUEST_TIMEOUT_MS=3000, MES_POLL_INTERVAL_SECS={}; \
         one LIST a second for {} s; database: {}",
        args.poll_secs,
        args.secs,
        if args.database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let mut runs = Vec::new();
    for name in &args.only {
        let run = run(&args, name).await?;
        let (p50, p99, max) = run
            .stats
            .as_ref()
            .map_or(("-".into(), "-".into(), "-".into()), |s| {
                (ms(s.p50), ms(s.p99), ms(s.max))
            });
        println!(
            "{:8} answered {:>3}/{:<3} ({:5.1} %)  p50 {:>7} ms  p99 {:>7} ms  max {:>7} ms  \
             outbox pending at the end: {}  record topics: {}",
            run.name,
            run.answered,
            run.calls,
            100.0 * run.answered as f64 / run.calls.max(1) as f64,
            p50,
            p99,
            max,
            run.pending_after,
            run.relay_state
        );
        for failure in run.failures.iter().take(5) {
            println!("         failed: {failure}");
        }
        runs.push(run);
    }
    let p50 = |name: &str| {
        runs.iter()
            .find(|r| r.name == name)
            .and_then(|r| r.stats.as_ref())
            .map(|s| s.p50)
    };
    if let (Some(empty), Some(backlog)) = (p50("empty"), p50("backlog")) {
        println!(
            "backlog p50 / empty p50 = {:.2} (target ≤ 1.5)",
            backlog.as_secs_f64() / empty.as_secs_f64()
        );
    }
    Ok(())
}
