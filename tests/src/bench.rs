//! Helpers of the benchmarks (`tests/benches/`): latency percentiles (hdrhistogram), and
//! the mes-api server in this process (Rocket on a free loopback port, on the caller's
//! tokio runtime), so one process holds server, simulator and load generator.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kafka_bridge::bridge::Bridge;
use mes_api::app::App;
use mes_api::config::Settings;
use mes_api::server;
use mes_core::db::{self, tokens};

use crate::db::{PgSchema, TempDir};

/// Latency figures of one run, from an HDR histogram (microsecond resolution, three
/// significant digits): the same percentiles in every benchmark.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Arithmetic mean.
    pub mean: Duration,
    /// Slowest sample.
    pub max: Duration,
}

impl Stats {
    /// The figures of `samples`; all zero for none.
    pub fn of(samples: impl IntoIterator<Item = Duration>) -> Stats {
        // Up to an hour at three significant digits; longer samples are clamped.
        let Ok(mut histogram) = hdrhistogram::Histogram::<u64>::new_with_max(3_600_000_000, 3)
        else {
            return Stats::default();
        };
        for sample in samples {
            let us = u64::try_from(sample.as_micros()).unwrap_or(u64::MAX);
            histogram.saturating_record(us.max(1));
        }
        let us = |v: u64| Duration::from_micros(v);
        Stats {
            p50: us(histogram.value_at_quantile(0.50)),
            p99: us(histogram.value_at_quantile(0.99)),
            mean: Duration::from_secs_f64(histogram.mean() / 1e6),
            max: us(histogram.max()),
        }
    }
}

/// Milliseconds with two decimals, for the tables.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// A mes-api server running in this process.
pub struct InProcessServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The server's own bridge (a clone: the same producer, consumer and matcher).
    pub bridge: Bridge,
    shutdown: rocket::Shutdown,
    served: tokio::task::JoinHandle<()>,
}

impl InProcessServer {
    /// Prepares the server from `settings` (migrations, bridge) and serves it on a free
    /// port; returns once `/health/live` answers (at most 30 s).
    pub async fn start(settings: Settings) -> anyhow::Result<InProcessServer> {
        let prepared = server::prepare(settings)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let port = crate::free_port()?;
        let figment = rocket::Config::figment()
            .merge(("address", "127.0.0.1"))
            .merge(("port", port))
            .merge(("log_level", rocket::config::LogLevel::Off))
            .merge(("cli_colors", false));
        let rocket = server::rocket(figment, prepared.app).ignite().await?;
        let shutdown = rocket.shutdown();
        let bridge = rocket
            .state::<App>()
            .context("no App in the Rocket instance")?
            .bridge
            .clone();
        let served = tokio::spawn(async move {
            if let Err(e) = rocket.launch().await {
                eprintln!("rocket: {e}");
            }
        });
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match client.get(format!("{base}/health/live")).send().await {
                Ok(r) if r.status().is_success() => break,
                _ if Instant::now() > deadline => bail!("the server did not start"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        Ok(InProcessServer {
            base,
            bridge,
            shutdown,
            served,
        })
    }

    /// Stops the server (its bridge with it), waiting at most 15 s.
    pub async fn stop(self) {
        self.shutdown.notify();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.served).await;
    }
}

/// The database of one benchmark stack: a PostgreSQL schema of its own when a URL is
/// given, else SQLite in a temporary directory; dropped with the value.
pub struct BenchDb {
    /// The URL the server uses.
    pub url: String,
    _pg: Option<PgSchema>,
    _dir: Option<TempDir>,
}

impl BenchDb {
    /// A fresh database in `postgres` (a server URL), or SQLite if `None`.
    pub fn create(postgres: Option<&str>) -> anyhow::Result<BenchDb> {
        Ok(match postgres {
            Some(url) => {
                let schema = PgSchema::create_in(url);
                BenchDb {
                    url: schema.url().to_owned(),
                    _pg: Some(schema),
                    _dir: None,
                }
            }
            None => {
                let dir = TempDir::create()?;
                BenchDb {
                    url: dir.path().join("mes.db").display().to_string(),
                    _pg: None,
                    _dir: Some(dir),
                }
            }
        })
    }

    /// Migrates the database, stores `token` as the Master token and adds the test
    /// operators; returns the operator's key.
    pub async fn seed(&self, token: &str) -> anyhow::Result<String> {
        let (url, master) = (self.url.clone(), token.to_owned());
        tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
            drop(db::pool(&url, 1)?);
            let mut conn = db::connect(&url)?;
            tokens::put(
                &mut conn,
                &tokens::NewKafkaToken {
                    instance_type: tokens::MASTER,
                    token: &master,
                    ..Default::default()
                },
            )?;
            let (operator, _viewer) = crate::db::add_operators(&mut conn)?;
            Ok(operator)
        })
        .await?
    }
}
