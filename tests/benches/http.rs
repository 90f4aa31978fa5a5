//! `GET /api/KafkaPartner/LIST` through the whole stack: HTTP (reqwest, keep-alive) →
//! Rocket → bridge → broker → `chain-sim` → back, beside the raw bridge round trip
//! (`Bridge::list_partners` on the server's own bridge) measured in the same run.
//!
//! Run it with `./scripts/bench --http` (starts tansu) or, against a broker of your own,
//! `cargo bench -p mes-e2e --bench http -- --brokers HOST:PORT`; `--help` lists the
//! knobs. Figures and their reading: docs/benchmarks.md ("HTTP, whole stack").
//!
//! Everything runs in this one process: chain-sim, the mes-api server (Rocket on a
//! free loopback port, on this process's tokio runtime) and the load generator. The
//! RSS printed is therefore this process's (`/proc/self/status`): server, simulator and
//! client together. Each setup gets a stack of its own (topics, simulator, server), as
//! in the round-trip bench; the raw bridge runs first and last. The database is
//! PostgreSQL (a schema of its own) when `MES_TEST_DATABASE_URL` is set, SQLite in a
//! temp dir otherwise.
//!
//! Requests ask for distinct pages (`start` = request number), so that calls in flight
//! together never share one chain request; the `same` setup sends identical requests
//! on purpose to show what single-flight coalescing does to the figures.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use chain_sim::{SimConfig, SimTopics, Simulator};
use clap::Parser;
use kafka_bridge::bridge::Bridge;
use mes_api::config::{ReplyTrust, Settings};
use mes_core::codec::Page;
use mes_e2e::bench::{BenchDb, InProcessServer, Stats, ms};

#[derive(Parser, Debug)]
#[command(
    about = "GET /api/KafkaPartner/LIST through HTTP + Rocket + broker + chain-sim, beside the raw bridge"
)]
struct Args {
    /// Bootstrap servers of the broker.
    #[arg(long, env = "MES_TEST_KAFKA_BROKERS")]
    brokers: String,
    /// PostgreSQL URL (a schema of its own is created); SQLite in a temp dir if unset.
    #[arg(long, env = "MES_TEST_DATABASE_URL")]
    database_url: Option<String>,
    /// Requests before the first measurement, not counted.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Sequential requests (one connection, one in flight) for p50/p99.
    #[arg(long, default_value_t = 2000)]
    sequential: usize,
    /// Requests of each loaded run.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrent connections (HTTP) or callers (raw bridge) of the loaded runs.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Setups, in this order: raw (bridge called directly), http (distinct pages),
    /// same (HTTP, identical requests: coalescing allowed). Repeats allowed.
    #[arg(long, value_delimiter = ',', default_value = "raw,http,same,raw")]
    only: Vec<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One row of the table.
struct Row {
    setup: &'static str,
    sequential: Stats,
    loaded: Stats,
    requests: usize,
    elapsed: Duration,
    coalesced: u64,
    rss_kib: u64,
}

impl Row {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`); 0 where unreadable.
fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_owned))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// What one request does: its own page (`start` = number) or always the same.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pages {
    Distinct,
    Same,
}

impl Pages {
    fn start(self, i: usize) -> u32 {
        match self {
            Pages::Distinct => u32::try_from(i % 100_000).unwrap_or(0),
            Pages::Same => 0,
        }
    }
}

/// Calls `one(i)` for `first..first + n` with `concurrency` callers, each starting its
/// next call as soon as its last one returned; the samples and the elapsed time.
async fn drive<F, Fut>(
    first: usize,
    n: usize,
    concurrency: usize,
    one: F,
) -> anyhow::Result<(Vec<Duration>, Duration)>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(first));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = Arc::clone(&next);
            let one = one.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= first + n {
                        break;
                    }
                    let t = Instant::now();
                    one(i).await?;
                    samples.push(t.elapsed());
                }
                anyhow::Ok(samples)
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(n);
    for worker in workers {
        samples.extend(worker.await??);
    }
    Ok((samples, started.elapsed()))
}

/// The setup every measurement shares.
struct Stack {
    client: reqwest::Client,
    /// The server's own bridge (a clone: the same producer, consumer and matcher).
    bridge: Bridge,
    url: String,
    key: String,
    token: String,
    server: InProcessServer,
    sim: chain_sim::SimHandle,
    _db: BenchDb,
}

async fn stack(args: &Args) -> anyhow::Result<Stack> {
    let suffix = format!("-bench-{}", uuid::Uuid::new_v4().simple());
    let token = format!("bench-token{suffix}");
    let topics = SimTopics::with_suffix(&suffix);
    let mut sim_config = SimConfig::new(&args.brokers);
    sim_config.topics = topics.clone();
    sim_config.group_id = format!("chain-sim{suffix}");
    sim_config.tokens = vec![token.clone()];
    let sim = Simulator::start(sim_config).await?;

    let database = BenchDb::create(args.database_url.as_deref())?;
    let mut settings = Settings {
        database_url: Some(database.url.clone()),
        kafka_brokers: args.brokers.clone(),
        database_pool_size: 4,
        // The simulator does not sign its replies.
        reply_trust: ReplyTrust::Unsigned,
        // One key drives the whole load: no per-key limit.
        rate_limit_per_sec: std::num::NonZeroU32::new(mes_api::config::MAX_RATE_LIMIT_PER_SEC)
            .unwrap_or(std::num::NonZeroU32::MAX),
        ..Settings::default()
    };
    settings.set_topics(&topics.chain);
    // The master token and an operator key, stored directly.
    let key = database.seed(&token).await?;

    let server = InProcessServer::start(settings).await?;
    let bridge = server.bridge.clone();
    let url = format!("{}/api/KafkaPartner/LIST", server.base);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    // Wait for the listener.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get(&url).bearer_auth(&key).send().await {
            Ok(r) if r.status().is_success() => break,
            Ok(r) => bail!("the server answered {}", r.status()),
            Err(e) if Instant::now() > deadline => bail!("the server did not start: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    Ok(Stack {
        client,
        bridge,
        url,
        key,
        token,
        server,
        sim,
        _db: database,
    })
}

impl Stack {
    /// Stops the server (its bridge with it) and the simulator.
    async fn stop(self) -> anyhow::Result<()> {
        self.server.stop().await;
        self.sim.shutdown().await?;
        Ok(())
    }
}

/// One HTTP list call; fails unless 200 with a JSON array.
async fn http_call(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    start: u32,
) -> anyhow::Result<()> {
    let response = client
        .get(url)
        .bearer_auth(key)
        .query(&[("start", start), ("limit", 10)])
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    ensure!(
        status.is_success() && body.first() == Some(&b'['),
        "HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

/// Warm-up, sequential and loaded runs of one setup.
async fn measure(args: &Args, stack: &Stack, setup: &str, first: usize) -> anyhow::Result<Row> {
    let (name, pages, http) = match setup {
        "raw" => ("raw bridge (Bridge::list_partners)", Pages::Distinct, false),
        "http" => ("HTTP, distinct pages", Pages::Distinct, true),
        "same" => ("HTTP, identical requests (coalescing)", Pages::Same, true),
        other => bail!("unknown setup {other:?} (raw, http, same)"),
    };
    let client = stack.client.clone();
    let url = Arc::new(stack.url.clone());
    let key = Arc::new(stack.key.clone());
    let token = Arc::new(stack.token.clone());
    let bridge = stack.bridge.clone();
    let one = move |i: usize| {
        let (client, url, key, token, bridge) = (
            client.clone(),
            Arc::clone(&url),
            Arc::clone(&key),
            Arc::clone(&token),
            bridge.clone(),
        );
        async move {
            let start = pages.start(i);
            if http {
                http_call(&client, &url, &key, start).await
            } else {
                bridge
                    .list_partners(&token, Page { start, limit: 10 })
                    .await
                    .map(drop)
                    .with_context(|| format!("request {i}"))
            }
        }
    };
    let before = stack.bridge.metrics();
    drive(first, args.warmup, 1, one.clone()).await?;
    let mut i = first + args.warmup;
    let (sequential, _) = drive(i, args.sequential, 1, one.clone()).await?;
    i += args.sequential;
    let (loaded, elapsed) = drive(i, args.requests, args.connections, one).await?;
    let after = stack.bridge.metrics();
    ensure!(
        after.timeouts == before.timeouts
            && after.broker_errors == before.broker_errors
            && after.overloaded == before.overloaded,
        "{name}: a call timed out, failed or was refused: {after:?}"
    );
    let coalesced = after.coalesced - before.coalesced;
    ensure!(
        pages == Pages::Same || coalesced == 0,
        "{name}: {coalesced} calls shared a chain request"
    );
    Ok(Row {
        setup: name,
        sequential: Stats::of(sequential),
        loaded: Stats::of(loaded),
        requests: args.requests,
        elapsed,
        coalesced,
        rss_kib: proc_status_kib("VmRSS"),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.sequential > 0 && args.connections > 0 && args.requests > 0,
        "nothing to measure"
    );
    println!(
        "broker {}; database {}; {} cores; warm-up {}, sequential {} (1 connection), loaded {} with {} connections/callers",
        args.brokers,
        if args.database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        std::thread::available_parallelism().map_or(0, usize::from),
        args.warmup,
        args.sequential,
        args.requests,
        args.connections,
    );
    let mut rows = Vec::new();
    for setup in &args.only {
        // A stack of its own per setup (topics, chain-sim, server): tansu's memory
        // storage slows down as a topic fills, which would favour the first setup.
        let stack = stack(&args).await?;
        let row = measure(&args, &stack, setup, 0).await?;
        eprintln!(
            "{}: sequential p50 {} ms, {:.0} req/s with {}",
            row.setup,
            ms(row.sequential.p50),
            row.rate(),
            args.connections
        );
        rows.push(row);
        stack.stop().await?;
    }
    print_table(&rows, args.connections);

    Ok(())
}

fn print_table(rows: &[Row], connections: usize) {
    let raw: Vec<&Row> = rows.iter().filter(|r| r.setup.starts_with("raw")).collect();
    let mean = |f: &dyn Fn(&Row) -> f64| -> Option<f64> {
        (!raw.is_empty()).then(|| raw.iter().map(|r| f(r)).sum::<f64>() / raw.len() as f64)
    };
    let raw_p50 = mean(&|r| r.sequential.p50.as_secs_f64());
    let raw_rate = mean(&|r| r.rate());
    println!();
    if let (Some(p50), Some(rate)) = (raw_p50, raw_rate) {
        println!(
            "raw bridge, mean of {} run(s): sequential p50 {:.2} ms, {rate:.0} req/s with {connections} in flight",
            raw.len(),
            p50 * 1e3
        );
    }
    println!(
        "| setup | seq p50 ms | seq p99 ms | seq max ms | p50 / raw p50 | {connections} conn: req/s | req/s / raw | p50 ms | p99 ms | p99 / p50 | coalesced | RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let ratio = |x: f64, base: Option<f64>| {
            base.map_or_else(|| "–".to_owned(), |b| format!("{:.2}×", x / b))
        };
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {:.2} | {} | {:.0} |",
            row.setup,
            ms(row.sequential.p50),
            ms(row.sequential.p99),
            ms(row.sequential.max),
            ratio(row.sequential.p50.as_secs_f64(), raw_p50),
            row.rate(),
            ratio(row.rate(), raw_rate),
            ms(row.loaded.p50),
            ms(row.loaded.p99),
            row.loaded.p99.as_secs_f64() / row.loaded.p50.as_secs_f64(),
            row.coalesced,
            row.rss_kib as f64 / 1024.0,
        );
    }
    println!(
        "peak RSS of this process (VmHWM): {:.0} MiB",
        proc_status_kib("VmHWM") as f64 / 1024.0
    );
}
