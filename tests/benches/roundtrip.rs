//! Request → reply round trip through a real broker: the [`Bridge`] against `chain-sim`
//! in each correlation mode, next to a bare rdkafka echo with the same client settings,
//! so the difference is what the bridge and the simulator add on top of Kafka.
//!
//! Run it with `./scripts/bench` (starts tansu) or, against a broker of your own,
//! `cargo bench -p mes-e2e --bench roundtrip -- --brokers HOST:PORT`;
//! `--help` lists the knobs. Figures and their reading: docs/benchmarks.md.
//!
//! Every setup gets its own topics (random suffix), is warmed up, measured and shut down
//! before the next starts, so idle consumers of one setup do not load the broker while
//! another is measured. The broker still keeps every earlier setup's topics and records,
//! and later setups were measured slower in either order; so the bare echo runs first
//! and last, and the ratio compares with the mean of its runs.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use chain_sim::{DEFAULT_TOKEN, SimConfig, SimTopics, Simulator};
use clap::Parser;
use kafka_bridge::bridge::{Bridge, BridgeConfig, CorrelationMode};
use kafka_bridge::kafka::{KafkaConfig, correlation_headers, ensure_topics, header_corr};
use mes_core::codec::{Page, Request};
use mes_e2e::bench::{Stats, ms};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// `fetch.wait.max.ms` of chain-sim's request consumer (`chain-sim/src/server.rs`); the
/// bare echo uses the same, and the bare reply consumer uses the bridge's
/// (`reply_fetch_wait`).
const SIM_FETCH_WAIT_MS: u64 = 5;

#[derive(Parser, Debug)]
#[command(about = "Round trip through the broker: bridge + chain-sim vs. a bare rdkafka echo")]
struct Args {
    /// Bootstrap servers of the broker.
    #[arg(long, env = "MES_TEST_KAFKA_BROKERS")]
    brokers: String,
    /// Requests before each measurement, not counted.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Sequential requests (one in flight) for p50/p99.
    #[arg(long, default_value_t = 2000)]
    sequential: usize,
    /// Requests of the throughput run, modes `id`, `auto` and the bare echo.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Requests of the throughput run in `legacy` mode (one in flight whatever the callers).
    #[arg(long, default_value_t = 2000)]
    legacy_requests: usize,
    /// Callers (requests in flight) of the throughput runs.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Setups to run, in this order, any of bare, id, auto, legacy (repeats allowed).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "bare,id,auto,legacy,bare"
    )]
    only: Vec<String>,
    /// `fetch.wait.max.ms` of every consumer (bridge, chain-sim, both of the bare echo)
    /// instead of each component's default, to see how much of the round trip it is.
    #[arg(long, value_name = "MS")]
    fetch_wait_ms: Option<u64>,
    /// Pause a random 0..MS before each sequential request. Back-to-back requests fall
    /// into step with the consumers' fetch cycles; a pause spreads them over it, as
    /// requests from operators would be.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pause_ms: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// `fetch.wait.max.ms` of the two consumers on a round trip's path.
#[derive(Debug, Clone, Copy)]
struct FetchWaits {
    /// The bridge's reply consumer (and the bare requester's).
    reply: Duration,
    /// chain-sim's request consumer (and the bare echo's).
    request: Duration,
}

/// The name of the baseline's rows.
const BARE: &str = "bare rdkafka echo";

/// One row of the table.
struct Row {
    setup: String,
    sequential: Stats,
    loaded: Stats,
    requests: usize,
    elapsed: Duration,
}

/// Sleeps a random time below `max_ms` (nothing when it is 0).
async fn pause(max_ms: u64) {
    if max_ms > 0 {
        let micros = uuid::Uuid::new_v4().as_u128() % (u128::from(max_ms) * 1000);
        tokio::time::sleep(Duration::from_micros(u64::try_from(micros).unwrap_or(0))).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.sequential > 0 && args.in_flight > 0 && args.requests > 0 && args.legacy_requests > 0,
        "nothing to measure"
    );
    let waits = match args.fetch_wait_ms {
        Some(ms) => FetchWaits {
            reply: Duration::from_millis(ms),
            request: Duration::from_millis(ms),
        },
        None => FetchWaits {
            reply: BridgeConfig::new(KafkaConfig::new("")).reply_fetch_wait,
            request: Duration::from_millis(SIM_FETCH_WAIT_MS),
        },
    };
    println!(
        "broker {}; fetch.wait.max.ms: bridge reply consumer {} ms, chain-sim request consumer {} ms (bare echo: the same){}",
        args.brokers,
        waits.reply.as_millis(),
        waits.request.as_millis(),
        if args.fetch_wait_ms.is_some() {
            " (--fetch-wait-ms)"
        } else {
            ""
        },
    );
    println!(
        "warm-up {}, sequential {} (random pause before each: 0..{} ms), throughput {} ({} legacy) with {} in flight",
        args.warmup,
        args.sequential,
        args.pause_ms,
        args.requests,
        args.legacy_requests,
        args.in_flight
    );

    let mut rows = Vec::new();
    for setup in &args.only {
        let row = match setup.as_str() {
            "bare" => bare(&args, waits).await?,
            "id" => bridge(&args, waits, CorrelationMode::Id).await?,
            "auto" => bridge(&args, waits, CorrelationMode::Auto).await?,
            "legacy" => bridge(&args, waits, CorrelationMode::Legacy).await?,
            other => bail!("unknown setup {other:?} (bare, id, auto, legacy)"),
        };
        eprintln!(
            "{}: sequential p50 {} ms, throughput {:.0}/s",
            row.setup,
            ms(row.sequential.p50),
            row.requests as f64 / row.elapsed.as_secs_f64()
        );
        rows.push(row);
    }
    print_table(&rows, args.in_flight);
    Ok(())
}

fn print_table(rows: &[Row], in_flight: usize) {
    let bare: Vec<Duration> = rows
        .iter()
        .filter(|r| r.setup == BARE)
        .map(|r| r.sequential.p50)
        .collect();
    let bare_p50 = u32::try_from(bare.len())
        .ok()
        .filter(|n| *n > 0)
        .map(|n| bare.iter().sum::<Duration>() / n);
    println!();
    if let Some(bare_p50) = bare_p50 {
        println!(
            "bare echo p50, mean of {} run(s): {} ms",
            bare.len(),
            ms(bare_p50)
        );
    }
    println!(
        "| setup | seq p50 ms | seq p99 ms | seq mean ms | seq max ms | p50 / bare p50 | {in_flight} in flight: req/s | p50 ms | p99 ms | requests |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let ratio = bare_p50.map_or_else(
            || "–".to_owned(),
            |bare| {
                format!(
                    "{:.2}×",
                    row.sequential.p50.as_secs_f64() / bare.as_secs_f64()
                )
            },
        );
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} |",
            row.setup,
            ms(row.sequential.p50),
            ms(row.sequential.p99),
            ms(row.sequential.mean),
            ms(row.sequential.max),
            ratio,
            row.requests as f64 / row.elapsed.as_secs_f64(),
            ms(row.loaded.p50),
            ms(row.loaded.p99),
            row.requests,
        );
    }
}

fn suffix() -> String {
    format!("-bench-{}", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------------------------
// The bridge against chain-sim.

/// One list call, timed. Distinct pages, so that calls in flight together never share
/// a chain request.
async fn call(bridge: &Bridge, i: usize) -> anyhow::Result<Duration> {
    let start = u32::try_from(i % 100_000).unwrap_or(0);
    let started = Instant::now();
    bridge
        .list_partners(DEFAULT_TOKEN, Page { start, limit: 10 })
        .await
        .with_context(|| format!("request {i}"))?;
    Ok(started.elapsed())
}

async fn bridge(args: &Args, waits: FetchWaits, mode: CorrelationMode) -> anyhow::Result<Row> {
    let suffix = suffix();
    let mut sim_config = SimConfig::new(&args.brokers);
    sim_config.topics = SimTopics::with_suffix(&suffix);
    sim_config.group_id = format!("chain-sim{suffix}");
    // A legacy gateway echoes nothing; `id` and `auto` need the echo.
    sim_config.gateway.no_echo = mode == CorrelationMode::Legacy;
    if args.fetch_wait_ms.is_some() {
        // Pass-through settings override chain-sim's own (its -X flag does the same).
        sim_config.kafka.settings.insert(
            "fetch.wait.max.ms".into(),
            waits.request.as_millis().to_string(),
        );
    }
    let sim = Simulator::start(sim_config).await?;
    let mut config = BridgeConfig::new(KafkaConfig::new(&args.brokers));
    config.topics = sim.topics().chain.clone();
    config.correlation = mode;
    config.reply_fetch_wait = waits.reply;
    let bridge = Bridge::connect(config).await?;

    for i in 0..args.warmup {
        call(&bridge, i).await?;
    }
    let mut samples = Vec::with_capacity(args.sequential);
    for i in 0..args.sequential {
        pause(args.pause_ms).await;
        samples.push(call(&bridge, i).await?);
    }
    let sequential = Stats::of(samples);

    let requests = if mode == CorrelationMode::Legacy {
        args.legacy_requests
    } else {
        args.requests
    };
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.in_flight)
        .map(|_| {
            let bridge = bridge.clone();
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut samples = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        break;
                    }
                    samples.push(call(&bridge, i).await?);
                }
                anyhow::Ok(samples)
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(requests);
    for worker in workers {
        samples.extend(worker.await??);
    }
    let elapsed = started.elapsed();

    let metrics = bridge.metrics();
    ensure!(
        metrics.timeouts == 0 && metrics.coalesced == 0 && metrics.broker_errors == 0,
        "{mode}: a measured call timed out, failed or shared a request: {metrics:?}"
    );
    bridge.shutdown().await;
    sim.shutdown().await?;
    Ok(Row {
        setup: match mode {
            CorrelationMode::Id => "bridge + chain-sim, id".to_owned(),
            CorrelationMode::Auto => "bridge + chain-sim, auto".to_owned(),
            CorrelationMode::Legacy => "bridge + chain-sim (no echo), legacy".to_owned(),
        },
        sequential,
        loaded: Stats::of(samples),
        requests,
        elapsed,
    })
}

// ---------------------------------------------------------------------------------
// The baseline: produce to A → echo task → produce to B → consume, with raw rdkafka.

/// Each client configured as its counterpart: the requester's producer and reply
/// consumer as the bridge's, the echo's consumer and producer as chain-sim's.
async fn bare(args: &Args, waits: FetchWaits) -> anyhow::Result<Row> {
    let suffix = suffix();
    let (requests_topic, replies_topic) = (format!("bare-a{suffix}"), format!("bare-b{suffix}"));
    let kafka = KafkaConfig::new(&args.brokers);
    ensure_topics(
        &kafka,
        &[&requests_topic, &replies_topic],
        1,
        1,
        Duration::from_secs(30),
    )
    .await?;

    // The echo, configured as chain-sim's server.
    let echo_consumer: StreamConsumer = kafka
        .client_config(&[
            ("group.id", &format!("bare-echo{suffix}")),
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", &waits.request.as_millis().to_string()),
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "1000"),
        ])
        .create()?;
    assign_from_start(&echo_consumer, &requests_topic)?;
    let echo_producer: FutureProducer = kafka
        .client_config(&[("linger.ms", "0"), ("message.timeout.ms", "30000")])
        .create()?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let echo_replies = replies_topic.clone();
    // When the echo read each request, to split the round trip into its two hops.
    let echoed_at: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let echoed = Arc::clone(&echoed_at);
    let echo = tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                _ = stopped.changed() => break,
                message = echo_consumer.recv() => message,
            };
            let Ok(message) = message else { continue };
            if let Some(seq) = sequence_of(&message) {
                lock(&echoed).insert(seq, Instant::now());
            }
            let mut record: FutureRecord<'_, (), [u8]> =
                FutureRecord::to(&echo_replies).payload(message.payload().unwrap_or_default());
            if let Some(headers) = message.headers() {
                record = record.headers(headers.detach());
            }
            // Not awaited, as chain-sim enqueues and moves on.
            let _ = echo_producer.send_result(record);
        }
    });

    // The requester, configured as the bridge.
    let producer: FutureProducer = kafka
        .client_config(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "0"),
            ("message.timeout.ms", "5000"),
            ("socket.nagle.disable", "true"),
        ])
        .create()?;
    let consumer: StreamConsumer = kafka
        .client_config(&[
            ("group.id", &format!("bare-requester{suffix}")),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            (
                "fetch.wait.max.ms",
                &waits.reply.as_millis().max(1).to_string(),
            ),
            ("fetch.error.backoff.ms", "50"),
            ("socket.nagle.disable", "true"),
        ])
        .create()?;
    assign_from_start(&consumer, &replies_topic)?;

    // The same bytes as the bridge's list request, with its own sequence number as corr.
    let payload = |seq: usize| {
        Request::ListPartners(Page::default())
            .envelope(DEFAULT_TOKEN, Some(&format!("{seq:036}")))
            .to_bytes()
    };
    let send = |seq: usize| -> anyhow::Result<()> {
        let corr = seq.to_string();
        let bytes = payload(seq);
        let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(&requests_topic)
            .payload(bytes.as_slice())
            .headers(correlation_headers(&corr));
        producer
            .send_result(record)
            .map(drop)
            .map_err(|(e, _)| anyhow::anyhow!("sending {seq}: {e}"))
    };
    let receive = || async {
        let message = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .context("no reply within 10 s")??;
        sequence_of(&message).context("a reply without its sequence number")
    };

    let mut seq = 0;
    let mut samples = Vec::with_capacity(args.sequential);
    let (mut there, mut back) = (Vec::new(), Vec::new());
    for i in 0..args.warmup + args.sequential {
        if i >= args.warmup {
            pause(args.pause_ms).await;
        }
        let started = Instant::now();
        send(seq)?;
        let got = receive().await?;
        let received = Instant::now();
        ensure!(got == seq, "bare echo: expected reply {seq}, got {got}");
        let echoed = lock(&echoed_at)
            .remove(&seq)
            .context("the echo did not note the request")?;
        seq += 1;
        if i >= args.warmup {
            samples.push(received - started);
            there.push(echoed - started);
            back.push(received - echoed);
        }
    }
    let sequential = Stats::of(samples);
    let (there, back) = (Stats::of(there), Stats::of(back));
    println!(
        "bare echo, sequential, by hop: produce → echo reads it p50 {} ms (p99 {}), echo → reply read p50 {} ms (p99 {})",
        ms(there.p50),
        ms(there.p99),
        ms(back.p50),
        ms(back.p99)
    );

    // Keep `in_flight` requests outstanding: one new request per reply.
    let requests = args.requests;
    let mut sent_at = HashMap::with_capacity(args.in_flight);
    let mut samples = Vec::with_capacity(requests);
    let started = Instant::now();
    let first = seq;
    while seq < first + args.in_flight.min(requests) {
        sent_at.insert(seq, Instant::now());
        send(seq)?;
        seq += 1;
    }
    while samples.len() < requests {
        let got = receive().await?;
        let at = sent_at
            .remove(&got)
            .with_context(|| format!("bare echo: unexpected reply {got}"))?;
        samples.push(at.elapsed());
        if seq < first + requests {
            sent_at.insert(seq, Instant::now());
            send(seq)?;
            seq += 1;
        }
    }
    let elapsed = started.elapsed();

    let _ = stop.send(true);
    echo.await?;
    Ok(Row {
        setup: BARE.to_owned(),
        sequential,
        loaded: Stats::of(samples),
        requests,
        elapsed,
    })
}

/// The sequence number the bare requester put in the correlation header.
fn sequence_of(message: &impl Message) -> Option<usize> {
    header_corr(message)?.parse().ok()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Assigns partition 0 of a topic created for this run, from offset 0: nothing
/// produced after this returns can be missed (no offset lookup to race with).
fn assign_from_start(consumer: &StreamConsumer, topic: &str) -> anyhow::Result<()> {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Offset(0))?;
    consumer.assign(&list)?;
    Ok(())
}
