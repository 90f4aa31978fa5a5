//! How fast the outbox relay drains a backlog, against the limit the chain and the
//! bridge set in the same run.
//!
//! Each case runs on a stack of its own: tansu (the broker `scripts/bench` started),
//! `chain-sim` as a process on fresh topics, a fresh database (SQLite in a temporary
//! directory, or a PostgreSQL schema), and the mes-api server in this process. Before
//! the server starts, `--rows` outbox rows are enqueued through the unit service, as
//! PATCHes would (unit changes spread evenly over `KEYS` units: the ordering keys).
//! Then, with nothing else on the topics:
//!
//! 1. **The limit.** A bridge of its own sends record updates as the relay does (an
//!    idempotency key, background priority): `--sequential` one after another (the
//!    bridge's round trip, RTT) and `--parallel` with the relay's `concurrency` (8) in
//!    flight (the bridge's throughput). One key can go no faster than 1 / RTT; many
//!    keys no faster than the throughput; behind a legacy gateway (no echo, one
//!    request at a time) no faster than 1 / RTT whatever the keys.
//! 2. **The drain.** The server starts; its relay finds the backlog at once. One client
//!    PATCHes another unit `--patch-rate` times a second until every backlog row is
//!    delivered.
//!
//! Printed per case: rows per second (backlog rows over the span of their
//! `delivered_at`; behind a legacy gateway, where one request at a time is the limit
//! whatever the key, the PATCHed unit's rows delivered in that span count too), time to drain (server start to the last delivery), the ratio to the
//! case's limit and its target (1 key ≥ 0.8 × 1 / RTT; many keys ≥ 0.7 × throughput;
//! legacy: ≥ 0.8 × 1 / RTT), relay passes (`mes_outbox_relay_passes_total`), PATCH
//! latency p50/p99 while draining, and CPU per delivered row (this process, chain-sim
//! and tansu, from `/proc/<pid>/stat`).
//!
//! Run it with `./scripts/bench --backlog` (starts tansu; both backends when
//! `MES_TEST_DATABASE_URL` names a PostgreSQL server, as `scripts/bench` sets it) or
//! `cargo bench -p mes-e2e --bench backlog -- --help`. Figures: docs/benchmarks.md
//! ("Outbox backlog").

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use chain_sim::SimTopics;
use clap::Parser;
use kafka_bridge::bridge::{Bridge, BridgeConfig, CallOptions, CorrelationMode, Priority};
use kafka_bridge::kafka::KafkaConfig;
use mes_api::config::{ReplyTrust, Settings};
use mes_api::service::units::{ChainHook, NewUnit, Reporter, UnitPatch, UnitService};
use mes_core::codec::{Request, Topic};
use mes_core::db::{self, outbox};
use mes_core::signing::SigningKey;
use mes_e2e::bench::{BenchDb, InProcessServer, Stats, ms};
use mes_e2e::sim::ChainSimProc;

/// The relay's default `concurrency`: requests in flight for the throughput limit.
const IN_FLIGHT: usize = 8;
/// The unit the PATCH client changes while the backlog drains (not a backlog key).
const PATCHED: &str = "LIVE";

#[derive(Parser, Debug)]
#[command(about = "Outbox backlog drain rate against the chain's limit (tansu + chain-sim)")]
struct Args {
    /// Bootstrap servers of the broker.
    #[arg(long, env = "MES_TEST_KAFKA_BROKERS")]
    brokers: String,
    /// PostgreSQL server URL (a schema of its own per case); without it only SQLite runs.
    #[arg(long, env = "MES_TEST_DATABASE_URL")]
    database_url: Option<String>,
    /// Backends, in this order: sqlite, postgres.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
    /// Correlation modes, in this order: id, legacy.
    #[arg(long, value_delimiter = ',', default_value = "id,legacy")]
    modes: Vec<String>,
    /// Ordering keys (units) of the backlog, one case each.
    #[arg(long, value_delimiter = ',', default_value = "1,2,50")]
    keys: Vec<usize>,
    /// Outbox rows in the backlog.
    #[arg(long, default_value_t = 2000)]
    rows: usize,
    /// Sequential record updates that measure the round trip.
    #[arg(long, default_value_t = 200)]
    sequential: usize,
    /// Record updates, `concurrency` in flight, that measure the throughput.
    #[arg(long, default_value_t = 400)]
    parallel: usize,
    /// PATCHes a second while the backlog drains.
    #[arg(long, default_value_t = 5)]
    patch_rate: u32,
    /// A case fails if its backlog is not drained within this many seconds.
    #[arg(long, default_value_t = 900)]
    max_secs: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One case: where, how, and on how many keys.
#[derive(Debug, Clone)]
struct Case {
    postgres: bool,
    mode: CorrelationMode,
    keys: usize,
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = if self.postgres { "postgres" } else { "sqlite" };
        write!(f, "{backend:8} {:6} {:>2} key(s)", self.mode, self.keys)
    }
}

/// What the bridge alone can do on this stack.
struct Limit {
    rtt: Stats,
    /// Record updates a second with [`IN_FLIGHT`] in flight.
    throughput: f64,
}

/// What one case measured.
struct Drain {
    rows: usize,
    rate: f64,
    drained: Duration,
    passes: u64,
    patch: Option<Stats>,
    patch_failures: usize,
    cpu_per_row: Duration,
}

/// CPU time (user + system) of a process so far, from `/proc/<pid>/stat`.
fn cpu_of(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it do not.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line, 12 and 13 after the name: clock ticks of USER_HZ,
    // which Linux fixes at 100 for /proc on every mainstream architecture.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time of this process, chain-sim and tansu (the ones it can find).
fn cpu_total(sim: &ChainSimProc) -> Duration {
    let mut pids = vec!["self".to_owned()];
    pids.extend(sim.pid().map(|p| p.to_string()));
    pids.extend(std::env::var("MES_TEST_TANSU_PID").ok());
    pids.iter().filter_map(|p| cpu_of(p)).sum()
}

/// Creates `keys` units and [`PATCHED`], then changes the `keys` units in turn until
/// `rows` outbox rows are pending, through the unit service; returns a record update's
/// request (the last row's) for the limit.
fn enqueue_backlog(url: &str, keys: usize, rows: usize) -> anyhow::Result<Request> {
    let mut conn = db::connect(url)?;
    let service = UnitService::new(ChainHook::new(Reporter::None));
    let codes: Vec<String> = (0..keys.max(1)).map(|i| format!("K{i:03}")).collect();
    let unit = |code: &str| NewUnit {
        code: code.to_owned(),
        name: format!("Press {code}"),
        status: "RUNNING".into(),
        process_name: Some("Stamping".into()),
    };
    // The PATCHed unit first, so that the backlog is exactly `rows` rows.
    service.create(&mut conn, &unit(PATCHED))?;
    let rows = rows + outbox::depth(&mut conn)?.pending as usize;
    for code in &codes {
        service.create(&mut conn, &unit(code))?;
    }
    let mut n = 0usize;
    while (outbox::depth(&mut conn)?.pending as usize) < rows {
        // Each key alternates, so every change is a change.
        let status = if n % (2 * codes.len()) < codes.len() {
            "STOPPED"
        } else {
            "RUNNING"
        };
        let patch = UnitPatch {
            status: Some(status.into()),
            process_name: None,
        };
        service.patch(&mut conn, &codes[n % codes.len()], &patch)?;
        n += 1;
    }
    let last = outbox::list(&mut conn, None, 1, 0)?
        .pop()
        .context("the backlog has no row")?;
    let topic = Topic::from_name(&last.topic).context("a backlog row's topic")?;
    Ok(Request::from_body(
        topic,
        serde_json::from_str(&last.payload)?,
    )?)
}

/// Measures [`Limit`] with a bridge of its own.
async fn limit(
    args: &Args,
    case: &Case,
    topics: &SimTopics,
    token: &str,
    request: &Request,
) -> anyhow::Result<Limit> {
    let mut config = BridgeConfig::new(KafkaConfig::new(&args.brokers));
    config.topics = topics.chain.clone();
    config.correlation = case.mode;
    let bridge = Bridge::connect(config).await?;
    let call = |bridge: Bridge, request: Request, token: String| async move {
        let options = CallOptions {
            idem: Some(uuid::Uuid::new_v4().to_string()),
            priority: Priority::Background,
            ..CallOptions::default()
        };
        let t = Instant::now();
        bridge
            .request(&token, request, options)
            .await
            .context("a limit call")?;
        anyhow::Ok(t.elapsed())
    };
    // Warm-up: connections, metadata, the consumer's assignment.
    for _ in 0..10 {
        call(bridge.clone(), request.clone(), token.to_owned()).await?;
    }
    let mut samples = Vec::with_capacity(args.sequential);
    for _ in 0..args.sequential {
        samples.push(call(bridge.clone(), request.clone(), token.to_owned()).await?);
    }
    let rtt = Stats::of(samples);
    let started = Instant::now();
    let per_worker = args.parallel.div_ceil(IN_FLIGHT);
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (bridge, request, token) = (bridge.clone(), request.clone(), token.to_owned());
            tokio::spawn(async move {
                for _ in 0..per_worker {
                    call(bridge.clone(), request.clone(), token.clone()).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let throughput = (per_worker * IN_FLIGHT) as f64 / started.elapsed().as_secs_f64();
    bridge.shutdown().await;
    Ok(Limit { rtt, throughput })
}

/// `mes_outbox_relay_passes_total` from the server's `/metrics`.
async fn passes(client: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|line| line.strip_prefix("mes_outbox_relay_passes_total "))
        .context("no mes_outbox_relay_passes_total in /metrics")?
        .trim()
        .parse()
        .context("mes_outbox_relay_passes_total")
}

async fn drain(args: &Args, case: &Case) -> anyhow::Result<(Limit, Drain)> {
    let suffix = format!("-backlog-{}", uuid::Uuid::new_v4().simple());
    let token = format!("bench-token{suffix}");
    let topics = SimTopics::with_suffix(&suffix);
    let mut sim_args = vec![
        format!("--token={token}"),
        format!("--topic-suffix={suffix}"),
        format!("--group-id=chain-sim{suffix}"),
    ];
    if case.mode == CorrelationMode::Legacy {
        // A gateway that answers the record topics but echoes nothing.
        sim_args.extend(["--no-echo".to_owned(), "--python-literal".to_owned()]);
    }
    let mut sim = ChainSimProc::spawn_on(
        &args.brokers,
        env!("CARGO_BIN_EXE_chain-sim-proc"),
        &SigningKey::generate(),
        None,
        &sim_args,
    )
    .await;

    let database = BenchDb::create(if case.postgres {
        Some(
            args.database_url
                .as_deref()
                .context("postgres needs --database-url")?,
        )
    } else {
        None
    })?;
    let key = database.seed(&token).await?;
    let (url, keys, rows) = (database.url.clone(), case.keys, args.rows);
    let request = tokio::task::spawn_blocking(move || enqueue_backlog(&url, keys, rows)).await??;
    let limit = limit(args, case, &topics, &token, &request).await?;

    let mut settings = Settings {
        database_url: Some(database.url.clone()),
        kafka_brokers: args.brokers.clone(),
        database_pool_size: 4,
        correlation: case.mode,
        // chain-sim does not sign its replies here.
        reply_trust: ReplyTrust::Unsigned,
        rate_limit_per_sec: std::num::NonZeroU32::new(mes_api::config::MAX_RATE_LIMIT_PER_SEC)
            .context("the rate limit's maximum")?,
        ..Settings::default()
    };
    settings.set_topics(&topics.chain);
    let cpu_before = cpu_total(&sim);
    let started = chrono::Utc::now().naive_utc();
    let server = InProcessServer::start(settings).await?;
    let base = server.base.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    // One client PATCHes [`PATCHED`] `patch_rate` times a second while the backlog drains.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let patcher = {
        let (client, url, key) = (
            client.clone(),
            format!("{base}/api/ProductionUnit/{PATCHED}"),
            key.clone(),
        );
        let period = Duration::from_secs(1) / args.patch_rate.max(1);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut samples, mut failures, mut n) = (Vec::new(), 0usize, 0usize);
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = ticks.tick() => {}
                }
                let status = if n.is_multiple_of(2) {
                    "STOPPED"
                } else {
                    "RUNNING"
                };
                n += 1;
                let t = Instant::now();
                let sent = client
                    .patch(&url)
                    .bearer_auth(&key)
                    .json(&serde_json::json!({ "Status": status }))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => samples.push(t.elapsed()),
                    _ => failures += 1,
                }
            }
            (samples, failures)
        })
    };

    // Until every backlog row is settled (the PATCHed unit's rows do not count).
    let url = database.url.clone();
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let (delivered, live) = loop {
        let url = url.clone();
        let (backlog, live) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut conn = db::connect(&url)?;
            let rows = outbox::list(&mut conn, None, i64::MAX, 0)?;
            Ok(rows
                .into_iter()
                .partition::<Vec<_>, _>(|row| !row.ordering_key.ends_with(PATCHED)))
        })
        .await??;
        let open = backlog
            .iter()
            .filter(|r| r.status == outbox::PENDING || r.status == outbox::IN_FLIGHT)
            .count();
        if open == 0 {
            break (backlog, live);
        }
        ensure!(
            Instant::now() < deadline,
            "{case}: {open} backlog rows still open after {} s",
            args.max_secs
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let cpu = cpu_total(&sim).saturating_sub(cpu_before);
    let _ = stop_tx.send(());
    let (patch_samples, patch_failures) = patcher.await?;
    let passes = passes(&client, &base).await?;
    server.stop().await;
    sim.stop().await;

    let failed = delivered
        .iter()
        .filter(|r| r.status != outbox::DONE)
        .count();
    ensure!(
        failed == 0,
        "{case}: {failed} backlog rows were not delivered"
    );
    let times: Vec<_> = delivered.iter().filter_map(|r| r.delivered_at).collect();
    let (first, last) = (
        times.iter().min().copied().context("no delivery")?,
        times.iter().max().copied().context("no delivery")?,
    );
    let span = (last - first).to_std().unwrap_or_default();
    let rows = delivered.len();
    // Behind a legacy gateway the relay sends one request at a time whatever the key,
    // so the PATCHed unit's rows delivered meanwhile share the chain's pace.
    let served = if case.mode == CorrelationMode::Legacy {
        let during =
            |r: &outbox::OutboxRow| r.delivered_at.is_some_and(|at| at > first && at <= last);
        rows + live.iter().filter(|r| during(r)).count()
    } else {
        rows
    };
    Ok((
        limit,
        Drain {
            rows,
            rate: (served - 1) as f64 / span.as_secs_f64().max(1e-3),
            drained: (last - started).to_std().unwrap_or_default(),
            passes,
            patch: (!patch_samples.is_empty()).then(|| Stats::of(patch_samples)),
            patch_failures,
            cpu_per_row: cpu / u32::try_from(rows.max(1)).unwrap_or(u32::MAX),
        },
    ))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cases = Vec::new();
    for backend in &args.backends {
        let postgres = match backend.as_str() {
            "sqlite" => false,
            "postgres" if args.database_url.is_some() => true,
            "postgres" => {
                eprintln!("postgres: skipped (no --database-url / MES_TEST_DATABASE_URL)");
                continue;
            }
            other => bail!("unknown backend {other:?}: expected sqlite or postgres"),
        };
        for mode in &args.modes {
            let mode = match mode.as_str() {
                "id" => CorrelationMode::Id,
                "legacy" => CorrelationMode::Legacy,
                other => bail!("unknown mode {other:?}: expected id or legacy"),
            };
            for &keys in &args.keys {
                cases.push(Case {
                    postgres,
                    mode,
                    keys,
                });
            }
        }
    }
    println!(
        "{} backlog rows per case; limits from {} sequential and {} ({} in flight) record \
         updates; {} PATCH/s while draining",
        args.rows, args.sequential, args.parallel, IN_FLIGHT, args.patch_rate
    );
    let mut missed = Vec::new();
    for case in &cases {
        let (limit, drain) = drain(&args, case).await?;
        let one_at_a_time = 1.0 / limit.rtt.mean.as_secs_f64();
        let (bound, share, of) = if case.mode == CorrelationMode::Legacy || case.keys == 1 {
            (one_at_a_time, 0.8, "1/RTT")
        } else if case.keys >= IN_FLIGHT {
            (limit.throughput, 0.7, "throughput")
        } else {
            // Fewer keys than requests in flight: at most `keys` at a time.
            (
                (one_at_a_time * case.keys as f64).min(limit.throughput),
                0.7,
                "keys/RTT",
            )
        };
        let ratio = drain.rate / bound;
        let patch = drain
            .patch
            .as_ref()
            .map_or("-".to_owned(), |s| format!("{}/{}", ms(s.p50), ms(s.p99)));
        println!(
            "{case}: {} rows  {:>6.1} rows/s  drained in {:>6.1} s  {:>4} passes  limit {:>6.1}/s \
             ({of}; RTT p50 {} ms, mean {} ms; {:.1}/s with {IN_FLIGHT} in flight)  \
             ratio {:.2} (target ≥ {share})  PATCH p50/p99 {patch} ms ({} failed)  \
             CPU {} ms/row",
            drain.rows,
            drain.rate,
            drain.drained.as_secs_f64(),
            drain.passes,
            bound,
            ms(limit.rtt.p50),
            ms(limit.rtt.mean),
            limit.throughput,
            ratio,
            drain.patch_failures,
            ms(drain.cpu_per_row),
        );
        if ratio < share {
            missed.push(format!("{case}: ratio {ratio:.2} < {share}"));
        }
    }
    if missed.is_empty() {
        println!("every case met its target");
    } else {
        println!("missed: {}", missed.join("; "));
    }
    Ok(())
}
