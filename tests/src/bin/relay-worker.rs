//! `relay-worker`: one outbox relay in a process of its own, for the tests that kill a
//! relay mid-batch (`tests/outbox_relay.rs`). It delivers the outbox of `--database-url`
//! to the chain's topics with `--topic-suffix` until its standard input closes (a clean
//! stop) or it is killed (a crash).

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kafka_bridge::bridge::{Bridge, BridgeConfig};
use kafka_bridge::kafka::{KafkaConfig, TopicNames};
use kafka_bridge::relay::{Relay, RelayConfig, TokenSource};
use tracing_subscriber::EnvFilter;

/// An outbox relay for the end-to-end tests.
#[derive(Debug, Parser)]
struct Cli {
    /// The database holding the outbox (PostgreSQL URL or SQLite path).
    #[arg(long)]
    database_url: String,
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: String,
    /// Suffix of every chain topic name (a test's simulator has its own).
    #[arg(long, default_value = "")]
    topic_suffix: String,
    /// Master token.
    #[arg(long)]
    token: String,
    /// Name in the logs.
    #[arg(long, default_value = "relay-worker")]
    name: String,
    /// Rows claimed at once.
    #[arg(long, default_value_t = 8)]
    batch_size: u32,
    /// Rows sent at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Lease of claimed rows, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    lease_ms: u64,
    /// Deadline of one send, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    send_timeout_ms: u64,
    /// Poll interval, in milliseconds.
    #[arg(long, default_value_t = 50)]
    poll_ms: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let pool = mes_core::db::pool(&cli.database_url, 4).context("opening the database")?;
    let mut bridge_config = BridgeConfig::new(KafkaConfig::new(&cli.brokers));
    bridge_config.topics = TopicNames::with_suffix(&cli.topic_suffix);
    let bridge = Bridge::connect(bridge_config)
        .await
        .context("connecting to Kafka")?;
    let config = RelayConfig {
        name: cli.name,
        batch_size: cli.batch_size,
        concurrency: cli.concurrency,
        lease: Duration::from_millis(cli.lease_ms),
        send_timeout: Duration::from_millis(cli.send_timeout_ms),
        poll_interval: Duration::from_millis(cli.poll_ms),
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(2),
        ..RelayConfig::default()
    };
    let relay = Relay::new(pool, bridge.clone(), TokenSource::fixed(cli.token), config)?;

    // Standard input closing is the stop signal: portable, and no signal handling.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = stop_tx.send(());
    });
    relay
        .run(async {
            let _ = stop_rx.await;
        })
        .await;
    bridge.shutdown().await;
    Ok(())
}
