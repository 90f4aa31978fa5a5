//! What the reply-shape fence (docs/protocol.md §9) costs operators behind a slow
//! legacy gateway: `chain-sim` replying like the original (Python literals, no `corr`
//! echo), every answer's reply `--delay-ms` after its request, and one answer in
//! `--late-every` replying `--late-ms` later still (past the timeout, after others).
//! Operators answer unknown requests for `--seconds` (the chain answers each with an
//! error naming it) while one lists; the run prints the share of calls refused at once
//! (`chain_behind`), of timeouts, of calls that got a reply that is not theirs (must be
//! 0), and p50/p99 of the answered calls.
//!
//! Run it with `./scripts/bench --fence` (starts tansu) or, against a broker of your
//! own, `cargo bench -p mes-e2e --bench fence -- --brokers HOST:PORT`. Figures:
//! docs/benchmarks.md.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chain_sim::{DEFAULT_TOKEN, SimConfig, SimTopics, Simulator};
use clap::Parser;
use kafka_bridge::Error;
use kafka_bridge::bridge::{Bridge, BridgeConfig, CallOptions, Listing};
use kafka_bridge::kafka::KafkaConfig;
use mes_core::codec::Page;
use mes_core::domain::{Answer, RequestId};
use mes_e2e::bench::Stats;

#[derive(Parser, Debug)]
#[command(about = "The fence's cost to operators behind a slow legacy gateway")]
struct Args {
    /// Bootstrap servers of the broker.
    #[arg(long, env = "MES_TEST_KAFKA_BROKERS")]
    brokers: String,
    /// Length of the run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Operators answering at the same time.
    #[arg(long, default_value_t = 4)]
    callers: usize,
    /// The request timeout of the bridge, ms.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    /// Every reply's delay after its request (the chain's commit), ms.
    #[arg(long, default_value_t = 50)]
    delay_ms: u64,
    /// One answer in this many has a late reply.
    #[arg(long, default_value_t = 50)]
    late_every: usize,
    /// How much later than the others a late reply comes, ms.
    #[arg(long, default_value_t = 5000)]
    late_ms: u64,
    /// `legacy` or `auto` (the gateway never echoes, so both match by token).
    #[arg(long, default_value = "legacy")]
    mode: String,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Default)]
struct Outcomes {
    answered: Vec<Duration>,
    behind: usize,
    timeouts: usize,
    wrong: usize,
    lists: usize,
    lists_failed: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let suffix = format!("-{}", uuid::Uuid::new_v4().simple());
    let topics = SimTopics::with_suffix(&suffix);
    // The ids the operators will answer, every `late_every`-th with a late reply.
    let ids: Vec<RequestId> = (0..200_000)
        .map(|_| uuid::Uuid::new_v4().simple().to_string().parse().unwrap())
        .collect();
    let late: BTreeMap<RequestId, Duration> = ids
        .iter()
        .step_by(args.late_every.max(1))
        .map(|id| (id.clone(), Duration::from_millis(args.late_ms)))
        .collect();
    let mut sim_config = SimConfig::new(args.brokers.clone());
    sim_config.topics = topics.clone();
    sim_config.group_id = format!("chain-sim{suffix}");
    sim_config.demo = 20;
    sim_config.delay = Duration::from_millis(args.delay_ms);
    sim_config.gateway.python_literal = true;
    sim_config.gateway.no_echo = true;
    sim_config.gateway.late_replies = late;
    let sim = Simulator::start(sim_config).await?;
    let mut config = BridgeConfig::new(KafkaConfig::new(args.brokers.clone()));
    config.topics = topics.chain.clone();
    config.correlation = args.mode.parse()?;
    config.request_timeout = Duration::from_millis(args.timeout_ms);
    let bridge = Bridge::connect(config).await?;

    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let ids = Arc::new(ids);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.callers {
        let (bridge, outcomes, ids, next) = (
            bridge.clone(),
            Arc::clone(&outcomes),
            Arc::clone(&ids),
            Arc::clone(&next),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % ids.len();
                let id = ids[n].clone();
                let started = Instant::now();
                let result = bridge
                    .answer(
                        DEFAULT_TOKEN,
                        Listing::Partners,
                        id.clone(),
                        Answer::Reject,
                        CallOptions::default(),
                    )
                    .await;
                let elapsed = started.elapsed();
                let was_behind = matches!(result, Err(Error::ChainBehind { .. }));
                {
                    let mut o = outcomes.lock().unwrap();
                    match result {
                        Err(Error::Chain { message, .. }) if message.contains(id.as_str()) => {
                            o.answered.push(elapsed);
                        }
                        Ok(_) | Err(Error::Chain { .. }) => o.wrong += 1,
                        Err(Error::ChainBehind { .. }) => o.behind += 1,
                        Err(Error::Timeout(_)) => o.timeouts += 1,
                        Err(e) => anyhow::bail!("{id}: {e}"),
                    }
                }
                if was_behind {
                    // An operator told to try again shortly does not hammer.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Ok(())
        }));
    }
    let lister = {
        let (bridge, outcomes) = (bridge.clone(), Arc::clone(&outcomes));
        tokio::spawn(async move {
            while Instant::now() < until {
                let listed = bridge.list_partners(DEFAULT_TOKEN, Page::default()).await;
                {
                    let mut o = outcomes.lock().unwrap();
                    o.lists += 1;
                    o.lists_failed += usize::from(listed.is_err());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    for task in tasks {
        task.await??;
    }
    lister.await?;
    let counts = bridge.fence_counts();
    bridge.shutdown().await;
    sim.shutdown().await?;

    let o = outcomes.lock().unwrap();
    let answered = o.answered.clone();
    let stats = Stats::of(answered.iter().copied());
    let calls = answered.len() + o.behind + o.timeouts + o.wrong;
    let share = |n: usize| 100.0 * n as f64 / calls.max(1) as f64;
    println!(
        "fence bench: mode {}, {} s, {} callers, timeout {} ms, delay {} ms, 1 in {} late by {} ms",
        args.mode,
        args.seconds,
        args.callers,
        args.timeout_ms,
        args.delay_ms,
        args.late_every,
        args.late_ms
    );
    println!(
        "  calls {calls}: answered {} ({:.1} %), chain_behind {} ({:.1} %), timeout {} ({:.1} %), wrong reply {}",
        answered.len(),
        share(answered.len()),
        o.behind,
        share(o.behind),
        o.timeouts,
        share(o.timeouts),
        o.wrong
    );
    println!(
        "  answered: p50 {:.1} ms, p99 {:.1} ms, {:.1} answers/s",
        stats.p50.as_secs_f64() * 1000.0,
        stats.p99.as_secs_f64() * 1000.0,
        answered.len() as f64 / args.seconds as f64
    );
    println!(
        "  lists: {} ({} failed); fences raised {}, lifted by their reply {}, expired {}",
        o.lists, o.lists_failed, counts.raised, counts.lifted_by_reply, counts.expired
    );
    anyhow::ensure!(
        o.wrong == 0,
        "{} calls got a reply that is not theirs",
        o.wrong
    );
    Ok(())
}
